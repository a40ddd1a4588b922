"""`omnivis <command>`: parse arguments, call one library function, report errors in one line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from omnivis.errors import OmnivisError


def _region(value: str) -> tuple[float, float, float, float]:
    parts = value.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"a region is x0,y0,x1,y1 in pixels, got {value!r}")
    try:
        x0, y0, x1, y1 = (float(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a region is four numbers, got {value!r}") from None
    return x0, y0, x1, y1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omnivis", description="Unified, prompt-driven vision.")
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", help="answer one task on images")
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument("--model", required=True, help="checkpoint directory or preset name")
    predict.add_argument("--task", default="<CAPTION>", help='task prompt, e.g. "<OD>" (see `omnivis tasks`)')
    inputs = predict.add_mutually_exclusive_group()
    inputs.add_argument("--text", help="the task's text input (phrase, expression, question, or <loc_..> region)")
    inputs.add_argument("--region", type=_region, help="a region input in pixels: x0,y0,x1,y1")
    predict.add_argument("--num-beams", type=int)
    predict.add_argument("--max-new-tokens", type=int)
    predict.add_argument("--scores", action="store_true", help="add per-box scores")
    predict.add_argument("--device", default="cpu")
    predict.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])
    predict.add_argument("--json", type=Path, help="write the answers to this JSON file")
    predict.add_argument("--draw", type=Path, help="draw the answer on the image into this PNG (one image)")

    tasks = commands.add_parser("tasks", help="list the task prompts")
    tasks.add_argument("--model", default="tiny")

    demo = commands.add_parser("demo", help="run every task on a bundled image and draw the answers")
    demo.add_argument("--model", default="tiny")
    demo.add_argument("--image", type=Path)
    demo.add_argument("--out", type=Path, default=Path("demo"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "predict":
            from omnivis.loading import predict_files

            answers = predict_files(
                args.images, args.model, args.task, args.region or args.text, num_beams=args.num_beams,
                max_new_tokens=args.max_new_tokens, return_scores=args.scores, device=args.device,
                dtype=args.dtype, json_path=args.json, draw_path=args.draw,
            )  # fmt: skip
            print(json.dumps(answers, indent=2))
        elif args.command == "tasks":
            from omnivis.tasks import TASKS

            for task in TASKS.values():
                print(f"{task.token:<36} input: {task.input:<7} {task.description}")
        elif args.command == "demo":
            from omnivis.demo import run_demo

            run_demo(args.out, model=args.model, image=args.image)
    except OmnivisError as error:
        print(f"omnivis: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
