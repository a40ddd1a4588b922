"""omnivis against the reference (transformers' Florence-2): one training step, same weights, same batch.

    .venv/bin/python bench/train.py [--shape tiny|base] [--device cpu|cuda] [--dtype float32|bfloat16]
                                    [--image-size 256] [--batch 16] [--prompt-tokens 12]
                                    [--target-tokens 48] [--steps 5] [--repeats 3] [--profile]
                                    [--write bench/RESULTS.md]
    .venv/bin/python bench/train.py --stream [--images 16] [--examples-per-image 4] [--length-chunks 4] ...

A training step is: forward with labels, backward, AdamW step, zero_grad, in train mode (dropout on). The
reference is built from the omnivis config of the chosen shape (`tiny` preset at 256x256 and batch 16 by
default; `base` is the florence2-base preset at 768x768, batch 2) and its random weights are loaded into
omnivis through omnivis's own checkpoint loader, so both are the same network. Before timing, the first
batch's loss and gradient norm are compared in eval mode (float32, no dropout): both must agree within 1e-4
relative. Then each side runs --steps steps per sample, the two alternating, --repeats samples; the median
gives samples/s. On CUDA both run under bfloat16 autocast by default.

--stream times a real multi-task batch of a world dataset instead: omnivis's training loop (one vision pass
per image, shared by its --examples-per-image tasks; rows in --length-chunks chunks by length) against the
common recipe (one row per example with its own image copy, padded to the batch's longest prompt and target).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from train_pair import (  # bench/ is the script's directory, first on sys.path
    build_pair,
    check_same_network,
    chunked_loss,
    make_batch,
    make_stream_batch,
    our_loss,
    positions_computed,
    recipe_rows,
    reference_loss,
)

from omnivis.loading import bundled_tokenizer
from omnivis.model.presets import OFFICIAL_VOCAB_SIZE, preset_config
from omnivis.train import data

# shape name -> (preset, image side, batch): the defaults the task asks for.
SHAPES = {"tiny": ("tiny", 256, 16), "base": ("florence2-base", 768, 2)}
TOLERANCE = 1e-4  # relative, on loss and gradient norm; float32 sums in another order differ by ~1e-7


@dataclass
class Timing:
    """One side's timed samples, summarised."""

    wall: float  # median seconds per timed sample
    cpu: float  # median CPU seconds of this process (all threads) per timed sample
    fastest: float  # the quickest and slowest sample's wall seconds: the spread a shared machine adds
    slowest: float


