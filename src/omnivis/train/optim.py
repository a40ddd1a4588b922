"""AdamW and its learning-rate schedule: linear warm-up, then cosine (or linear) decay, or constant.

Weight decay skips biases, norms and embedding tables (decaying them only shrinks what the model must
relearn); the vision tower may have its own peak rate, since a pre-trained encoder usually wants a lower one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from omnivis.errors import ConfigError
from omnivis.train.config import OptimSettings

VISION_PREFIX = "vision_tower."


def build_optimizer(model: nn.Module, settings: OptimSettings) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, in up to four groups: (vision or not) x (decayed or not)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_vision = name.startswith(VISION_PREFIX) and settings.vision_learning_rate > 0
        decayed = parameter.ndim >= 2 and "embed" not in name and "norm" not in name
        groups.setdefault((is_vision, decayed), []).append(parameter)
    if not groups:
        raise ConfigError("no trainable parameters: model.freeze covers the whole model")
    param_groups = [
        {
            "params": parameters,
            "lr": settings.vision_learning_rate if is_vision else settings.learning_rate,
            "weight_decay": settings.weight_decay if decayed else 0.0,
        }
        for (is_vision, decayed), parameters in sorted(groups.items())
    ]
    # foreach=False: the per-parameter loop gives the same bits whatever the grouping, which FSDP changes.
    return torch.optim.AdamW(param_groups, betas=settings.betas, eps=settings.eps, foreach=False)


def schedule_factor(settings: OptimSettings, total_steps: int) -> Callable[[int], float]:
    """The multiplier of each group's peak rate at optimizer step `step` (0-based)."""
    warmup = settings.warmup_steps
    floor = settings.min_learning_rate_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if settings.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if settings.schedule == "linear":
            return floor + (1 - floor) * (1 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: OptimSettings, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(settings, total_steps))
