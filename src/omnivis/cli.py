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
    inputs.add_argument(
        "--text", help="the task's text input (phrase, expression, question, or <loc_..> region)"
    )
    inputs.add_argument("--region", type=_region, help="a region input in pixels: x0,y0,x1,y1")
    predict.add_argument("--num-beams", type=int)
    predict.add_argument("--max-new-tokens", type=int)
    predict.add_argument("--scores", action="store_true", help="add per-box scores")
    predict.add_argument("--device", default="cpu")
    predict.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])
    predict.add_argument("--json", type=Path, help="write the answers to this JSON file")
    predict.add_argument("--draw", type=Path, help="draw the answer on the image into this PNG (one image)")

    _add_serve_command(commands.add_parser("serve", help="serve a model over HTTP, with a web page"))
    _add_pretrain_command(commands.add_parser("pretrain", help="pre-train the vision tower (tagging)"))

    tasks = commands.add_parser("tasks", help="list the task prompts")
    tasks.add_argument("--model", default="tiny")

    demo = commands.add_parser(
        "demo", help="a model against the trivial baseline on a fresh world split, every task on photographs"
    )
    demo_model = demo.add_mutually_exclusive_group()
    demo_model.add_argument(
        "--model", help="checkpoint directory or preset (default: the committed models/omnivis-tiny-world)"
    )
    demo_model.add_argument(
        "--train",
        action="store_true",
        help="train a tiny model on the CPU first: a new decoder on the committed encoder (~12 min on 2 cores, "
        "15 at most)",
    )
    demo.add_argument(
        "--train-minutes", type=float, help="training time limit (default: what the 15-minute budget leaves)"
    )
    demo.add_argument(
        "--scenes", type=int, help="scenes of the held-out world split (default: 16, or 48 with --train)"
    )
    demo.add_argument("--out", type=Path, default=Path("demo"), help="where the report and data go")

    _add_data_commands(commands.add_parser("data", help="make, import, export and inspect datasets"))
    _add_eval_command(
        commands.add_parser("eval", help="score a model or a predictions file against a dataset")
    )
    _add_train_command(
        commands.add_parser("train", help="train or fine-tune a model (torchrun for many GPUs)")
    )
    return parser


def _add_train_command(train: argparse.ArgumentParser) -> None:
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="a named recipe: tiny-world-cpu, tiny-world-gpu, base-finetune")
    source.add_argument("--config", type=Path, help="a config JSON file (e.g. a run's config.json)")
    train.add_argument("--init", help="start from this checkpoint directory (omnivis or official Florence-2)")
    train.add_argument("--data", help="the training dataset directory (data.train)")
    train.add_argument("--out", help="the run directory")
    resume = train.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    resume.add_argument("--resume-from", help="continue from this checkpoint directory")
    train.add_argument(
        "--no-progress", action="store_true", help="no progress bar (logs still go to metrics.jsonl)"
    )
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides anywhere on the line, e.g. steps=500 optim.learning_rate=3e-4")  # fmt: skip


def _add_eval_command(evaluation: argparse.ArgumentParser) -> None:
    source = evaluation.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint directory or preset name to run")
    source.add_argument("--predictions", type=Path, help="a predictions JSON Lines file to score instead")
    evaluation.add_argument(
        "--data", type=Path, required=True, help="the dataset directory holding the truth"
    )
    evaluation.add_argument(
        "--tasks", nargs="+", help='task tokens, e.g. "<OD>" "<CAPTION>" (default: all it can)'
    )
    evaluation.add_argument("--limit", type=int, help="evaluate only the first N records")
    evaluation.add_argument(
        "--out", type=Path, required=True, help="where to write metrics, predictions and report"
    )
    evaluation.add_argument("--batch-size", type=int, default=16)
    evaluation.add_argument("--num-beams", type=int, default=3)
    evaluation.add_argument("--max-new-tokens", type=int, default=1024)
    evaluation.add_argument("--device", default="cpu")


def _run_eval_command(args: argparse.Namespace) -> None:
    import omnivis.eval as evaluation

    if args.predictions is not None:
        metrics = evaluation.score(
            args.predictions, args.data, args.tasks, limit=args.limit, out_dir=args.out
        )
    else:
        settings = evaluation.DecodingSettings(args.batch_size, args.num_beams, args.max_new_tokens)
        metrics = evaluation.evaluate(
            args.model, args.data, args.tasks, limit=args.limit, settings=settings, out_dir=args.out,
            progress=True, device=args.device,
        )  # fmt: skip
    print(evaluation.format_table(metrics))
    print(f"metrics.json, details.json, predictions.jsonl and report.html written to {args.out}/")


