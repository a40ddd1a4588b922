"""Builders: everything the training loop needs, each made in one place.

`build_stream` (records -> examples, the task mixture, curriculum lessons), `build_loader` (this rank's
batches from a step on), `build_training_model` (the network on its device, frozen parts set, wrapped for
DDP/FSDP, with AdamW and its schedule), `build_loss_settings`, `build_autocast`, `seed_everything`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.utils.data import DataLoader

from omnivis.data.dataset import open_dataset
from omnivis.predictor import Predictor
from omnivis.train import distributed
from omnivis.train.config import TrainConfig
from omnivis.train.data import Batch, Curriculum, StepSampler, TrainingStream, collate, resolve_mixture
from omnivis.train.distributed import Runtime
from omnivis.train.loss import LossSettings, location_range
from omnivis.train.model_setup import set_training_mode
from omnivis.train.optim import build_optimizer, build_scheduler
from omnivis.train.tower_tagging import TowerTagging


def build_stream(config: TrainConfig, predictor: Predictor, runtime: Runtime,
                 tagging: TowerTagging | None = None) -> TrainingStream | Curriculum:  # fmt: skip
    """The training stream over `data.train` with the resolved task mixture and target budget, after the
    `data.curriculum` lessons when there are any; with `tagging`, each image also carries its tagging targets.

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
            record_targets=None if tagging is None else tagging.targets,
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
    """This rank's batches from `start_step` on: `accumulation` micro-batches of `batch_size` images a step."""
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


def build_training_model(
    config: TrainConfig, predictor: Predictor, runtime: Runtime
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The predictor's network on this rank's device with its frozen parts set, wrapped as
    `distributed.strategy` says, and the optimizer and schedule over the wrapped parameters."""
    predictor.model.to(runtime.device)
    set_training_mode(predictor.model, config.model.freeze)
    model = distributed.wrap(predictor.model, runtime, config.distributed)
    optimizer = build_optimizer(model, config.optim)
    return model, optimizer, build_scheduler(optimizer, config.optim, config.steps)


def build_loss_settings(config: TrainConfig, predictor: Predictor) -> LossSettings:
    """Label and location smoothing and the per-task loss weights, as `optim` asks."""
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


def seed_everything(config: TrainConfig, runtime: Runtime) -> None:
    """Seeds this rank's RNG and, in deterministic mode, makes every kernel deterministic."""
    # Each rank draws its own dropout masks; the data draws depend on stream positions, not on these.
    torch.manual_seed(config.seed * 1000 + runtime.rank)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
