"""The training loop: one function, readable top to bottom; every piece of setup is a named builder.

    from omnivis.train import RECIPES, train
    result = train(RECIPES["tiny-world-cpu"]())

One optimizer step: read this rank's micro-batches, count the step's target tokens over all ranks, run each
micro-batch forward and backward with its summed loss scaled by world_size / tokens (DDP and FSDP average
gradients over ranks, so the result is the gradient of the step's mean token loss), stop on a non-finite loss
before any weight changes, clip, step AdamW and the schedule, log, evaluate, checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.utils.data import DataLoader

from omnivis.data.dataset import open_dataset
from omnivis.errors import CheckpointError, ConfigError, TrainingError
from omnivis.io import atomic_write_text
from omnivis.model.checkpoint import SHARED, TIED_ALIASES, check_state, expected_tensors, untie
from omnivis.model.florence import IGNORE_INDEX
from omnivis.predictor import Predictor
from omnivis.train import checkpointing, distributed
from omnivis.train.checkpointing import Snapshot, TrainerState
from omnivis.train.config import TrainConfig, validate
from omnivis.train.data import Batch, Curriculum, StepSampler, TrainingStream, collate, resolve_mixture
from omnivis.train.distributed import Runtime
from omnivis.train.evaluation import EvaluationSettings, evaluate_checkpoint
from omnivis.train.image_check import image_reliance
from omnivis.train.lora import adapter_state, is_adapter, merged_state
from omnivis.train.loss import LossSettings, location_range, summed_token_loss
from omnivis.train.model_setup import build_predictor, set_training_mode
from omnivis.train.monitor import RunLog
from omnivis.train.optim import build_optimizer, build_scheduler
from omnivis.train.summary import write_summary


@dataclass
class TrainResult:
    """What a finished (or time-limited) run leaves."""

    run_dir: Path
    steps: int  # optimizer steps done in all
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    losses: list[float] = field(default_factory=list)  # the loss of every step this process ran


def train(config: TrainConfig, *, resume: bool | str = False, progress: bool = True) -> TrainResult:
    """Trains a model as `config` says, alone or as one rank of a torchrun launch.

    Args:
        config: The run's config (see `omnivis.train.config`).
        resume: False for a fresh run; True to continue from the run directory's latest checkpoint; or the
            path of a checkpoint to continue from.
        progress: Show a progress bar (rank 0).

    Returns:
        The run's `TrainResult` (on every rank; only rank 0 wrote files).

    Raises:
        ConfigError: An invalid config, or a fresh run into a directory that already holds checkpoints.
        DatasetError: Data the mixture cannot be drawn from.
        CheckpointError: An initial or resumed checkpoint that does not fit the model.
        TrainingError: A non-finite loss (the last good checkpoint is kept and named).
    """
    validate(config)
    runtime = distributed.start(config.device)
    try:
        return _run(config, runtime, resume, progress)
    finally:
        distributed.stop(runtime)


def _run(config: TrainConfig, runtime: Runtime, resume: bool | str, progress: bool) -> TrainResult:
    run_dir = Path(config.out)
    resume_from = _resume_point(run_dir, resume)
    _seed(config, runtime)
    predictor = build_predictor(config.model, config.seed)
    stream = build_stream(config, predictor, runtime)
    loss_settings = build_loss_settings(config, predictor)
    predictor.model.to(runtime.device)
    set_training_mode(predictor.model, config.model.freeze)
    model = distributed.wrap(predictor.model, runtime, config.distributed)
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.steps)
    global_batch = runtime.world_size * config.batch_size * config.accumulation
    state = TrainerState(step=0, position=0, world_size=runtime.world_size, global_batch=global_batch)
    if resume_from is not None:
        state = restore(resume_from, predictor, model, optimizer, scheduler, runtime, config)
    elif runtime.is_main:
        _start_run_directory(run_dir, config)
    distributed.barrier(runtime)
    loader = build_loader(stream, state.step, config, runtime, predictor)
    log = RunLog(
        run_dir, enabled=runtime.is_main, start_step=state.step, total_steps=config.steps, progress=progress
    )
    if resume_from is not None:
        log.write({"kind": "note", "step": state.step, "resumed_from": str(resume_from)})
    autocast = build_autocast(config, runtime)
    started, timer, losses = time.perf_counter(), _Throughput(), []
    last_checkpoint = resume_from
    batches = iter(loader)
    for step in range(state.step, config.steps):
        micro_batches = [next(batches).to(runtime.device) for _ in range(config.accumulation)]
        # tokens, cut targets, unwritable annotations, weighted tokens: all ranks
        counts = _step_counts(micro_batches, loss_settings, runtime)
        loss_value = _forward_backward(
            model, micro_batches, counts[3].float(), loss_settings, autocast, runtime
        )
        if not math.isfinite(loss_value):
            _stop_on_bad_loss(step, loss_value, micro_batches, last_checkpoint)
        grad_norm = _clip(model, config.optim.grad_clip)
        learning_rate = optimizer.param_groups[0]["lr"]  # the rate this step trains at
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss_value)
        state.step, state.position = step + 1, (step + 1) * global_batch
        state.truncated_targets += int(counts[1])
        state.unwritable_annotations += int(counts[2])
        timer.add(global_batch, int(counts[0]))
        log.advance(1)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            _log_step(log, state, loss_value, grad_norm, learning_rate, timer, micro_batches)
        out_of_time = (
            config.max_time_minutes > 0 and time.perf_counter() - started > 60 * config.max_time_minutes
        )
        out_of_time = distributed.broadcast_flag(out_of_time, runtime)
        final = step + 1 == config.steps or out_of_time
        if config.data.eval and ((config.eval_every and (step + 1) % config.eval_every == 0) or final):
            _evaluate(predictor, model, config, runtime, state, log)
        if (step + 1) % config.checkpoint_every == 0 or final:
            reliance = image_reliance(model, micro_batches[0], loss_settings, autocast, runtime)
            log.write({"kind": "image_check", "step": state.step, "image_reliance": reliance})
            state.scheduler = scheduler.state_dict()
            last_checkpoint = save(predictor, model, optimizer, state, config, runtime, log)
        if out_of_time:
            log.write({"kind": "note", "step": state.step, "stopped": f"after {config.max_time_minutes} min"})
            break
    log.close()
    best = run_dir / checkpointing.CHECKPOINTS / checkpointing.BEST
    if runtime.is_main:
        write_summary(run_dir, config, state)
    return TrainResult(run_dir, state.step, last_checkpoint, best if best.is_dir() else None, losses)


def _step_counts(micro_batches: list[Batch], loss_settings: LossSettings, runtime: Runtime) -> torch.Tensor:
    """(target tokens, targets cut, annotations skipped, target tokens weighted by task) of the step's
    micro-batches, summed over all ranks."""
    rows = [
        [batch.target_tokens, batch.truncated, batch.unwritable, _weighted_tokens(batch, loss_settings)]
        for batch in micro_batches
    ]
    counts = torch.tensor(rows, dtype=torch.float64, device=runtime.device).sum(dim=0)
    return distributed.all_reduce_sum(counts, runtime)


def _weighted_tokens(batch: Batch, loss_settings: LossSettings) -> float:
    """The batch's real target tokens, each counted by its task's loss weight."""
    weights = loss_settings.row_weights(batch.tasks)
    if weights is None:
        return float(batch.target_tokens)
    tokens_per_row = (batch.labels != IGNORE_INDEX).sum(dim=1).cpu().double()  # (rows,)
    return float(tokens_per_row @ weights.double())


def _forward_backward(
    model: torch.nn.Module,
    micro_batches: list[Batch],
    tokens: torch.Tensor,
    loss_settings: LossSettings,
    autocast: contextlib.AbstractContextManager[Any],
    runtime: Runtime,
) -> float:
    """Forward and backward of every micro-batch; returns the step's mean token loss over all ranks.

    `tokens` counts each token by its task's loss weight (see `LossSettings.task_weights`), so the mean is
    the weighted one. Each micro-batch's summed loss is scaled by world_size / tokens: DDP and FSDP average
    gradients over ranks, so the accumulated gradient is that of the mean over every target token of the step.
    """
    step_loss = torch.zeros((), device=runtime.device)
    for index, batch in enumerate(micro_batches):
        weights = loss_settings.row_weights(batch.tasks)  # (rows,) or None
        chunk_weights = [None if weights is None else weights[rows] for rows in batch.chunk_rows]
        with distributed.gradient_sync(model, enabled=index == len(micro_batches) - 1), autocast:
            chunk_logits = model(batch.pixel_values, chunks=batch.chunks)["chunk_logits"]  # one vision pass
            summed = sum(
                summed_token_loss(logits, labels, loss_settings, row_weights)
                for logits, labels, row_weights in zip(
                    chunk_logits, batch.chunk_labels, chunk_weights, strict=True
                )
            )
            loss = summed * runtime.world_size / tokens.clamp(min=1)
        loss.backward()
        step_loss += loss.detach()
    return float(distributed.all_reduce_sum(step_loss, runtime)) / runtime.world_size


# Builders: everything the loop needs, each in one place.


def build_stream(config: TrainConfig, predictor: Predictor, runtime: Runtime) -> TrainingStream | Curriculum:
    """The training stream over `data.train` with the resolved task mixture and target budget, after the
    `data.curriculum` lessons when there are any.

    Raises:
        DatasetError: `data.train`, a lesson or `data.eval` unreadable, or the mixture asking for tasks the data
            lacks.
    """
    limit = predictor.model.config.text.max_position_embeddings
    budget = min(config.data.max_target_tokens or limit, limit)
    prompt_room = limit - predictor.model.config.num_image_tokens  # the encoder reads image tokens + prompt

    def stream_over(directory: str) -> TrainingStream:
        stream = TrainingStream(
            directory, predictor.tokenizer, predictor.image_processing.size, {},
            examples_per_image=config.data.examples_per_image, max_target_tokens=budget,
            max_prompt_tokens=prompt_room, seed=config.seed, shuffle=config.data.shuffle,
            mean=predictor.image_processing.mean, std=predictor.image_processing.std,
        )  # fmt: skip
        stream.mixture = resolve_mixture(stream.dataset, config.data.mixture)
        return stream

    final = stream_over(config.data.train)
    if config.data.eval:  # opened now: a missing one must stop the run before training, not after it
        open_dataset(config.data.eval)
    if not config.data.curriculum:
        return final
    images_per_step = runtime.world_size * config.batch_size * config.accumulation  # positions a step reads
    curriculum = config.data.curriculum.items()
    lessons = [(stream_over(directory), steps * images_per_step) for directory, steps in curriculum]
    return Curriculum(lessons, final)


def build_loader(stream: TrainingStream | Curriculum, start_step: int, config: TrainConfig, runtime: Runtime,
                 predictor: Predictor) -> DataLoader[Any]:  # fmt: skip
    sampler = StepSampler(start_step, config.steps, rank=runtime.rank, world_size=runtime.world_size,
                          batch_size=config.batch_size, accumulation=config.accumulation)  # fmt: skip
    tokenizer = predictor.tokenizer
    start_token = predictor.generation.decoder_start_token_id
    start_token = tokenizer.eos_token_id if start_token is None else start_token

    def collate_batch(samples: list[Any]) -> Batch:
        return collate(samples, tokenizer.pad_token_id, start_token, config.data.length_chunks)

    # Its own generator: a DataLoader draws a seed when it starts iterating, which from the global RNG would
    # shift the dropout draws of a resumed run against an uninterrupted one.
    return DataLoader(stream, batch_sampler=sampler, collate_fn=collate_batch, num_workers=config.data.num_workers,
                      persistent_workers=config.data.num_workers > 0,
                      generator=torch.Generator().manual_seed(config.seed))  # fmt: skip


def build_loss_settings(config: TrainConfig, predictor: Predictor) -> LossSettings:
    smoothing = config.optim.location_smoothing
    return LossSettings(
        label_smoothing=config.optim.label_smoothing,
        location_smoothing=smoothing,
        location_smoothing_radius=config.optim.location_smoothing_radius,
        first_location_id=location_range(predictor.tokenizer) if smoothing > 0 else -1,
        task_weights=dict(config.optim.task_loss_weights),
    )


def build_autocast(config: TrainConfig, runtime: Runtime) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA ("auto" or "bfloat16"); float32 everywhere else."""
    wants_bf16 = config.precision == "bfloat16" or (
        config.precision == "auto" and runtime.device.type == "cuda"
    )
    if wants_bf16:
        return torch.autocast(runtime.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _seed(config: TrainConfig, runtime: Runtime) -> None:
    # Each rank draws its own dropout masks; the data draws depend on stream positions, not on these.
    torch.manual_seed(config.seed * 1000 + runtime.rank)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


# Checkpoints and resume.


def _resume_point(run_dir: Path, resume: bool | str) -> Path | None:
    if resume is False:
        if checkpointing.latest_checkpoint(run_dir) is not None:
            raise ConfigError(
                f"{run_dir} already holds checkpoints; resume it (--resume) or choose another out"
            )
        return None
    if resume is True:
        return checkpointing.latest_checkpoint(run_dir)  # None: nothing saved yet, start fresh
    path = Path(resume)
    if not path.is_dir():
        raise ConfigError(f"resume: {path} is not a checkpoint directory")
    return path


def _start_run_directory(run_dir: Path, config: TrainConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", config.to_json())


def save(predictor: Predictor, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainerState,
         config: TrainConfig, runtime: Runtime, log: RunLog) -> Path:  # fmt: skip
    """Gathers the full state (a collective under FSDP) and writes a checkpoint from rank 0."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    gathered, optimizer_state = get_state_dict(model, optimizer, options=options)
    model_state = typing.cast(dict[str, torch.Tensor], gathered)
    rng_states = distributed.gather_rng_states(runtime)
    run_dir = Path(config.out)
    path = checkpointing.checkpoint_path(run_dir, state.step)
    adapters = None
    if config.model.lora_rank > 0:  # serve merged weights; keep the factors to resume from
        adapters = adapter_state(model_state)
        model_state = merged_state(model_state, config.model.lora_alpha / config.model.lora_rank)
    if runtime.is_main:
        snapshot = Snapshot(
            model_state,
            optimizer_state,
            rng_states,
            state,
            config.to_dict(),
            adapters,
        )
        checkpointing.save_checkpoint(predictor, snapshot, run_dir)
        if state.best.get("step") == state.step:
            checkpointing.keep_best(run_dir, path)
        checkpointing.prune(run_dir, config.keep_last)
        log.write({"kind": "checkpoint", "step": state.step, "path": str(path)})
    distributed.barrier(runtime)
    return path


def restore(path: Path, predictor: Predictor, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, runtime: Runtime, config: TrainConfig) -> TrainerState:  # fmt: skip
    """Loads a training checkpoint into the (wrapped) model, optimizer and schedule, and this rank's RNG."""
    snapshot = checkpointing.load_checkpoint(path)
    trainer = snapshot.trainer
    global_batch = runtime.world_size * config.batch_size * config.accumulation
    if trainer.global_batch != global_batch:
        raise ConfigError(
            f"{path} was made with {trainer.global_batch} images per step, this run takes {global_batch}: "
            "the data position would not carry over; keep world size x batch_size x accumulation"
        )
    weights = _resume_weights(snapshot, predictor, path)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=typing.cast(dict[str, Any], weights),
        optim_state_dict=snapshot.optimizer_state,
        options=StateDictOptions(full_state_dict=True),
    )
    scheduler.load_state_dict(trainer.scheduler)
    if trainer.world_size == runtime.world_size:
        rng = snapshot.rng_states[runtime.rank]
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and runtime.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], runtime.device)
    if runtime.is_main:
        checkpointing.remove_staging_leftovers(Path(config.out))
    return trainer