def _add_data_commands(data: argparse.ArgumentParser) -> None:
    commands = data.add_subparsers(dest="data_command", required=True)
    world = commands.add_parser("make-world", help="write scenes of the procedural world as a dataset")
    world.add_argument("out", type=Path)
    world.add_argument("--n", type=int, required=True, help="number of scenes")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument(
        "--variant",
        default="default",
        help="world variant: default, easy (a curriculum's first lesson) or hard",
    )
    world.add_argument("--shard-size", type=int, default=1000, help="records per Parquet shard")
    world.add_argument("--workers", type=int, help="generating processes (default: every core)")
    world.add_argument("--overwrite", action="store_true")

    coco_in = commands.add_parser(
        "import-coco", help="import COCO instances (and captions, refs) as a dataset"
    )
    coco_in.add_argument("annotations", type=Path, help="COCO instances JSON")
    coco_in.add_argument("--images", type=Path, required=True, help="directory of the image files")
    coco_in.add_argument("--out", type=Path, required=True)
    coco_in.add_argument("--captions", type=Path, help="COCO captions JSON")
    coco_in.add_argument("--refs", type=Path, help="RefCOCO-style referring expressions JSON")
    coco_in.add_argument("--skip-bad", action="store_true", help="skip bad images/annotations and list them")
    coco_in.add_argument("--overwrite", action="store_true")

    coco_out = commands.add_parser("export-coco", help="export a dataset as COCO instances JSON + images")
    coco_out.add_argument("dataset", type=Path)
    coco_out.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    coco_out.add_argument("--images", type=Path, help="where to write the images (default: beside the JSON)")
    coco_out.add_argument("--skip-bad", action="store_true", help="skip unreadable records and list them")

    stats = commands.add_parser("stats", help="count examples per task and class; draw a few samples")
    stats.add_argument("dataset", type=Path)
    stats.add_argument(
        "--out", type=Path, help="where to write stats.json and drawings (default: DATASET-stats)"
    )
    stats.add_argument("--samples", type=int, default=2, help="samples drawn per task")
    stats.add_argument("--skip-bad", action="store_true", help="skip unreadable records and list them")


def _run_data_command(args: argparse.Namespace) -> None:
    from omnivis.data import build

    if args.data_command == "make-world":
        manifest = build.make_world_dataset(
            args.out, args.n, args.seed, args.variant, records_per_shard=args.shard_size,
            workers=args.workers, overwrite=args.overwrite,
        )  # fmt: skip
        print(f"{manifest.total_records} scenes in {len(manifest.shards)} shards written to {args.out}")
    elif args.data_command == "import-coco":
        manifest, skipped = build.import_coco_dataset(
            args.annotations, args.images, args.out, captions_json=args.captions, refs_json=args.refs,
            skip_bad=args.skip_bad, overwrite=args.overwrite,
        )  # fmt: skip
        for line in skipped:
            print(f"skipped: {line}")
        print(f"{manifest.total_records} records written to {args.out} ({len(skipped)} items skipped)")
    elif args.data_command == "export-coco":
        path, skipped = build.export_coco_dataset(
            args.dataset, args.out, images_dir=args.images, skip_bad=args.skip_bad
        )
        for line in skipped:
            print(f"skipped: {line}")
        print(f"COCO JSON written to {path} ({len(skipped)} records skipped)")
    elif args.data_command == "stats":
        from omnivis.data.stats import dataset_stats

        out = args.out or args.dataset.with_name(args.dataset.name + "-stats")
        stats = dataset_stats(args.dataset, out, samples_per_task=args.samples, skip_bad=args.skip_bad)
        print(stats.table())
        print(f"stats.json and {len(stats.drawn)} drawings written to {out}")


