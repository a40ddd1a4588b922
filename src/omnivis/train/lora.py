"""LoRA adapters (peft) for fine-tuning on a small GPU: only low-rank updates of chosen projections train.

LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") replaces W x by W x + s B A x
with A (r x in), B (out x r), s = alpha / r, and W frozen. peft wraps each target `nn.Linear` in place: its
weight moves to `<name>.base_layer.weight`, the factors live at `<name>.lora_A.default.weight` and
`<name>.lora_B.default.weight`.

Checkpoints stay servable: `model.safetensors` holds the merged weights W + s B A under the plain names,
which `omnivis.load` reads like any other model, and `adapters.safetensors` holds the factors, which a
resumed run loads on top of the unchanged base weights.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from omnivis.errors import ConfigError
from omnivis.train.config import ModelSettings

ADAPTERS_FILE = "adapters.safetensors"
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])\.default\.weight$")
_BASE = ".base_layer."


def add_adapters(model: nn.Module, settings: ModelSettings) -> None:
    """Wraps `settings.lora_targets` in LoRA adapters of rank `lora_rank`, in place; only adapters train.

    Raises:
        ConfigError: peft is not installed, or no module matches the targets.
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as error:
        raise ConfigError("model.lora_rank > 0 needs peft: pip install 'omnivis[lora]'") from error
    names = {
        name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)
    }
    if not set(settings.lora_targets) & names:
        raise ConfigError(
            f"model.lora_targets {list(settings.lora_targets)} match no linear layer of the model"
        )
    config = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,  # type: ignore[arg-type]  # peft annotates int, computes with floats
        target_modules=list(settings.lora_targets),
        lora_dropout=0.0,
    )
    inject_adapter_in_model(config, model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_adapter(name))


def is_adapter(name: str) -> bool:
    return _LORA_KEY.match(name) is not None


def merged_state(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A LoRA-wrapped model's state dict as the plain model's: W + scaling * B @ A under each original name.

    Args:
        state: The wrapped model's state dict (base_layer and lora_A/lora_B entries).
        scaling: lora_alpha / lora_rank.
    """
    factors: dict[str, dict[str, torch.Tensor]] = {}
    merged: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        match = _LORA_KEY.match(name)
        if match:
            factors.setdefault(match["module"], {})[match["factor"]] = tensor
        else:
            merged[name.replace(_BASE, ".")] = tensor
    for module, pair in factors.items():
        weight = merged[f"{module}.weight"]
        update = (pair["B"].float() @ pair["A"].float()) * scaling  # (out, in)
        merged[f"{module}.weight"] = (weight.float() + update).to(weight.dtype)
    return merged


def adapter_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The LoRA factors alone, for a resumable checkpoint."""
    return {name: tensor for name, tensor in state.items() if is_adapter(name)}