def _resume_weights(snapshot: Snapshot, predictor: Predictor, path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the model's state dict, from the checkpoint, checked against the model's shapes."""
    current = predictor.model.state_dict()
    if (
        snapshot.adapters is not None
    ):  # LoRA: the base weights are the init's, unchanged; the factors carry over
        wanted = {name for name in current if is_adapter(name)}
        same_names = set(snapshot.adapters) == wanted
        if not same_names or any(snapshot.adapters[name].shape != current[name].shape for name in wanted):
            raise CheckpointError(
                f"{path}: its LoRA adapters do not match this run's (model.lora_targets/rank)"
            )
        return current | snapshot.adapters
    weights = untie(snapshot.model_state)
    check_state(weights, expected_tensors(predictor.model), str(path / "model.safetensors"))
    # torch.distributed.checkpoint loads strictly, tied aliases included: give each alias the shared table.
    return {name: weights[SHARED if name in TIED_ALIASES else name] for name in current}


def _stop_on_bad_loss(step: int, value: float, batches: list[Batch], last_checkpoint: Path | None) -> None:
    images = [image_id for batch in batches for image_id in batch.image_ids]
    kept = (
        f"the last good checkpoint is {last_checkpoint}"
        if last_checkpoint
        else "no checkpoint was written yet"
    )
    raise TrainingError(
        f"non-finite loss ({value}) at step {step + 1}, on the batch of images {', '.join(images[:16])}"
        f"{' ...' if len(images) > 16 else ''}; no weight was updated; {kept}"
    )


def _clip(model: torch.nn.Module, max_norm: float) -> float:
    parameters = [p for p in model.parameters() if p.grad is not None]
    if not parameters:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # FSDP2 returns a DTensor
        norm = norm.full_tensor()
    return float(norm)


# Logging and evaluation.


class _Throughput:
    """Samples and target tokens per second since the last report."""

    def __init__(self) -> None:
        self.samples = self.tokens = 0
        self.since = time.perf_counter()

    def add(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens

    def take(self) -> tuple[float, float]:
        elapsed = max(time.perf_counter() - self.since, 1e-9)
        rates = self.samples / elapsed, self.tokens / elapsed
        self.samples = self.tokens = 0
        self.since = time.perf_counter()
        return rates


def _log_step(log: RunLog, state: TrainerState, loss: float, grad_norm: float, learning_rate: float,
              timer: _Throughput, batches: list[Batch]) -> None:  # fmt: skip
    samples_per_s, tokens_per_s = timer.take()
    tasks: dict[str, int] = {}
    for batch in batches:
        for task, count in batch.task_counts.items():
            tasks[task] = tasks.get(task, 0) + count
    log.write({"kind": "train", "step": state.step, "loss": loss, "lr": learning_rate, "grad_norm": grad_norm,
               "samples_per_s": samples_per_s, "tokens_per_s": tokens_per_s,
               "truncated_targets": state.truncated_targets, "unwritable_annotations": state.unwritable_annotations,
               "examples_by_task": tasks})  # fmt: skip
    log.postfix({"loss": f"{loss:.3f}", "img/s": f"{samples_per_s:.1f}", "tok/s": f"{tokens_per_s:.0f}"})


def _evaluate(predictor: Predictor, model: torch.nn.Module, config: TrainConfig, runtime: Runtime,
              state: TrainerState, log: RunLog) -> None:  # fmt: skip
    """Evaluates on rank 0 and records the best; the other ranks wait."""
    settings = EvaluationSettings.from_config(config, predictor)
    result = evaluate_checkpoint(predictor, model, settings, runtime)
    set_training_mode(predictor.model, config.model.freeze)
    if runtime.is_main and result is not None:
        log.write({"kind": "eval", "step": state.step, **result.flat, "score": result.score})
        log.message(f"step {state.step}: eval score {result.score:.4f}")
        if not state.best or result.score > state.best["value"]:
            state.best = {"step": state.step, "metric": "score", "value": result.score}
    best = [state.best]
    if runtime.distributed:
        torch.distributed.broadcast_object_list(best, src=0)
    state.best = best[0]
