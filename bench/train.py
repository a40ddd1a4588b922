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
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration, Florence2VisionConfig

from omnivis.data.build import make_world_dataset
from omnivis.data.dataset import open_dataset
from omnivis.loading import bundled_tokenizer
from omnivis.model import checkpoint
from omnivis.model.florence import IGNORE_INDEX, Florence2, FlorenceConfig
from omnivis.model.presets import OFFICIAL_VOCAB_SIZE, preset_config
from omnivis.tokenizer import Tokenizer
from omnivis.train import data
from omnivis.train.loss import LossSettings, summed_token_loss

# shape name -> (preset, image side, batch): the defaults the task asks for.
SHAPES = {"tiny": ("tiny", 256, 16), "base": ("florence2-base", 768, 2)}
DECODER_START, PAD, BOS, EOS = 2, 1, 0, 2  # BART's ids, which Florence-2 keeps
TOLERANCE = 1e-4  # relative, on loss and gradient norm; float32 sums in another order differ by ~1e-7
WORLD_SCENES, WORLD_SEED = 64, 1  # the --stream dataset: scenes drawn, and their seed
STREAM_TARGET_TOKENS = 512  # the --stream target budget (cut to the decoder's position table if shorter)


@dataclass
class Batch:
    """One training batch, in the inputs each implementation expects."""

    pixel_values: torch.Tensor  # (B, 3, H, W), already normalised
    prompt_ids: torch.Tensor  # (B, P), right-padded with PAD
    prompt_mask: torch.Tensor  # (B, P), 1 = real token
    labels: torch.Tensor  # (B, T), IGNORE_INDEX past each target's end
    decoder_input_ids: torch.Tensor  # (B, T): labels shifted right, DECODER_START first, padding as PAD
    reference_ids: torch.Tensor  # (B, N + P): N `<image>` placeholders, then the prompt
    reference_mask: torch.Tensor  # (B, N + P)


@dataclass
class Timing:
    """One side's timed samples, summarised."""

    wall: float  # median seconds per timed sample
    cpu: float  # median CPU seconds of this process (all threads) per timed sample
    fastest: float  # the quickest and slowest sample's wall seconds: the spread a shared machine adds
    slowest: float


def reference_config(config: FlorenceConfig, image_token: int) -> Florence2Config:
    """The transformers config of the network an omnivis `FlorenceConfig` describes."""
    vision, projector, text = config.vision, config.projector, config.text
    vision_config = Florence2VisionConfig(
        in_channels=vision.in_channels, embed_dim=list(vision.embed_dims), depths=list(vision.depths),
        num_heads=list(vision.num_heads), num_groups=list(vision.num_groups),
        patch_size=list(vision.patch_sizes), patch_stride=list(vision.patch_strides),
        patch_padding=list(vision.patch_paddings), patch_prenorm=list(vision.patch_prenorm),
        window_size=vision.window_size, mlp_ratio=vision.mlp_ratio, qkv_bias=vision.qkv_bias,
        drop_path_rate=vision.drop_path_rate, projection_dim=projector.projection_dim,
        max_position_embeddings=projector.max_grid_positions,
        max_temporal_embeddings=projector.max_temporal_embeddings,
    )  # fmt: skip
    text_config = BartConfig(
        vocab_size=text.vocab_size, d_model=text.d_model, encoder_layers=text.encoder_layers,
        decoder_layers=text.decoder_layers, encoder_attention_heads=text.encoder_attention_heads,
        decoder_attention_heads=text.decoder_attention_heads, encoder_ffn_dim=text.encoder_ffn_dim,
        decoder_ffn_dim=text.decoder_ffn_dim, max_position_embeddings=text.max_position_embeddings,
        activation_function=text.activation_function, scale_embedding=text.scale_embedding,
        dropout=text.dropout, attention_dropout=text.attention_dropout,
        activation_dropout=text.activation_dropout, pad_token_id=text.pad_token_id,
        bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=DECODER_START,
    )  # fmt: skip
    return Florence2Config(vision_config=vision_config, text_config=text_config, image_token_id=image_token)


