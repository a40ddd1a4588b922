"""Reading and writing model weights: the two official Florence-2 layouts and omnivis's own.

Layouts in circulation:
- transformers-native (florence-community/Florence-2-*): `model.safetensors`, names `model.vision_tower.*`,
  `model.multi_modal_projector.*`, `model.language_model.*`, `lm_head.weight`; vocabulary padded to 51328.
- original remote-code (microsoft/Florence-2-*): fp16 `pytorch_model.bin`, DaViT names of the first release,
  `image_projection` stored transposed as a bare parameter, `language_model.model.*`, a zero `final_logits_bias`,
  vocabulary 51289.
- omnivis: `model.safetensors` with omnivis's own names (the native ones minus `model.`), `config.json` whose
  `format` is "omnivis".

Each layout is a pure key map onto omnivis's names; loading is strict and names every missing, unexpected or
mis-shaped tensor. safetensors is read first; a `.bin` only when no safetensors file exists, and only through
`torch.load(weights_only=True)`. No Python file in a checkpoint directory is ever imported.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from omnivis.errors import CheckpointError
from omnivis.model.davit import DaViTConfig, remote_code_to_native_vision_keys
from omnivis.model.florence import Florence2, FlorenceConfig
from omnivis.model.projector import ProjectorConfig
from omnivis.model.seq2seq import Seq2SeqConfig

# Names that alias `language_model.shared.weight` in a tied model; any subset may be stored.
TIED_ALIASES = ("language_model.encoder.embed_tokens.weight", "language_model.decoder.embed_tokens.weight", "lm_head.weight")
SHARED = "language_model.shared.weight"
SAFETENSORS_INDEX = "model.safetensors.index.json"


def native_to_omnivis(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers-native names -> omnivis names: everything but `lm_head` sits under `model.`."""
    return {key.removeprefix("model."): tensor for key, tensor in state.items()}


def remote_code_to_omnivis(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original remote-code names -> omnivis names (the same renames as the official conversion script)."""
    renamed: dict[str, torch.Tensor] = {}
    vision = {k.removeprefix("vision_tower."): v for k, v in state.items() if k.startswith("vision_tower.")}
    for key, tensor in remote_code_to_native_vision_keys(vision).items():
        renamed[f"vision_tower.{key}"] = tensor
    projector = {
        "image_proj_norm.weight": "multi_modal_projector.image_proj_norm.weight",
        "image_proj_norm.bias": "multi_modal_projector.image_proj_norm.bias",
        "image_pos_embed.row_embeddings.weight": "multi_modal_projector.image_position_embed.row_embeddings.weight",
        "image_pos_embed.column_embeddings.weight": "multi_modal_projector.image_position_embed.column_embeddings.weight",
        "visual_temporal_embed.pos_idx_to_embed": "multi_modal_projector.visual_temporal_embed.pos_idx_to_embed",
    }
    for key, tensor in state.items():
        if key.startswith("vision_tower."):
            continue
        if key == "image_projection":
            # Stored as (vision_dim, projection_dim) and applied as x @ W; nn.Linear keeps the transpose.
            renamed["multi_modal_projector.image_projection.weight"] = tensor.t().contiguous()
        elif key in projector:
            renamed[projector[key]] = tensor
        elif key == "language_model.final_logits_bias":
            if torch.count_nonzero(tensor):
                raise CheckpointError("language_model.final_logits_bias is non-zero; omnivis's LM head has no bias")
        elif key == "language_model.lm_head.weight":
            renamed["lm_head.weight"] = tensor
        elif key.startswith("language_model.model."):
            renamed["language_model." + key.removeprefix("language_model.model.")] = tensor
        else:
            renamed[key] = tensor  # left for the strict check to report by name
    return renamed


def untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Folds the tied embedding aliases into `language_model.shared.weight`, whichever of them were stored."""
    state = dict(state)
    stored = [name for name in (SHARED, *TIED_ALIASES) if name in state]
    if not stored:
        raise CheckpointError(f"no token embedding found: expected {SHARED} or one of {', '.join(TIED_ALIASES)}")
    reference = state[stored[0]]
    for name in stored[1:]:
        if state[name].shape != reference.shape or not torch.equal(state[name], reference):
            raise CheckpointError(f"{name} differs from {stored[0]}: omnivis ties input and output embeddings")
    for name in TIED_ALIASES:
        state.pop(name, None)
    state[SHARED] = reference
    return state


def expected_tensors(model: Florence2) -> dict[str, torch.Size]:
    """Name -> shape of every tensor a checkpoint must provide for `model` (tied aliases folded)."""
    return {k: v.shape for k, v in model.state_dict().items() if k not in TIED_ALIASES}


def check_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], source: str) -> None:
    """Raises one `CheckpointError` listing every missing, unexpected and mis-shaped tensor."""
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_preview(unexpected)}")
    reshaped = [
        f"{name} has shape {tuple(state[name].shape)}, the model expects {tuple(expected[name])}"
        for name in sorted(set(state) & set(expected))
        if state[name].shape != expected[name]
    ]
    limit = 8  # a wrong width mis-shapes hundreds of tensors; the first few say what is wrong
    problems += reshaped[:limit]
    if len(reshaped) > limit:
        problems.append(f"... ({len(reshaped) - limit} more mis-shaped tensors)")
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))