def _add_pretrain_command(pretrain: argparse.ArgumentParser) -> None:
    methods = pretrain.add_subparsers(dest="method", required=True)
    tagging = methods.add_parser("tagging", help="tags of the image and of each cell, with boxes")
    tagging.add_argument("--data", required=True, help="the dataset directory")
    tagging.add_argument("--out", required=True, help="the run directory (the checkpoint goes to OUT/final)")
    tagging.add_argument("--preset", default="tiny")
    tagging.add_argument("--image-size", type=int, default=128)
    tagging.add_argument("--steps", type=int, default=1000)
    tagging.add_argument("--batch-size", type=int, default=64)
    tagging.add_argument("--learning-rate", type=float, help="default: TaggingConfig's (3e-4)")
    tagging.add_argument(
        "--cell-weight", type=float, default=1.0, help="weight of the per-cell losses (0: pooled tags only)"
    )
    tagging.add_argument("--init", default="", help="a checkpoint directory whose vision tower to continue")
    tagging.add_argument("--heads", default="", help="a tagging run directory whose heads to continue")
    tagging.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    tagging.add_argument("--num-workers", type=int, default=0, help="image-decoding processes")
    tagging.add_argument("--crop-size", type=int, default=64, help="side of a cut-out region, resized")
    tagging.add_argument("--max-minutes", type=float, default=0.0, help="stop after this wall time (0: none)")
    tagging.add_argument(
        "--crops-per-image", type=int, default=0, help="regions per image also cut out and named alone"
    )
    tagging.add_argument(
        "--word-crops-per-image", type=int, default=0, help="words of text per image also cut out and named"
    )
    tagging.add_argument("--word-weight", type=float, default=1.0, help="weight of the per-cell word loss")
    tagging.add_argument("--seed", type=int, default=0, help="the data order's and the heads' seed")
    probe = methods.add_parser("probe", help="linear-probe a model's vision tower on a world split")
    probe.add_argument("--model", required=True, help="checkpoint directory or preset name")
    probe.add_argument("--data", required=True, help="a world dataset directory")
    probe.add_argument("--records", type=int, default=2000, help="records used (4/5 fit, 1/5 score)")


def _run_pretrain_command(args: argparse.Namespace) -> None:
    from omnivis.pretrain import TaggingConfig, pretrain_tagging

    if args.method == "probe":
        from omnivis.eval.probe import format_probe_table, probe_checkpoint

        print(format_probe_table(probe_checkpoint(args.model, args.data, args.records)))
        return

    rate = {} if args.learning_rate is None else {"learning_rate": args.learning_rate}
    config = TaggingConfig(
        data=args.data, out=args.out, preset=args.preset, image_size=args.image_size, steps=args.steps,
        batch_size=args.batch_size, cell_weight=args.cell_weight, init=args.init, device=args.device,
        num_workers=args.num_workers, crops_per_image=args.crops_per_image,
        crop_size=args.crop_size, max_minutes=args.max_minutes, word_crops_per_image=args.word_crops_per_image,
        word_weight=args.word_weight, seed=args.seed, heads=args.heads, **rate,
    )  # fmt: skip
    result = pretrain_tagging(config)
    print(f"vision tower written to {result.checkpoint} ({len(result.tags)} tags); use it with "
          f"model.vision_init={result.checkpoint}")  # fmt: skip


def _add_serve_command(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--model", required=True, help="checkpoint directory or preset name")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch", type=int, default=16, help="requests of one task run together at most")
    serve.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a request waits for others")
    serve.add_argument("--max-queue", type=int, default=64, help="waiting requests beyond this get 503")
    serve.add_argument("--timeout", type=float, default=120.0, help="seconds before a request gets 504")
    serve.add_argument("--device", default="cpu")
    serve.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])


def _run_serve_command(args: argparse.Namespace) -> None:
    from omnivis.serve import BatchSettings, ServeSettings, serve

    batching = BatchSettings(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
    )
    serve(
        args.model, host=args.host, port=args.port, settings=ServeSettings(batching=batching),
        device=args.device, dtype=args.dtype,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides (key=value) may come before or after options; argparse alone takes them only before.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train" or any("=" not in item or item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        if args.command == "predict":
            from omnivis.loading import predict_files

            answers = predict_files(
                args.images, args.model, args.task, args.region or args.text, num_beams=args.num_beams,
                max_new_tokens=args.max_new_tokens, return_scores=args.scores, device=args.device,
                dtype=args.dtype, json_path=args.json, draw_path=args.draw,
            )  # fmt: skip
            print(json.dumps(answers, indent=2))
        elif args.command == "pretrain":
            _run_pretrain_command(args)
        elif args.command == "serve":
            _run_serve_command(args)
        elif args.command == "tasks":
            from omnivis.tasks import TASKS

            for task in TASKS.values():
                print(f"{task.token:<36} input: {task.input:<7} {task.description}")
        elif args.command == "demo":
            from omnivis.demo import run_demo

            run_demo(
                args.out, args.model, train=args.train, train_minutes=args.train_minutes, scenes=args.scenes
            )
        elif args.command == "data":
            _run_data_command(args)
        elif args.command == "eval":
            _run_eval_command(args)
        elif args.command == "train":
            from omnivis.train import resolve_config, train

            config = resolve_config(
                args.preset, args.config, args.overrides, init=args.init, data=args.data, out=args.out
            )
            train(config, resume=args.resume_from or args.resume, progress=not args.no_progress)
    except OmnivisError as error:
        print(f"omnivis: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
