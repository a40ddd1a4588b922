"""The original microsoft (remote-code) Florence-2 tensor names, rebuilt from transformers-native ones (test-only).

The renames are the inverse of transformers' official conversion script, so a native state dict can be written
in the original layout and read back through omnivis's remote-code key map.
"""

from __future__ import annotations

import re

import torch

# native suffix inside a spatial/channel block -> original suffix
_BLOCK_RENAMES = {
    "spatial_block": {
        "conv1": "conv1.fn.dw", "norm1": "window_attn.norm", "window_attn.qkv": "window_attn.fn.qkv",
        "window_attn.proj": "window_attn.fn.proj", "conv2": "conv2.fn.dw", "norm2": "ffn.norm",
        "ffn.fc1": "ffn.fn.net.fc1", "ffn.fc2": "ffn.fn.net.fc2",
    },
    "channel_block": {
        "conv1": "conv1.fn.dw", "norm1": "channel_attn.norm", "channel_attn.qkv": "channel_attn.fn.qkv",
        "channel_attn.proj": "channel_attn.fn.proj", "conv2": "conv2.fn.dw", "norm2": "ffn.norm",
        "ffn.fc1": "ffn.fn.net.fc1", "ffn.fc2": "ffn.fn.net.fc2",
    },
}  # fmt: skip
_PROJECTOR = {
    "model.multi_modal_projector.image_proj_norm.weight": "image_proj_norm.weight",
    "model.multi_modal_projector.image_proj_norm.bias": "image_proj_norm.bias",
    "model.multi_modal_projector.image_position_embed.row_embeddings.weight": "image_pos_embed.row_embeddings.weight",
    "model.multi_modal_projector.image_position_embed.column_embeddings.weight": "image_pos_embed.column_embeddings.weight",
    "model.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed": "visual_temporal_embed.pos_idx_to_embed",
}


def native_vision_key_to_remote(key: str) -> str:
    """`convs.0.conv.weight` -> `convs.0.proj.weight`; block names -> their `.fn` / `.fn.dw` originals."""
    match = re.fullmatch(r"convs\.(\d+)\.conv\.(weight|bias)", key)
    if match:
        return f"convs.{match[1]}.proj.{match[2]}"
    match = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(spatial_block|channel_block)\.(.+)\.(weight|bias)", key)
    if match:
        stage, block, kind, inner, leaf = match.groups()
        return f"blocks.{stage}.{block}.{kind}.{_BLOCK_RENAMES[kind][inner]}.{leaf}"
    return key  # convs.N.norm.* keep their names


def native_to_remote_code(state: dict[str, torch.Tensor], remote_vocab: int | None = None) -> dict[str, torch.Tensor]:
    """A native state dict in original names; `remote_vocab` truncates the (padded) vocabulary."""
    remote: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if remote_vocab is not None and key.endswith(("shared.weight", "embed_tokens.weight", "lm_head.weight")):
            tensor = tensor[:remote_vocab]
        if key.startswith("model.vision_tower."):
            remote["vision_tower." + native_vision_key_to_remote(key.removeprefix("model.vision_tower."))] = tensor
        elif key == "model.multi_modal_projector.image_projection.weight":
            remote["image_projection"] = tensor.t().contiguous()
        elif key in _PROJECTOR:
            remote[_PROJECTOR[key]] = tensor
        elif key.startswith("model.language_model."):
            remote["language_model.model." + key.removeprefix("model.language_model.")] = tensor
        elif key == "lm_head.weight":
            remote["language_model.lm_head.weight"] = tensor
        else:
            raise KeyError(f"no original name known for {key}")
    vocab = remote["language_model.model.shared.weight"].shape[0]
    remote["language_model.final_logits_bias"] = torch.zeros(1, vocab)
    return remote
