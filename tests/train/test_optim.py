"""AdamW groups and the learning-rate schedule, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from omnivis.errors import ConfigError
from omnivis.model.presets import create_model
from omnivis.train.config import OptimSettings
from omnivis.train.model_setup import freeze
from omnivis.train.optim import build_optimizer, build_scheduler, schedule_factor


def test_cosine_schedule_values() -> None:
    factor = schedule_factor(
        OptimSettings(warmup_steps=4, schedule="cosine", min_learning_rate_ratio=0.1), 14
    )
    assert [factor(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0)
    assert factor(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # halfway: 0.55
    assert factor(14) == pytest.approx(0.1)
    assert factor(20) == pytest.approx(0.1)  # past the end it stays at the floor


def test_linear_and_constant_schedules() -> None:
    linear = schedule_factor(OptimSettings(warmup_steps=0, schedule="linear"), 10)
    assert [linear(step) for step in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    constant = schedule_factor(OptimSettings(warmup_steps=2, schedule="constant"), 10)
    assert [constant(step) for step in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]


def test_scheduler_drives_the_optimizer_rates() -> None:
    model = torch.nn.Linear(2, 2)
    settings = OptimSettings(learning_rate=0.1, warmup_steps=2, schedule="linear")
    optimizer = build_optimizer(model, settings)
    scheduler = build_scheduler(optimizer, settings, total_steps=4)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.05, 0.1, 0.1, 0.05])


def test_groups_decay_only_matrices_and_skip_frozen_parameters() -> None:
    model = create_model("tiny", vocab_size=300)
    freeze(model, ("vision",))
    settings = OptimSettings(learning_rate=1e-3, vision_learning_rate=1e-4, weight_decay=0.05)
    optimizer = build_optimizer(model, settings)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            name = names[id(parameter)]
            assert not name.startswith("vision_tower."), "a frozen parameter is in the optimizer"
            decays = parameter.ndim >= 2 and "embed" not in name and "norm" not in name
            assert group["weight_decay"] == (0.05 if decays else 0.0), name
            assert group["lr"] == 1e-3
    trained = sum(len(group["params"]) for group in optimizer.param_groups)
    assert trained == sum(1 for _, p in model.named_parameters() if p.requires_grad)


def test_the_vision_tower_gets_its_own_rate() -> None:
    model = create_model("tiny", vocab_size=300)
    optimizer = build_optimizer(model, OptimSettings(learning_rate=1e-3, vision_learning_rate=1e-5))
    vision = {id(p) for n, p in model.named_parameters() if n.startswith("vision_tower.")}
    for group in optimizer.param_groups:
        in_vision = {id(p) in vision for p in group["params"]}
        assert len(in_vision) == 1
        assert group["lr"] == (1e-5 if in_vision.pop() else 1e-3)


def test_everything_frozen_is_an_error() -> None:
    model = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        build_optimizer(model, OptimSettings())
