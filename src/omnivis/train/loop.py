"""The training loop: one function, readable top to bottom; every piece of setup is a named builder.

    from omnivis.train import RECIPES, train
    result = train(RECIPES["tiny-world-cpu"]())

Setup lives in `builders` (stream, loader, model, optimizer), `tower_tagging` (the tower's own losses, when
kept) and `resume` (save and restore). One optimizer step: read this rank's micro-batches, count the step's
target tokens over all ranks, run each micro-batch forward and backward with its summed loss scaled by
world_size / tokens (DDP and FSDP average gradients over ranks, so the result is the gradient of the step's
mean token loss), stop on a non-finite loss before any weight changes, clip, step AdamW and the schedule, log,
evaluate, checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from omnivis.errors import TrainingError
from omnivis.model.florence import IGNORE_INDEX
from omnivis.predictor import Predictor
from omnivis.train import checkpointing, distributed
from omnivis.train.builders import (
    build_autocast,
    build_loader,
    build_loss_settings,
    build_stream,
    build_training_model,
    seed_everything,
)
from omnivis.train.checkpointing import TrainerState
from omnivis.train.config import TrainConfig, validate
from omnivis.train.data import Batch
from omnivis.train.distributed import Runtime
from omnivis.train.evaluation import EvaluationSettings, evaluate_checkpoint
from omnivis.train.image_check import image_reliance
from omnivis.train.loss import LossSettings, summed_token_loss
from omnivis.train.model_setup import build_predictor, set_training_mode
from omnivis.train.monitor import RunLog
from omnivis.train.resume import restore, resume_point, save, start_run_directory
from omnivis.train.summary import write_summary
from omnivis.train.tower_tagging import TowerTagging, build_tower_tagging


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
    resume_from = resume_point(run_dir, resume)
    seed_everything(config, runtime)
    predictor = build_predictor(config.model, config.seed)
    tagging = build_tower_tagging(config, predictor)  # None unless tagging.weight > 0
    stream = build_stream(config, predictor, runtime, tagging)
    loss_settings = build_loss_settings(config, predictor)
    model, optimizer, scheduler = build_training_model(config, predictor, runtime)
    global_batch = runtime.world_size * config.batch_size * config.accumulation
    state = TrainerState(step=0, position=0, world_size=runtime.world_size, global_batch=global_batch)
    if resume_from is not None:
        state = restore(resume_from, predictor, model, optimizer, scheduler, runtime, config)
    elif runtime.is_main:
        start_run_directory(run_dir, config)
    distributed.barrier(runtime)
    loader = build_loader(stream, state.step, config, runtime, predictor)
    log = RunLog(run_dir, enabled=runtime.is_main, start_step=state.step, total_steps=config.steps,
                 progress=progress)  # fmt: skip
    if resume_from is not None:
        log.write({"kind": "note", "step": state.step, "resumed_from": str(resume_from)})
    autocast = build_autocast(config, runtime)
    started, timer, losses, last_checkpoint = time.perf_counter(), _Throughput(), [], resume_from
    batches = iter(loader)
    for step in range(state.step, config.steps):
        micro_batches = [next(batches).to(runtime.device) for _ in range(config.accumulation)]
        # tokens, cut targets, unwritable annotations, weighted tokens: all ranks
        counts = _step_counts(micro_batches, loss_settings, runtime)
        loss_value, tagging_value = _forward_backward(
            model, micro_batches, counts[3].float(), loss_settings, autocast, runtime, tagging, global_batch
        )
        if not math.isfinite(loss_value + tagging_value):
            _stop_on_bad_loss(step, loss_value + tagging_value, micro_batches, last_checkpoint)
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
        if state.step % config.log_every == 0 or state.step == config.steps:
            _log_step(log, state, (loss_value, tagging_value if tagging else None), grad_norm, learning_rate, timer,
                      micro_batches)  # fmt: skip
        out_of_time = _out_of_time(started, config, runtime)
        final = state.step == config.steps or out_of_time
        if config.data.eval and ((config.eval_every and state.step % config.eval_every == 0) or final):
            _evaluate(predictor, model, config, runtime, state, log)
        if state.step % config.checkpoint_every == 0 or final:
            reliance = image_reliance(model, micro_batches[0], loss_settings, autocast, runtime)
            log.write({"kind": "image_check", "step": state.step, "image_reliance": reliance})
            state.scheduler = scheduler.state_dict()
            last_checkpoint = save(predictor, model, optimizer, state, config, runtime, log, tagging)
        if out_of_time:
            log.write({"kind": "note", "step": state.step, "stopped": f"after {config.max_time_minutes} min"})
            break
    log.close()
    best = run_dir / checkpointing.CHECKPOINTS / checkpointing.BEST
    if runtime.is_main:
        write_summary(run_dir, config, state)
    return TrainResult(run_dir, state.step, last_checkpoint, best if best.is_dir() else None, losses)


def _out_of_time(started: float, config: TrainConfig, runtime: Runtime) -> bool:
    """Whether `max_time_minutes` has run out, as rank 0 sees it (so every rank stops at the same step)."""
    limit = config.max_time_minutes
    return distributed.broadcast_flag(limit > 0 and time.perf_counter() - started > 60 * limit, runtime)


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
    tagging: TowerTagging | None,
    images: int,
) -> tuple[float, float]:
    """Forward and backward of every micro-batch; returns the step's mean token loss over all ranks, and its
    mean tagging loss per image (0 without `tagging`).

    `tokens` counts each token by its task's loss weight (see `LossSettings.task_weights`), so the mean is
    the weighted one. Each micro-batch's summed loss is scaled by world_size / tokens: DDP and FSDP average
    gradients over ranks, so the accumulated gradient is that of the mean over every target token of the step.
    The tagging losses, summed over a micro-batch's images, are scaled alike by world_size / `images` (the
    step's images over all ranks).
    """
    step_loss = torch.zeros(2, device=runtime.device)  # (token loss, tagging loss)
    heads = None if tagging is None else tagging.heads
    for index, batch in enumerate(micro_batches):
        weights = loss_settings.row_weights(batch.tasks)  # (rows,) or None
        chunk_weights = [None if weights is None else weights[rows] for rows in batch.chunk_rows]
        with distributed.gradient_sync(model, enabled=index == len(micro_batches) - 1), autocast:
            outputs = model(batch.pixel_values, chunks=batch.chunks, feature_heads=heads)  # one vision pass
            summed = sum(
                summed_token_loss(logits, labels, loss_settings, row_weights)
                for logits, labels, row_weights in zip(
                    outputs["chunk_logits"], batch.chunk_labels, chunk_weights, strict=True
                )
            )
            loss = summed * runtime.world_size / tokens.clamp(min=1)
            tower_loss = torch.zeros((), device=runtime.device)
            if tagging is not None and batch.tagging is not None:
                tower_sum = tagging.summed_loss(outputs["feature_outputs"], batch.tagging)
                tower_loss = tower_sum * runtime.world_size / images
        (loss + tower_loss).backward()
        step_loss += torch.stack([loss.detach(), tower_loss.detach()])
    language, tower = distributed.all_reduce_sum(step_loss, runtime).tolist()
    return language / runtime.world_size, tower / runtime.world_size


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


def _log_step(log: RunLog, state: TrainerState, losses: tuple[float, float | None], grad_norm: float,
              learning_rate: float, timer: _Throughput, batches: list[Batch]) -> None:  # fmt: skip
    """One metrics line: the mean token loss (`loss`) and, when kept, the mean tagging loss per image."""
    loss, tagging_loss = losses
    samples_per_s, tokens_per_s = timer.take()
    tasks: dict[str, int] = {}
    for batch in batches:
        for task, count in batch.task_counts.items():
            tasks[task] = tasks.get(task, 0) + count
    tagging = {} if tagging_loss is None else {"tagging_loss": tagging_loss}
    log.write({"kind": "train", "step": state.step, "loss": loss, **tagging, "lr": learning_rate,
               "grad_norm": grad_norm, "samples_per_s": samples_per_s, "tokens_per_s": tokens_per_s,
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
