"""The tower's tagging losses kept beside the language loss: heads checkpointed beside a servable model,
continued exactly on resume and by a later run, and bad settings named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import omnivis
from omnivis.errors import CheckpointError, ConfigError
from omnivis.train import RECIPES, TrainConfig, apply_overrides, smoke, train
from omnivis.train.monitor import read_events

TAGGING = ["tagging.weight=0.5", "tagging.word_weight=2.0", "batch_size=2", "data.examples_per_image=2",
           "deterministic=true", "model.dropout=0.1", "log_every=1"]  # fmt: skip


def _config(data: Path, out: Path, *overrides: str) -> TrainConfig:
    return apply_overrides(smoke(RECIPES["tiny-world-cpu"](), data=data, out=out), [*TAGGING, *overrides])


def _losses(run: Path) -> dict[int, tuple[float, float]]:
    return {e["step"]: (e["loss"], e["tagging_loss"]) for e in read_events(run) if e["kind"] == "train"}


def test_the_heads_train_and_are_checkpointed_beside_a_servable_model(world_train: Path,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    config = _config(world_train, tmp_path / "run", "steps=4", "optim.learning_rate=3e-3")
    result = train(config, progress=False)
    losses = _losses(tmp_path / "run")
    assert sorted(losses) == [1, 2, 3, 4] and all(tagging > 0 for _, tagging in losses.values())
    assert "Tagging loss" in (tmp_path / "run" / "summary.md").read_text()
    checkpoint = result.last_checkpoint
    assert checkpoint is not None
    weights = load_file(str(checkpoint / "model.safetensors"))
    assert not any(name.startswith("tagging_heads") for name in weights)
    heads = load_file(str(checkpoint / "heads.safetensors"))
    assert set(heads) == {"head.weight", "head.bias", "background_head.weight", "background_head.bias",
                          "cell_head.weight", "cell_head.bias"}  # fmt: skip
    assert (checkpoint / "tags.json").is_file() and (checkpoint / "classes.json").is_file()
    predictor = omnivis.load(checkpoint)  # an ordinary checkpoint: the heads are not part of the model
    assert not hasattr(predictor.model, "tagging_heads")
    # The heads learnt: the tagging loss of a repeated first step falls once the heads have trained.
    again = train(_config(world_train, tmp_path / "again", "steps=1", f"tagging.heads={checkpoint}"),
                  progress=False)  # fmt: skip
    assert again.steps == 1 and _losses(tmp_path / "again")[1][1] < losses[1][1]


def test_a_resumed_run_continues_the_heads_and_their_moments_exactly(world_train: Path,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    overrides = ("steps=5", "checkpoint_every=2", "keep_last=5")
    reference = train(_config(world_train, tmp_path / "reference", *overrides), progress=False)
    interrupted = tmp_path / "interrupted"
    train(_config(world_train, interrupted, *overrides), progress=False)
    for step in (4, 5):  # as if killed after the step-2 checkpoint
        shutil.rmtree(interrupted / "checkpoints" / f"step-{step:08d}")
    resumed = train(_config(world_train, interrupted, *overrides), resume=True, progress=False)
    assert resumed.steps == 5
    reference_losses = _losses(tmp_path / "reference")
    resumed_losses = {step: losses for step, losses in _losses(interrupted).items() if step > 2}
    assert resumed_losses == {step: reference_losses[step] for step in (3, 4, 5)}  # the same bits
    assert reference.last_checkpoint is not None and resumed.last_checkpoint is not None
    for name in ("heads.safetensors", "model.safetensors", "optimizer.safetensors"):
        expected = load_file(str(reference.last_checkpoint / name))
        final = load_file(str(resumed.last_checkpoint / name))
        assert expected.keys() == final.keys()
        assert all(torch.equal(expected[key], final[key]) for key in expected), name
    moments = load_file(str(resumed.last_checkpoint / "optimizer.safetensors"))
    assert any(key.startswith("state/tagging_heads.") for key in moments)


def test_bad_tagging_settings_and_checkpoints_without_heads_are_named(world_train: Path,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    with pytest.raises(ConfigError, match=r"tagging.weight must be >= 0, got -1"):
        _config(world_train, tmp_path / "run", "tagging.weight=-1")
    with pytest.raises(ConfigError, match=r"tagging.heads continues heads that tagging.weight=0 leaves out"):
        _config(world_train, tmp_path / "run", "tagging.weight=0", "tagging.heads=somewhere")
    with pytest.raises(ConfigError, match=r"teaches the tower, which LoRA \(model.lora_rank > 0\) leaves frozen"):
        _config(world_train, tmp_path / "run", "model.lora_rank=4")
    with pytest.raises(ConfigError, match=r"unknown config field 'tagging.words'"):
        _config(world_train, tmp_path / "run", "tagging.words=1")
    plain = train(_config(world_train, tmp_path / "plain", "steps=1", "tagging.weight=0"), progress=False)
    assert plain.last_checkpoint is not None and not (plain.last_checkpoint / "heads.safetensors").exists()
    no_heads = r"tagging.heads='.*step-00000001' holds no heads.safetensors or tags"
    with pytest.raises(ConfigError, match=no_heads):
        train(_config(world_train, tmp_path / "run", "steps=1", f"tagging.heads={plain.last_checkpoint}"),
              progress=False)  # fmt: skip
    # Resuming a run made without the heads, now asking for them, and the other way round: named.
    with pytest.raises(CheckpointError, match=r"step-00000001 holds no tagging heads .* this run keeps them"):
        train(_config(world_train, tmp_path / "plain", "steps=2"), resume=True, progress=False)
    tagged = train(_config(world_train, tmp_path / "tagged", "steps=1"), progress=False)
    assert tagged.last_checkpoint is not None
    with pytest.raises(CheckpointError, match=r"made keeping the tagging losses .* this run keeps none"):
        train(_config(world_train, tmp_path / "tagged", "steps=2", "tagging.weight=0"), resume=True,
              progress=False)  # fmt: skip