def _preview(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def read_weights(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The raw tensors of a checkpoint directory and the file they came from (safetensors first)."""
    single = directory / "model.safetensors"
    index = directory / SAFETENSORS_INDEX
    if single.exists():
        return _read_safetensors(single), single
    if index.exists():
        return _read_sharded(index), index
    pickled = directory / "pytorch_model.bin"
    if pickled.exists():
        return _read_weights_only_pickle(pickled), pickled
    raise CheckpointError(f"{directory} holds no weights: expected model.safetensors or pytorch_model.bin")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} is not a valid safetensors file: {error}") from None


def _read_sharded(index_path: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{index_path} is not a safetensors index: {error}") from None
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = (index_path.parent / shard).resolve()
        if shard_path.parent != index_path.parent.resolve():
            raise CheckpointError(f"{index_path} names a shard outside its directory: {shard}")
        state.update(_read_safetensors(shard_path))
    return state


def _read_weights_only_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} is not a weights-only PyTorch checkpoint (refused to unpickle it): {first_line}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat dict of tensors")
    return state


def load_state_into(model: Florence2, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly loads omnivis-named tensors (aliases allowed) into `model`, casting to its dtype."""
    state = untie(state)
    check_state(state, expected_tensors(model), source)
    model.load_state_dict(state, strict=False)  # strictness enforced above, with better messages
    model.tie_weights()


def save_weights(model: Florence2, path: Path) -> None:
    """Writes the weights as safetensors (tied aliases stored once), to `path`."""
    save_state(model.state_dict(), path)


def save_state(state: dict[str, torch.Tensor], path: Path) -> None:
    """Writes an omnivis-named state dict as safetensors, tied aliases stored once."""
    kept = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in TIED_ALIASES}
    save_file(kept, str(path), metadata={"format": "pt", "producer": "omnivis"})


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return value


def detect_layout(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> str:
    """"omnivis", "native" or "remote", from config.json and the tensor names."""
    if config.get("format") == "omnivis":
        return "omnivis"
    if any(key.startswith("model.vision_tower.") for key in weights):
        return "native"
    if any(key.startswith("vision_tower.") for key in weights) and "image_projection" in weights:
        return "remote"
    raise CheckpointError("unrecognised checkpoint layout: neither transformers-native nor original Florence-2 names")


def config_from_official(config: dict[str, Any], image_size: tuple[int, int], vocab_size: int) -> FlorenceConfig:
    """A `FlorenceConfig` from an official config.json, in either layout's spelling.

    The vocabulary size comes from the weights (51289 remote-code, 51328 native), not from the JSON.
    """
    vision, text = config.get("vision_config"), config.get("text_config")
    if not isinstance(vision, dict) or not isinstance(text, dict):
        raise CheckpointError("config.json lacks vision_config or text_config")
    try:
        embed_dims = tuple(vision.get("embed_dim") or vision["dim_embed"])
        grid = vision.get("max_position_embeddings") or vision.get("image_pos_embed", {}).get("max_pos_embeddings", 50)
        frames = vision.get("max_temporal_embeddings") or vision.get("visual_temporal_embedding", {}).get(
            "max_temporal_embeddings", 100
        )
        davit = DaViTConfig(
            embed_dims=embed_dims,
            depths=tuple(vision["depths"]),
            num_heads=tuple(vision["num_heads"]),
            num_groups=tuple(vision["num_groups"]),
            patch_sizes=tuple(vision.get("patch_size", (7, 3, 3, 3))),
            patch_strides=tuple(vision.get("patch_stride", (4, 2, 2, 2))),
            patch_paddings=tuple(vision.get("patch_padding", (3, 1, 1, 1))),
            patch_prenorm=tuple(vision.get("patch_prenorm", (False, True, True, True))),
            window_size=vision.get("window_size", 12),
            mlp_ratio=vision.get("mlp_ratio", 4.0),
            qkv_bias=vision.get("qkv_bias", True),
            drop_path_rate=vision.get("drop_path_rate", 0.1),
        )
        d_model = text["d_model"]
        projector = ProjectorConfig(
            vision_dim=embed_dims[-1],
            projection_dim=int(vision.get("projection_dim") or d_model),
            max_grid_positions=grid,
            max_temporal_embeddings=frames,
        )
        seq2seq = Seq2SeqConfig(
            vocab_size=vocab_size,
            d_model=d_model,
            encoder_layers=text["encoder_layers"],
            decoder_layers=text["decoder_layers"],
            encoder_attention_heads=text["encoder_attention_heads"],
            decoder_attention_heads=text["decoder_attention_heads"],
            encoder_ffn_dim=text["encoder_ffn_dim"],
            decoder_ffn_dim=text["decoder_ffn_dim"],
            max_position_embeddings=text["max_position_embeddings"],
            activation_function=text.get("activation_function", "gelu"),
            scale_embedding=text.get("scale_embedding", False),
            pad_token_id=text.get("pad_token_id", 1),
            dropout=text.get("dropout", 0.1),
            attention_dropout=text.get("attention_dropout", 0.0),
            activation_dropout=text.get("activation_dropout", 0.0),
        )
        return FlorenceConfig(vision=davit, projector=projector, text=seq2seq, image_size=image_size)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"config.json cannot describe a Florence-2 model: {error!r}") from None