def build_pair(
    config: FlorenceConfig, device: str, seed: int = 0
) -> tuple[Florence2, Florence2ForConditionalGeneration]:
    """omnivis's model and the reference, holding the same weights (the reference's random initialisation)."""
    torch.manual_seed(seed)
    image_token = config.text.vocab_size - 1  # a row the batch never uses otherwise
    reference = Florence2ForConditionalGeneration(reference_config(config, image_token))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        # Random LayerNorm affines and biases, so a mis-wired norm or bias cannot pass the loss check.
        for name, parameter in reference.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    ours = Florence2(config)
    state = checkpoint.native_to_omnivis(reference.state_dict())
    checkpoint.load_state_into(ours, state, "the reference's state_dict")
    return ours.to(device), reference.to(device)


def make_batch(
    config: FlorenceConfig, batch: int, prompt_tokens: int, target_tokens: int, device: str
) -> Batch:
    """Random pixels and token ids with the padding a real batch has: prompts and targets of varied length."""
    seeded = torch.Generator().manual_seed(2)
    vocab = config.text.vocab_size
    height, width = config.image_size
    pixels = torch.randn(batch, 3, height, width, generator=seeded)
    # Ordinary ids only: 0-2 are <s>, <pad>, </s>; the last row is the reference's <image> placeholder.
    words = lambda rows, columns: torch.randint(3, vocab - 1, (rows, columns), generator=seeded)
    length = lambda low, high: int(torch.randint(low, high + 1, (), generator=seeded))
    prompt_ids, labels = words(batch, prompt_tokens), words(batch, target_tokens)
    prompt_ids[:, 0], prompt_mask = BOS, torch.ones(batch, prompt_tokens, dtype=torch.long)
    for row in range(batch):
        prompt_length = length(max(2, prompt_tokens // 2), prompt_tokens)
        target_length = length(max(1, target_tokens // 2), target_tokens)
        prompt_ids[row, prompt_length - 1], prompt_ids[row, prompt_length:] = EOS, PAD
        prompt_mask[row, prompt_length:] = 0
        labels[row, target_length - 1], labels[row, target_length:] = EOS, IGNORE_INDEX
    decoder_input_ids = torch.full_like(labels, DECODER_START)
    decoder_input_ids[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE_INDEX, PAD)
    return assemble(config, pixels, prompt_ids, prompt_mask, labels, decoder_input_ids, device)


def assemble(config: FlorenceConfig, pixels: torch.Tensor, prompt_ids: torch.Tensor,
             prompt_mask: torch.Tensor, labels: torch.Tensor, decoder_input_ids: torch.Tensor,
             device: str) -> Batch:  # fmt: skip
    """A `Batch` on `device`, the reference's prompts made of `<image>` placeholders (the vocabulary's last
    row, which `build_pair` names the image token) followed by the bare prompt."""
    image_token = config.text.vocab_size - 1
    image = torch.full((len(prompt_ids), config.num_image_tokens), image_token, dtype=torch.long)
    reference_ids = torch.cat([image, prompt_ids], dim=1)
    reference_mask = torch.cat([torch.ones_like(image), prompt_mask], dim=1)
    tensors = (pixels, prompt_ids, prompt_mask, labels, decoder_input_ids, reference_ids, reference_mask)
    return Batch(*(tensor.to(device) for tensor in tensors))


def make_stream_batch(
    config: FlorenceConfig, tokenizer: Tokenizer, images: int, examples_per_image: int, length_chunks: int
) -> data.Batch:
    """One batch of `images` images of a fresh procedural world dataset, as omnivis's training loop reads it:
    every task the dataset supports, weighted alike, `examples_per_image` distinct tasks per image."""
    positions = config.text.max_position_embeddings
    with tempfile.TemporaryDirectory() as directory:
        make_world_dataset(directory, WORLD_SCENES, seed=WORLD_SEED, workers=1, progress=False)
        mixture = data.resolve_mixture(open_dataset(directory), {})  # {}: all tasks the dataset supports
        stream = data.TrainingStream(
            directory, tokenizer, config.image_size, mixture, examples_per_image=examples_per_image,
            max_target_tokens=min(STREAM_TARGET_TOKENS, positions),
            max_prompt_tokens=positions - config.num_image_tokens,  # as the loop: the encoder's room
        )  # fmt: skip
        samples = [stream[position] for position in range(images)]
    batch = data.collate(samples, tokenizer.pad_token_id, DECODER_START, length_chunks=length_chunks)
    if bool((batch.input_ids == config.text.vocab_size - 1).any()):
        raise SystemExit("a prompt uses the vocabulary's last id, which the reference reads as <image>")
    return batch


def recipe_rows(config: FlorenceConfig, batch: data.Batch, device: str) -> Batch:
    """The same examples as the common recipe feeds them: one row per example with its own copy of its image,
    every row padded to the batch's longest prompt and target (`collate`'s row tensors are exactly that)."""
    return assemble(config, batch.pixel_values[batch.image_index], batch.input_ids, batch.attention_mask,
                    batch.labels, batch.decoder_input_ids, device)  # fmt: skip


def positions_computed(batch: data.Batch, image_tokens: int) -> dict[str, tuple[int, int, int]]:
    """(vision-tower images, encoder positions, decoder positions) a step computes, padding included, for the
    real tokens alone, the recipe's rows and omnivis's chunks. Both ways give every row its image's visual
    tokens in the encoder; they differ in images encoded and in padding."""
    rows, prompt_length = batch.input_ids.shape
    shapes = [(len(chunk.input_ids), chunk.input_ids.shape[1], labels.shape[1])
              for chunk, labels in zip(batch.chunks, batch.chunk_labels, strict=True)]  # fmt: skip
    images, real_prompt = len(batch.image_ids), int(batch.attention_mask.sum())
    return {
        "real tokens": (images, rows * image_tokens + real_prompt, batch.target_tokens),
        "reference": (rows, rows * (image_tokens + prompt_length), batch.labels.numel()),
        "omnivis": (images, sum(count * (image_tokens + prompt) for count, prompt, _ in shapes),
                    sum(count * target for count, _, target in shapes)),
    }  # fmt: skip


def our_loss(model: Florence2, batch: Batch) -> torch.Tensor:
    """omnivis's mean token loss: pixels and the bare prompt in, the visual tokens go in front of it."""
    return model(
        batch.pixel_values, batch.prompt_ids, batch.decoder_input_ids, batch.prompt_mask, batch.labels
    )["loss"]


def reference_loss(model: Florence2ForConditionalGeneration, batch: Batch) -> torch.Tensor:
    """The reference's mean token loss: `<image>` placeholders in its prompt give way to the visual tokens."""
    return model(
        input_ids=batch.reference_ids, pixel_values=batch.pixel_values, attention_mask=batch.reference_mask,
        decoder_input_ids=batch.decoder_input_ids, labels=batch.labels,
    ).loss  # fmt: skip


def chunked_loss(model: Florence2, batch: data.Batch) -> torch.Tensor:
    """omnivis's training loss (`train.loop._forward_backward`): one vision pass for the batch's images, the
    rows decoded chunk by chunk, token losses summed over every chunk and divided by the target tokens."""
    chunk_logits = model(batch.pixel_values, chunks=batch.chunks)["chunk_logits"]
    summed = sum(summed_token_loss(logits, labels, LossSettings())
                 for logits, labels in zip(chunk_logits, batch.chunk_labels, strict=True))  # fmt: skip
    return summed / batch.target_tokens


def check_same_network(
    sides: Sequence[tuple[torch.nn.Module, Callable[[], torch.Tensor]]],
) -> dict[str, tuple[float, float]]:
    """First-batch loss and gradient norm of (reference, omnivis), each a model and its loss function, in eval
    mode and float32 (dropout and autocast would make them differ by chance, not by fault). TF32 convolutions
    are turned off for the same reason."""
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    values: dict[str, list[float]] = {"loss": [], "gradient norm": []}
    for model, loss_function in sides:
        model.eval()
        loss = loss_function()
        loss.backward()
        gradients = [p.grad for p in model.parameters() if p.grad is not None]
        values["loss"].append(loss.item())
        values["gradient norm"].append(torch.stack([g.norm() for g in gradients]).norm().item())
        model.zero_grad(set_to_none=True)
        model.train()
    torch.backends.cudnn.allow_tf32 = allow_tf32
    return {name: (pair[0], pair[1]) for name, pair in values.items()}


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
    for name in ("image_size", "batch", "target_tokens", "steps", "repeats", "images", "examples_per_image",
                 "length_chunks"):
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
    step = lambda model, loss, steps: training_step(model, loss, steps, args.device, dtype)  # noqa: E731
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
        *timing_table(("reference (transformers)", "omnivis"), timings, args.steps,
                      {"samples/s": args.batch}),
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
    names = (f"reference (transformers: {rows} rows, an image copy each)",
             f"omnivis ({images} images encoded, {len(batch.chunks)} length chunks)")
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
