"""LoRA fine-tuning: merged weights against a hand computation, only adapters train, servable and resumable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import omnivis
from omnivis.errors import CheckpointError, ConfigError
from omnivis.train import RECIPES, apply_overrides, smoke, train
from omnivis.train.lora import adapter_state, merged_state
from omnivis.train.model_setup import build_predictor
from omnivis.train.monitor import read_events

pytest.importorskip("peft")


def test_merged_state_is_w_plus_scaled_b_a() -> None:
    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # (out 3, in 2)
    lora_a = torch.tensor([[1.0, -1.0]])  # (r 1, in 2)
    lora_b = torch.tensor([[2.0], [0.0], [-1.0]])  # (out 3, r 1)
    state = {
        "layer.q_proj.base_layer.weight": weight,
        "layer.q_proj.base_layer.bias": torch.tensor([0.5, 0.5, 0.5]),
        "layer.q_proj.lora_A.default.weight": lora_a,
        "layer.q_proj.lora_B.default.weight": lora_b,
        "layer.other.weight": torch.ones(2),
    }
    merged = merged_state(state, scaling=0.5)
    # B @ A = [[2, -2], [0, 0], [-1, 1]]; halved and added to W.
    expected = torch.tensor([[2.0, 1.0], [3.0, 4.0], [4.5, 6.5]])
    assert set(merged) == {"layer.q_proj.weight", "layer.q_proj.bias", "layer.other.weight"}
    assert torch.equal(merged["layer.q_proj.weight"], expected)
    assert set(adapter_state(state)) == {
        "layer.q_proj.lora_A.default.weight",
        "layer.q_proj.lora_B.default.weight",
    }


def _config(world_train: Path, out: Path, *overrides: str):
    base = smoke(RECIPES["tiny-world-cpu"](), data=world_train, out=out)
    return apply_overrides(
        base, ["model.lora_rank=4", "model.lora_alpha=8", "optim.learning_rate=1e-2", *overrides]
    )


def test_only_adapters_train_and_the_checkpoint_serves_the_merged_model(
    world_train: Path, tmp_path: Path
) -> None:
    config = _config(world_train, tmp_path / "run", "steps=2", "checkpoint_every=2")
    predictor = build_predictor(config.model, config.seed)
    trainable = [name for name, p in predictor.model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in name for name in trainable)
    result = train(config, progress=False)
    saved = load_file(str(result.last_checkpoint / "model.safetensors"))
    adapters = load_file(str(result.last_checkpoint / "adapters.safetensors"))
    assert not any("lora" in name or "base_layer" in name for name in saved)
    # The base weights did not move; the merged ones differ exactly by the adapters' update.
    initial = {name.replace(".base_layer.", "."): t for name, t in predictor.model.state_dict().items()}
    name = "language_model.encoder.layers.0.self_attn.q_proj"
    update = adapters[f"{name}.lora_B.default.weight"] @ adapters[f"{name}.lora_A.default.weight"] * 2.0
    assert update.abs().max() > 0
    torch.testing.assert_close(saved[f"{name}.weight"], initial[f"{name}.weight"] + update)
    torch.testing.assert_close(
        saved["language_model.encoder.layers.0.fc1.weight"],
        initial["language_model.encoder.layers.0.fc1.weight"],
        rtol=0,
        atol=0,
    )
    assert "<CAPTION>" in omnivis.load(result.last_checkpoint).run(
        torch.zeros(3, 40, 40).numpy().transpose(1, 2, 0).astype("uint8"),
        "<CAPTION>",
        max_new_tokens=4,
        num_beams=1,
    )


def test_a_lora_run_resumes_exactly(world_train: Path, tmp_path: Path) -> None:
    reference = train(_config(world_train, tmp_path / "a", "steps=4", "checkpoint_every=2"), progress=False)
    first = train(_config(world_train, tmp_path / "b", "steps=4", "checkpoint_every=2"), progress=False)
    shutil.rmtree(first.last_checkpoint)  # as if killed after the step-2 checkpoint
    resumed = train(
        _config(world_train, tmp_path / "b", "steps=4", "checkpoint_every=2"), resume=True, progress=False
    )
    losses = [
        {e["step"]: e["loss"] for e in read_events(run) if e["kind"] == "train"}
        for run in (tmp_path / "a", tmp_path / "b")
    ]
    assert losses[0] == losses[1] and resumed.steps == 4
    assert (
        load_file(str(resumed.last_checkpoint / "adapters.safetensors")).keys()
        == load_file(str(reference.last_checkpoint / "adapters.safetensors")).keys()
    )
    for name, tensor in load_file(str(resumed.last_checkpoint / "adapters.safetensors")).items():
        assert torch.equal(tensor, load_file(str(reference.last_checkpoint / "adapters.safetensors"))[name])
    with pytest.raises(CheckpointError, match="LoRA adapters do not match"):
        train(
            _config(world_train, tmp_path / "b", "steps=5", "model.lora_rank=2"), resume=True, progress=False
        )


def test_lora_settings_are_checked(world_train: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="match no linear layer"):
        train(_config(world_train, tmp_path / "run", "model.lora_targets=nothing_here"), progress=False)
    with pytest.raises(ConfigError, match="LoRA"):
        _config(world_train, tmp_path / "run", "distributed=fsdp")