def training_step(
    model: torch.nn.Module,
    loss_function: Callable[[], torch.Tensor],
    steps: int,
    device: str,
    dtype: torch.dtype,
) -> Callable[[], None]:
    """A function running `steps` training steps of `model` on the loss `loss_function` gives, with its own
    AdamW."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    autocast = dtype != torch.float32

    def run() -> None:
        for _ in range(steps):
            with torch.autocast(torch.device(device).type, dtype=dtype, enabled=autocast):
                loss = loss_function()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run


def timed_pair(
    reference: Callable[[], None], ours: Callable[[], None], repeats: int, device: str
) -> tuple[Timing, Timing]:
    """Median wall and CPU seconds of each function over `repeats` calls, after a warm-up (which also
    allocates AdamW's state); the two alternate call by call, so drift in the machine's load falls on both
    alike. CPU time is the process's, all threads: with one thread it leaves out time spent waiting for a
    core; with more it also counts OpenMP threads spinning while a partner waits for one."""
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else lambda: None
    reference(), ours()
    walls: tuple[list[float], list[float]] = ([], [])
    processor_times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for side, function in enumerate((reference, ours)):
            synchronize()
            wall_start, processor_start = time.perf_counter(), time.process_time()
            function()
            synchronize()
            walls[side].append(time.perf_counter() - wall_start)
            processor_times[side].append(time.process_time() - processor_start)
    summary = [
        Timing(statistics.median(wall), statistics.median(processor), min(wall), max(wall))
        for wall, processor in zip(walls, processor_times)
    ]
    return summary[0], summary[1]


def profile_pair(
    reference: Callable[[], None], ours: Callable[[], None], on_gpu: bool, rows: int = 20
) -> str:
    """The operators of one step of each side by self time (GPU time on a GPU), side by side: call counts show
    whether the two do the same work, times where it goes. The machine's load falls on each profile
    separately, so compare counts first."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    activities += [torch.profiler.ProfilerActivity.CUDA] if on_gpu else []
    tables: list[dict[str, tuple[int, float]]] = []
    for function in (reference, ours, reference, ours):
        with torch.profiler.profile(activities=activities) as profiler:
            function()
        events = profiler.key_averages()
        times = [event.self_device_time_total if on_gpu else event.self_cpu_time_total for event in events]
        tables.append({event.key: (event.count, time / 1e3) for event, time in zip(events, times)})
    tables = tables[2:]  # the profiler's first use costs hundreds of ms of set-up: a first round absorbs it
    busiest = lambda key: -max(table.get(key, (0, 0.0))[1] for table in tables)
    lines = [f"{'operator':<58} {'ref calls':>9} {'ref ms':>8} {'our calls':>9} {'our ms':>8}"]
    for key in sorted(set(tables[0]) | set(tables[1]), key=busiest)[:rows]:
        (reference_calls, reference_ms), (our_calls, our_ms) = (table.get(key, (0, 0.0)) for table in tables)
        counts = f"{reference_calls:>9} {reference_ms:>8.1f} {our_calls:>9} {our_ms:>8.1f}"
        lines.append(f"{key[:58]:<58} {counts}")
    totals = [sum(milliseconds for _, milliseconds in table.values()) for table in tables]
    lines.append(f"{'total self time':<58} {'':>9} {totals[0]:>8.1f} {'':>9} {totals[1]:>8.1f}")
    return "\n".join(lines)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--shape", choices=list(SHAPES), default="tiny")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--dtype", choices=["float32", "bfloat16"], help="bfloat16 means autocast (default on CUDA)")
    add("--image-size", type=int, help="image side in pixels (default: 256 tiny, 768 base)")
    add("--batch", type=int, help="samples per step (default: 16 tiny, 2 base)")
    vocab_help = f"vocabulary rows (default: the bundled tokenizer's; base {OFFICIAL_VOCAB_SIZE})"
    add("--vocab", type=int, help=vocab_help)
    add("--prompt-tokens", type=int, default=12, help="prompt length, the longest in the batch")
    add("--target-tokens", type=int, default=48, help="target length, the longest in the batch")
    add("--steps", type=int, default=5, help="training steps per timed sample")
    add("--repeats", type=int, default=3, help="timed samples per implementation (median taken)")
    add("--profile", action="store_true", help="also profile one step of each with torch.profiler")
    add("--write", type=Path, help="append the results as a section of this markdown file")
    add("--stream", action="store_true", help="a real multi-task batch of a world dataset (see above)")
    add("--images", type=int, default=16, help="--stream: images in the batch")
    add("--examples-per-image", type=int, default=4, help="--stream: tasks drawn per image")
    add("--length-chunks", type=int, default=4, help="--stream: omnivis's row groups by length")
    args = parser.parse_args()
    args.preset, image_size, batch = SHAPES[args.shape]
    args.image_size = image_size if args.image_size is None else args.image_size
    args.batch = batch if args.batch is None else args.batch
    on_gpu = torch.device(args.device).type == "cuda"
    args.dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
    if args.vocab is None:
        args.vocab = bundled_tokenizer().vocab_size if args.shape == "tiny" else OFFICIAL_VOCAB_SIZE
    for name in (
        "image_size",
        "batch",
        "target_tokens",
        "steps",
        "repeats",
        "images",
        "examples_per_image",
        "length_chunks",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.prompt_tokens < 2:
        parser.error(f"--prompt-tokens must leave room for <s> and </s> (>= 2), got {args.prompt_tokens}")
    if args.vocab < 8:
        parser.error(f"--vocab must be >= 8 (special tokens, <image>, ordinary tokens), got {args.vocab}")
    tokenizer_rows = bundled_tokenizer().vocab_size
    if args.stream and args.vocab < tokenizer_rows:
        parser.error(f"--stream reads the bundled tokenizer's ids: --vocab must be >= {tokenizer_rows}")
    return args


def main() -> None:
    args = parse_arguments()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # others' work on a shared machine
    config = preset_config(args.preset, vocab_size=args.vocab)
    config.image_size = (args.image_size, args.image_size)
    ours, reference = build_pair(config, args.device)
    stream_batch = None
    if args.stream:
        stream_batch = make_stream_batch(config, bundled_tokenizer(), args.images, args.examples_per_image,
                                         args.length_chunks)  # fmt: skip
        batch = recipe_rows(config, stream_batch, args.device)
        our_loss_function = functools.partial(chunked_loss, ours, stream_batch.to(torch.device(args.device)))
    else:
        batch = make_batch(config, args.batch, args.prompt_tokens, args.target_tokens, args.device)
        our_loss_function = functools.partial(our_loss, ours, batch)
    reference_loss_function = functools.partial(reference_loss, reference, batch)
    checks = check_same_network([(reference, reference_loss_function), (ours, our_loss_function)])
    for name, (reference_value, our_value) in checks.items():
        difference = abs(our_value - reference_value) / abs(reference_value)
        print(f"first batch {name}: reference {reference_value:.7f}, omnivis {our_value:.7f}, "
              f"relative difference {difference:.1e}")  # fmt: skip
        if difference > TOLERANCE:
            raise SystemExit(f"the {name}s differ by {difference:.1e} relative (> {TOLERANCE})")
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    step = lambda model, loss, steps: training_step(model, loss, steps, args.device, dtype)
    reference_step = step(reference, reference_loss_function, args.steps)
    our_step = step(ours, our_loss_function, args.steps)
    timings = timed_pair(reference_step, our_step, args.repeats, args.device)
    parameters = (sum(p.numel() for p in reference.parameters()), ours.num_parameters())
    if stream_batch is None:
        report = render(args, checks, parameters, timings, load)
    else:
        report = render_stream(args, stream_batch, config.num_image_tokens, checks, parameters, timings, load)
    print(report)
    if args.profile:
        on_gpu = torch.device(args.device).type == "cuda"
        one_step = (step(reference, reference_loss_function, 1), step(ours, our_loss_function, 1))
        print(profile_pair(*one_step, on_gpu))
    if args.write:
        with open(args.write, "a", encoding="utf-8") as handle:
            handle.write("\n" + report)


def describe_machine(device: str, load: float | None) -> str:
    import transformers

    if torch.device(device).type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        processor = platform.processor() or platform.machine()
        hardware = f"{processor}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"
        hardware += "" if load is None else f", load average {load:.1f} before the run"
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    return f"{hardware}; {versions}, Python {platform.python_version()}"


def render(
    args: argparse.Namespace,
    checks: dict[str, tuple[float, float]],
    parameters: tuple[int, int],
    timings: tuple[Timing, Timing],
    load: float | None,
) -> str:
    """The results as a markdown section: what ran, where, the first-batch check and the table."""
    size = f"{args.image_size}x{args.image_size}"
    lines = [
        f"### Training step: {args.shape} shape at {size}, {args.device}, {args.dtype}, batch {args.batch}, "
        f"prompt {args.prompt_tokens}, target {args.target_tokens} ({date.today()})",
        "",
        *run_lines(args, load, checks, parameters),
        "",
        *timing_table(
            ("reference (transformers)", "omnivis"), timings, args.steps, {"samples/s": args.batch}
        ),
    ]
    return "\n".join(lines) + "\n"


def run_lines(args: argparse.Namespace, load: float | None, checks: dict[str, tuple[float, float]],
              parameters: tuple[int, int]) -> list[str]:  # fmt: skip
    """A section's command, machine, parameters, first-batch check and timing lines."""
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    command = prefix + "python bench/train.py " + " ".join(sys.argv[1:])
    (reference_loss_value, our_loss_value), (reference_norm, our_norm) = checks.values()
    loss_difference = abs(our_loss_value - reference_loss_value) / abs(reference_loss_value)
    return [
        f"Command: `{command.strip()}`  ",
        f"Machine: {describe_machine(args.device, load)}  ",
        f"Parameters: reference {parameters[0]:,}, omnivis {parameters[1]:,}; vocabulary {args.vocab}  ",
        f"First batch (eval mode, float32): loss reference {reference_loss_value:.7f}, omnivis "
        f"{our_loss_value:.7f} (relative difference {loss_difference:.1e}); gradient norm reference "
        f"{reference_norm:.6f}, omnivis {our_norm:.6f}  ",
        f"Timed: median of {args.repeats} samples of {args.steps} steps each, the two alternating, after one "
        "warm-up sample; train mode (dropout on)  ",
    ]


def timing_table(
    names: tuple[str, str], timings: tuple[Timing, Timing], steps: int, per_step: dict[str, int]
) -> list[str]:
    """Seconds per step, a throughput column per `per_step` count (items one step trains on), CPU seconds."""
    rate_names = " | ".join(per_step)
    header = f"| implementation | s/step (fastest-slowest sample) | {rate_names} | CPU s/step (all threads) |"
    lines = [header, "|---|---|" + "---|" * len(per_step) + "---|"]
    for name, timing in zip(names, timings):
        seconds = f"{timing.wall / steps:.3f} ({timing.fastest / steps:.3f}-{timing.slowest / steps:.3f})"
        rates = " | ".join(f"{count * steps / timing.wall:.2f}" for count in per_step.values())
        lines.append(f"| {name} | {seconds} | {rates} | {timing.cpu / steps:.3f} |")
    reference, ours = timings
    ratios = f"{reference.wall / ours.wall:.2f}x | " * len(per_step) + f"{reference.cpu / ours.cpu:.2f}x"
    return [*lines, f"| omnivis / reference | | {ratios} |"]


def render_stream(
    args: argparse.Namespace,
    batch: data.Batch,
    image_tokens: int,
    checks: dict[str, tuple[float, float]],
    parameters: tuple[int, int],
    timings: tuple[Timing, Timing],
    load: float | None,
) -> str:
    """The --stream results as a markdown section: the batch, the check, the timings, the positions."""
    rows, images = len(batch.tasks), len(batch.image_ids)
    chunks = ", ".join(f"{len(chunk.input_ids)}x{chunk.input_ids.shape[1]}/{labels.shape[1]}"
                       for chunk, labels in zip(batch.chunks, batch.chunk_labels, strict=True))  # fmt: skip
    names = (
        f"reference (transformers: {rows} rows, an image copy each)",
        f"omnivis ({images} images encoded, {len(batch.chunks)} length chunks)",
    )
    counts = positions_computed(batch, image_tokens)
    _, real_encoder, real_decoder = counts["real tokens"]
    lines = [
        f"### Training step on a world batch: {args.shape} shape at {args.image_size}x{args.image_size}, "
        f"{args.device}, {args.dtype}, {images} images x {args.examples_per_image} tasks ({date.today()})",
        "",
        *run_lines(args, load, checks, parameters),
        f"Batch: {rows} examples of {len(batch.task_counts)} tasks on {images} images; longest prompt "
        f"{batch.input_ids.shape[1]}, longest target {batch.labels.shape[1]}, {batch.target_tokens} target "
        f"tokens; omnivis's chunks (rows x prompt/target): {chunks}",
        "",
        *timing_table(names, timings, args.steps, {"examples/s": rows, "images/s": images}),
        "",
        "| per step | vision-tower images | encoder positions (padding) | decoder positions (padding) |",
        "|---|---|---|---|",
    ]
    for name, (images_encoded, encoder, decoder) in counts.items():
        lines.append(f"| {name} | {images_encoded} | {encoder:,} ({encoder - real_encoder:,}) | "
                     f"{decoder:,} ({decoder - real_decoder:,}) |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
