"""omnivis against the reference (transformers' Florence-2) on the same weights, in one run.

    .venv/bin/python bench/inference.py [--shape base|large|small] [--device cpu|cuda] [--dtype float32|bfloat16|float16]
                                        [--repeats 3] [--tokens 32] [--batch 1] [--model DIR] [--write bench/RESULTS.md]

Times (median of --repeats, after one warm-up, the two implementations alternating) the vision tower (pixels -> projected visual tokens) and greedy
generation of --tokens tokens (PIL images -> token ids: preprocessing, vision tower, encoder, decoding), for both
implementations, and prints the ratio reference / omnivis. Random weights of the official shape are used unless
--model names a transformers-native Florence-2 directory. The generated ids are checked equal before timing.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import omnivis
from omnivis.tasks import TASKS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def timed_pair(
    reference: Callable[[], object], ours: Callable[[], object], repeats: int, device: str
) -> tuple[float, float]:
    """Median seconds of each function over `repeats` calls, after a warm-up; the two alternate call by call,
    so drift in the machine's load (other processes, clock changes) falls on both alike."""
    reference(), ours()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for function, times in ((reference, samples[0]), (ours, samples[1])):
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            function()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    return statistics.median(samples[0]), statistics.median(samples[1])


def build(args: argparse.Namespace, workdir: Path):
    from oracle_florence import BASE_TEXT, BASE_VISION, SMALL_TEXT, SMALL_VISION, build_reference
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    if args.model:
        directory = Path(args.model)
        reference = Florence2ForConditionalGeneration.from_pretrained(directory, local_files_only=True)
        processor = AutoProcessor.from_pretrained(directory, local_files_only=True)
    else:
        large_vision = dict(BASE_VISION, embed_dim=[256, 512, 1024, 2048], num_heads=[8, 16, 32, 64],
                            num_groups=[8, 16, 32, 64], projection_dim=1024)  # fmt: skip
        large_text = dict(BASE_TEXT, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                          decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                          max_position_embeddings=4096)  # fmt: skip
        shapes = {"small": (SMALL_VISION, SMALL_TEXT), "base": (BASE_VISION, BASE_TEXT), "large": (large_vision, large_text)}
        # The official vocabulary size (51328 rows), so the LM head costs what it costs with real weights.
        built = build_reference(workdir, *shapes[args.shape], vocab_rows=51328)
        directory, reference, processor = workdir, built.model, built.processor
    dtype = DTYPES[args.dtype]
    reference = reference.to(args.device, dtype).eval()
    ours = omnivis.load(directory, device=args.device, dtype=dtype)
    return reference, processor, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["small", "base", "large"], default="base")
    parser.add_argument("--model", help="a transformers-native Florence-2 directory instead of random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--beams", type=int, default=1, help="beam width of the generation row")
    parser.add_argument("--all-tasks", action="store_true", help="add a row: every task on one image")
    parser.add_argument("--write", type=Path, help="append the results as a section of this markdown file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        reference, processor, ours = build(args, Path(workdir))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(args.batch)]
    task = "<MORE_DETAILED_CAPTION>"
    inputs = processor(text=[task] * args.batch, images=images, return_tensors="pt").to(args.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(DTYPES[args.dtype])
    pixels = inputs["pixel_values"]
    config = ours.generation_config(num_beams=args.beams, max_new_tokens=args.tokens)
    prompts = [TASKS[task].prompt] * args.batch

    def reference_generate() -> torch.Tensor:
        # Both sides go from PIL images to token ids: preprocessing, tokenizing, vision tower, encoder, decoding.
        batch = processor(text=[task] * args.batch, images=images, return_tensors="pt").to(args.device)
        batch["pixel_values"] = batch["pixel_values"].to(DTYPES[args.dtype])
        return reference.generate(**batch, do_sample=False, num_beams=args.beams, max_new_tokens=args.tokens)

    def ours_generate() -> torch.Tensor:
        return ours.generate_ids(images, prompts, config)[0]

    with torch.inference_mode():
        expected, got = reference_generate().cpu(), ours_generate()
        same = expected.tolist() == got.tolist()
        rows = {
            "vision tower": timed_pair(
                lambda: reference.get_image_features(pixels), lambda: ours.model.encode_image(pixels), args.repeats,
                args.device,
            ),
            f"generate {args.tokens} tokens, {args.beams} beam(s)": timed_pair(
                reference_generate, ours_generate, args.repeats, args.device
            ),
        }
        if args.all_tasks:
            row, all_same = time_all_tasks(reference, processor, ours, images[0], args)
            rows.update(row)
            same = same and all_same
    report = render(args, rows, same, int(got.shape[1]) - 1)
    print(report)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as handle:
            handle.write("\n" + report)


def time_all_tasks(reference, processor, ours, image, args: argparse.Namespace) -> tuple[dict, bool]:
    """Every reference task on one image: the reference runs them one by one (it has no other way);
    omnivis's `run_tasks` encodes the image once and decodes all prompts as one batch."""
    inputs = {"text": "a red circle", "region": "<loc_100><loc_150><loc_700><loc_800>"}
    tasks = {task: inputs.get(spec.input) for task, spec in TASKS.items() if task != "<VQA>"}

    def reference_all() -> dict:
        answers = {}
        for task, text in tasks.items():
            batch = processor(text=[task + (text or "")], images=[image], return_tensors="pt").to(args.device)
            batch["pixel_values"] = batch["pixel_values"].to(DTYPES[args.dtype])
            ids = reference.generate(**batch, do_sample=False, num_beams=args.beams, max_new_tokens=args.tokens)
            decoded = processor.batch_decode(ids, skip_special_tokens=False)[0]
            answers.update(processor.post_process_generation(decoded, task=task, image_size=image.size))
        return answers

    def ours_all() -> dict:
        return ours.run_tasks(image, tasks, num_beams=args.beams, max_new_tokens=args.tokens)

    same = reference_all() == ours_all()
    name = f"all {len(tasks)} tasks on one image, {args.tokens} tokens, {args.beams} beam(s)"
    return {name: timed_pair(reference_all, ours_all, max(1, args.repeats - 1), args.device)}, same


def render(args: argparse.Namespace, rows: dict[str, tuple[float, float]], same: bool, generated: int) -> str:
    import transformers

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    lines = [
        f"### {args.model or args.shape + ' shape'}, {args.device}, {args.dtype}, batch {args.batch}, "
        f"{args.tokens} tokens, {args.beams} beam(s) ({date.today()})",
        "",
        f"Command: `python bench/inference.py {' '.join(sys.argv[1:])}`  ",
        f"Machine: {device}; torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}  ",
        f"Identical token ids: {same} ({generated} tokens generated)",
        "",
        "| step | reference (s) | omnivis (s) | speed-up |",
        "|---|---|---|---|",
    ]
    for name, (reference_seconds, our_seconds) in rows.items():
        lines.append(f"| {name} | {reference_seconds:.3f} | {our_seconds:.3f} | {reference_seconds / our_seconds:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
