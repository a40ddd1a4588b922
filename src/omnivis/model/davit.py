"""DaViT, Florence-2's image encoder (Florence-2 paper, section 3; DaViT, Ding et al. 2022).

Four stages, each a strided convolution ("conv embedding") followed by ``depth`` dual-attention blocks. A
dual block is a spatial block (attention among the tokens of each 12x12 window) then a channel block
(attention among the channels of each group, over the whole image). Both are built the same way: a depthwise
3x3 convolution as a residual, pre-norm attention as a residual, another depthwise convolution residual, and a
pre-norm MLP residual.

The arithmetic and the parameter names follow the transformers-native Florence-2 checkpoint (keys under
``model.vision_tower.``), so its vision-tower tensors load into `DaViT` with no renaming;
`remote_code_to_native_vision_keys` renames the tensors of Microsoft's original remote-code checkpoint.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from omnivis.errors import CheckpointError, InputError
from omnivis.model.layers import MLP, DropPath


@dataclass
class DaViTConfig:
    """Shape of a DaViT; the defaults are Florence-2-base's vision tower.

    Per-stage fields (``embed_dims`` to ``patch_prenorm``) hold one entry per stage.
    """

    in_channels: int = 3
    embed_dims: tuple[int, ...] = (128, 256, 512, 1024)
    depths: tuple[int, ...] = (1, 1, 9, 1)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)  # window-attention heads
    num_groups: tuple[int, ...] = (4, 8, 16, 32)  # channel-attention groups; channels attend within a group
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    patch_strides: tuple[int, ...] = (4, 2, 2, 2)
    patch_paddings: tuple[int, ...] = (3, 1, 1, 1)
    # Stage 0 normalises after its convolution (its input is the 3-channel image), later stages before theirs.
    patch_prenorm: tuple[bool, ...] = (False, True, True, True)
    window_size: int = 12  # windows are window_size x window_size tokens; the grid is zero-padded to fit
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.1  # stochastic depth of the last block, ramped linearly from 0 (training only)

    def __post_init__(self) -> None:
        # JSON round trips (asdict -> json -> DaViTConfig(**values)) hand back lists.
        for name in _PER_STAGE_FIELDS:
            setattr(self, name, tuple(getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        num_stages = len(self.embed_dims)
        lengths = {name: len(getattr(self, name)) for name in _PER_STAGE_FIELDS}
        if num_stages == 0 or any(length != num_stages for length in lengths.values()):
            raise InputError(f"DaViTConfig per-stage fields need one entry per stage, got lengths {lengths}")
        for name in ("in_channels", "window_size", "embed_dims", "depths", "num_heads", "num_groups",
                     "patch_sizes", "patch_strides"):
            values = getattr(self, name)
            if any(value < 1 for value in (values if isinstance(values, tuple) else (values,))):
                raise InputError(f"DaViTConfig.{name} must be positive, got {values}")
        if any(padding < 0 for padding in self.patch_paddings):
            raise InputError(f"DaViTConfig.patch_paddings must be >= 0, got {self.patch_paddings}")
        for stage, (width, heads, groups) in enumerate(zip(self.embed_dims, self.num_heads, self.num_groups)):
            if width % heads or width % groups:
                raise InputError(
                    f"DaViTConfig stage {stage}: embed_dim {width} must be divisible by num_heads {heads} "
                    f"and num_groups {groups}"
                )
        if self.mlp_ratio <= 0:
            raise InputError(f"DaViTConfig.mlp_ratio must be positive, got {self.mlp_ratio}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise InputError(f"DaViTConfig.drop_path_rate must lie in [0, 1), got {self.drop_path_rate}")


_PER_STAGE_FIELDS = (
    "embed_dims", "depths", "num_heads", "num_groups", "patch_sizes", "patch_strides", "patch_paddings",
    "patch_prenorm",
)


def florence2_base_vision() -> DaViTConfig:
    """Vision tower of Florence-2-base (microsoft/Florence-2-base ``vision_config``)."""
    return DaViTConfig()


def florence2_large_vision() -> DaViTConfig:
    """Vision tower of Florence-2-large (microsoft/Florence-2-large ``vision_config``): base's widths x2."""
    return DaViTConfig(
        embed_dims=(256, 512, 1024, 2048), num_heads=(8, 16, 32, 64), num_groups=(8, 16, 32, 64)
    )


def _normalize_channels(norm: nn.LayerNorm, feature_map: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of a ``(batch, channels, height, width)`` map."""
    # Permute there and back (not a copy to contiguous) to keep the reference's memory layout, which the
    # following convolution's kernel choice, and so its rounding, depends on.
    return norm(feature_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (batch, channels, height, width)


def _depthwise_conv3x3(width: int) -> nn.Conv2d:
    return nn.Conv2d(width, width, kernel_size=3, padding=1, groups=width)


class ConvEmbed(nn.Module):
    """A stage's entry: a strided convolution that changes the width, with a LayerNorm before or after it."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, prenorm: bool
    ) -> None:
        super().__init__()
        self.prenorm = prenorm
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(in_channels if prenorm else out_channels)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, in_channels, H, W)`` to ``(batch, out_channels, H', W')``."""
        if self.prenorm:
            feature_map = _normalize_channels(self.norm, feature_map)
        feature_map = self.conv(feature_map)  # (batch, out_channels, H', W')
        if not self.prenorm:
            feature_map = _normalize_channels(self.norm, feature_map)
        return feature_map


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping square windows of the token grid.

    Args:
        width: Channels of a token.
        num_heads: Attention heads; ``width`` must be a multiple.
        window_size: Side of a window, in tokens.
        qkv_bias: Whether the query/key/value projection has a bias.
    """

    def __init__(self, width: int, num_heads: int, window_size: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Attend within windows: ``(batch, height * width, channels)`` in and out, tokens row-major."""
        batch, _, channels = tokens.shape
        size = self.window_size
        pad_bottom, pad_right = -height % size, -width % size
        grid = tokens.view(batch, height, width, channels)
        # Padding tokens are zeros after the norm and are not masked: as keys they still take part (their key
        # and value are the projection biases), exactly as in the reference model.
        grid = F.pad(grid, (0, 0, 0, pad_right, 0, pad_bottom))  # (batch, padded_h, padded_w, channels)
        rows, columns = (height + pad_bottom) // size, (width + pad_right) // size
        windows = grid.view(batch, rows, size, columns, size, channels).permute(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(batch * rows * columns, size * size, channels)  # (windows, tokens, chans)

        head_dim = channels // self.num_heads
        qkv = self.qkv(windows).view(windows.shape[0], size * size, 3, self.num_heads, head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (windows, heads, tokens, head_dim)
        attended = F.scaled_dot_product_attention(query, key, value, scale=head_dim**-0.5)
        attended = attended.transpose(1, 2).reshape(windows.shape)  # (windows, tokens, channels)
        windows = self.proj(attended)

        grid = windows.view(batch, rows, columns, size, size, channels).permute(0, 1, 3, 2, 4, 5)
        grid = grid.reshape(batch, rows * size, columns * size, channels)  # (batch, padded_h, padded_w, ch)
        return grid[:, :height, :width].reshape(batch, height * width, channels)


class ChannelAttention(nn.Module):
    """Group channel attention: within each group, channels attend to channels across all image positions.

    Args:
        width: Channels of a token.
        num_groups: Channel groups; ``width`` must be a multiple.
        qkv_bias: Whether the query/key/value projection has a bias.
    """

    def __init__(self, width: int, num_groups: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mix channels: ``(batch, num_tokens, channels)`` in and out."""
        batch, num_tokens, channels = tokens.shape
        group_width = channels // self.num_groups
        qkv = self.qkv(tokens).view(batch, num_tokens, 3, self.num_groups, group_width)
        # Transposed attention: a group's channels are the sequence and the image positions their features.
        query, key, value = qkv.permute(2, 0, 3, 4, 1).unbind(0)  # each (batch, groups, group_width, tokens)
        # Each score sums over num_tokens products, so scale by num_tokens**-0.5 (not the group width) to keep
        # the softmax temperature independent of the image size.
        mixed = F.scaled_dot_product_attention(query, key, value, scale=num_tokens**-0.5)
        mixed = mixed.permute(0, 3, 1, 2).reshape(batch, num_tokens, channels)  # (batch, tokens, channels)
        # The reshape above is a strided view; a contiguous copy makes `proj` round exactly as the reference.
        return self.proj(mixed.contiguous())


class _ConvAttentionBlock(nn.Module):
    """Residual skeleton of the spatial and channel blocks; subclasses build the layers and `attend`."""

    conv1: nn.Conv2d
    norm1: nn.LayerNorm
    conv2: nn.Conv2d
    norm2: nn.LayerNorm
    ffn: MLP
    drop_path: DropPath

    def attend(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The attention branch for normalised tokens ``(batch, height * width, channels)``."""
        raise NotImplementedError

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, channels, height, width)`` to the same shape."""
        batch, channels, height, width = feature_map.shape
        feature_map = self.conv1(feature_map) + feature_map
        tokens = feature_map.flatten(2).transpose(1, 2)  # (batch, height * width, channels)
        tokens = tokens + self.drop_path(self.attend(self.norm1(tokens), height, width))
        feature_map = tokens.transpose(1, 2).view(batch, channels, height, width)

        feature_map = self.conv2(feature_map) + feature_map
        tokens = feature_map.flatten(2).transpose(1, 2)  # (batch, height * width, channels)
        tokens = tokens + self.drop_path(self.ffn(self.norm2(tokens)))
        return tokens.transpose(1, 2).view(batch, channels, height, width)


class SpatialBlock(_ConvAttentionBlock):
    """Residual block whose attention mixes the tokens of each window (`WindowAttention`)."""

    def __init__(self, config: DaViTConfig, stage: int, drop_path_rate: float) -> None:
        super().__init__()
        width = config.embed_dims[stage]
        self.conv1 = _depthwise_conv3x3(width)
        self.norm1 = nn.LayerNorm(width)
        heads = config.num_heads[stage]
        self.window_attn = WindowAttention(width, heads, config.window_size, config.qkv_bias)
        self.conv2 = _depthwise_conv3x3(width)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = MLP(width, int(width * config.mlp_ratio))
        self.drop_path = DropPath(drop_path_rate)

    def attend(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.window_attn(tokens, height, width)


class ChannelBlock(_ConvAttentionBlock):
    """Residual block whose attention mixes the channels of each group (`ChannelAttention`)."""

    def __init__(self, config: DaViTConfig, stage: int, drop_path_rate: float) -> None:
        super().__init__()
        width = config.embed_dims[stage]
        self.conv1 = _depthwise_conv3x3(width)
        self.norm1 = nn.LayerNorm(width)
        self.channel_attn = ChannelAttention(width, config.num_groups[stage], config.qkv_bias)
        self.conv2 = _depthwise_conv3x3(width)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = MLP(width, int(width * config.mlp_ratio))
        self.drop_path = DropPath(drop_path_rate)

    def attend(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.channel_attn(tokens)


class DualAttentionBlock(nn.Module):
    """One DaViT block: a spatial block then a channel block."""

    def __init__(
        self, config: DaViTConfig, stage: int, spatial_drop_rate: float, channel_drop_rate: float
    ) -> None:
        super().__init__()
        self.spatial_block = SpatialBlock(config, stage, spatial_drop_rate)
        self.channel_block = ChannelBlock(config, stage, channel_drop_rate)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, channels, height, width)`` to the same shape."""
        return self.channel_block(self.spatial_block(feature_map))


def drop_path_schedule(config: DaViTConfig) -> list[list[tuple[float, float]]]:
    """Stochastic-depth rates as ``[stage][block] -> (spatial rate, channel rate)``.

    The rate grows linearly from 0 to ``config.drop_path_rate`` over all residual blocks in network order (a
    spatial and a channel block per depth), computed in float32 like the reference so the rates match exactly.
    """
    rates = torch.linspace(0, config.drop_path_rate, 2 * sum(config.depths), device="cpu").tolist()
    schedule, offset = [], 0
    for depth in config.depths:
        pairs = [(rates[offset + 2 * block], rates[offset + 2 * block + 1]) for block in range(depth)]
        schedule.append(pairs)
        offset += 2 * depth
    return schedule


class DaViT(nn.Module):
    """Florence-2's vision tower: ``(batch, 3, H, W)`` pixels to a ``(batch, C, H/32, W/32)`` feature map.

    Any input size is accepted; sizes that are not multiples of 32 round up (``ceil(H / 32)``).

    Args:
        config: Architecture; see `DaViTConfig` and the presets `florence2_base_vision` and
            `florence2_large_vision`.
    """

    def __init__(self, config: DaViTConfig) -> None:
        super().__init__()
        self.config = config
        self.num_features = config.embed_dims[-1]
        self.reduction = math.prod(config.patch_strides)
        self.grad_checkpointing = False
        in_widths = (config.in_channels, *config.embed_dims[:-1])
        self.convs = nn.ModuleList(
            ConvEmbed(
                in_widths[stage], config.embed_dims[stage], config.patch_sizes[stage],
                config.patch_strides[stage], config.patch_paddings[stage], config.patch_prenorm[stage],
            )
            for stage in range(len(config.embed_dims))
        )
        self.blocks = nn.ModuleList(
            nn.ModuleList(DualAttentionBlock(config, stage, *block_rates) for block_rates in stage_rates)
            for stage, stage_rates in enumerate(drop_path_schedule(config))
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each dual block's activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Same as `forward_features`."""
        return self.forward_features(pixels)

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map ``(batch, num_features, ceil(H / 32), ceil(W / 32))``.

        Args:
            pixels: Normalised images ``(batch, in_channels, H, W)``, any floating dtype; they are cast to the
                model's dtype.
        """
        *_, last = self._run_stages(pixels, last_stage=len(self.convs) - 1)
        return last

    def forward_intermediates(
        self, pixels: torch.Tensor, indices: int | Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Feature maps after the chosen stages, in stage order.

        Stage ``i`` gives ``(batch, embed_dims[i], H_i, W_i)`` with ``H_i = ceil(H / 2**(i + 2))``.

        Args:
            pixels: Normalised images ``(batch, in_channels, H, W)``.
            indices: ``None`` for every stage, an int ``n`` for the last ``n`` stages, or stage indices
                (negative ones count from the end).
        """
        stages = self._stage_indices(indices)
        outputs = self._run_stages(pixels, last_stage=stages[-1])
        return [feature_map for stage, feature_map in enumerate(outputs) if stage in stages]

    def _stage_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        num_stages = len(self.convs)
        if indices is None:
            return list(range(num_stages))
        if isinstance(indices, int):
            if not 1 <= indices <= num_stages:
                raise InputError(f"indices as a count must lie in [1, {num_stages}], got {indices}")
            return list(range(num_stages - indices, num_stages))
        if len(indices) == 0 or any(not -num_stages <= index < num_stages for index in indices):
            raise InputError(
                f"stage indices must be non-empty and lie in [-{num_stages}, {num_stages}), got {indices}"
            )
        return sorted({index % num_stages for index in indices})

    def _run_stages(self, pixels: torch.Tensor, last_stage: int) -> Iterator[torch.Tensor]:
        """Yield the feature map after each stage up to ``last_stage``."""
        self._check_pixels(pixels)
        feature_map = pixels.to(self.convs[0].conv.weight.dtype)
        for conv, stage_blocks in zip(self.convs[: last_stage + 1], self.blocks[: last_stage + 1]):
            feature_map = conv(feature_map)  # (batch, embed_dim, H_i, W_i)
            for block in stage_blocks:
                if self.grad_checkpointing and torch.is_grad_enabled():
                    # The RNG state is saved and restored: the recomputation repeats the same drop decisions.
                    feature_map = checkpoint(block, feature_map, use_reentrant=False)
                else:
                    feature_map = block(feature_map)
            yield feature_map

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        if not isinstance(pixels, torch.Tensor):
            raise InputError(f"pixels must be a torch.Tensor, got {type(pixels).__name__}")
        expected = f"(batch, {self.config.in_channels}, height, width)"
        if pixels.ndim != 4 or pixels.shape[1] != self.config.in_channels:
            raise InputError(f"pixels must have shape {expected}, got {tuple(pixels.shape)}")
        if pixels.shape[0] == 0 or pixels.shape[2] == 0 or pixels.shape[3] == 0:
            raise InputError(f"pixels must not be empty, got shape {tuple(pixels.shape)}")
        if not pixels.is_floating_point():
            raise InputError(f"pixels must be normalised floating-point values, got dtype {pixels.dtype}")


# Microsoft's remote code wraps each sub-layer in a residual `PreNorm(norm, fn)`, keeps convolutions in a `dw`
# attribute and the MLP in a `net` Sequential. Names inside `blocks.<stage>.<block>.<kind>.`, per block kind:
_REMOTE_SHARED_PARTS = {
    "conv1.fn.dw": "conv1", "conv2.fn.dw": "conv2", "ffn.norm": "norm2", "ffn.fn.net.fc1": "ffn.fc1",
    "ffn.fn.net.fc2": "ffn.fc2",
}  # fmt: skip
_REMOTE_BLOCK_PARTS = {
    kind: {
        f"{attention}.norm": "norm1", f"{attention}.fn.qkv": f"{attention}.qkv",
        f"{attention}.fn.proj": f"{attention}.proj", **_REMOTE_SHARED_PARTS,
    }  # fmt: skip
    for kind, attention in (("spatial_block", "window_attn"), ("channel_block", "channel_attn"))
}
_REMOTE_CONV_KEY = re.compile(r"convs\.(\d+)\.(proj|norm)\.(weight|bias)")
_REMOTE_BLOCK_KEY = re.compile(r"blocks\.(\d+\.\d+)\.(spatial_block|channel_block)\.(.+)\.(weight|bias)")


def _native_vision_key(remote_key: str) -> str | None:
    """The native name of one remote-code tensor name, or None if it is not one."""
    conv_match = _REMOTE_CONV_KEY.fullmatch(remote_key)
    if conv_match:
        stage, layer, tensor = conv_match.groups()
        return f"convs.{stage}.{'conv' if layer == 'proj' else 'norm'}.{tensor}"
    block_match = _REMOTE_BLOCK_KEY.fullmatch(remote_key)
    if block_match:
        position, kind, part, tensor = block_match.groups()
        native_part = _REMOTE_BLOCK_PARTS[kind].get(part)
        if native_part is not None:
            return f"blocks.{position}.{kind}.{native_part}.{tensor}"
    return None


def remote_code_to_native_vision_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a remote-code (``trust_remote_code``) Florence-2 vision tower's tensors to `DaViT`'s names.

    Args:
        state_dict: The vision tower's tensors, keys relative to the tower (``convs.0.proj.weight``,
            ``blocks.0.0.spatial_block.conv1.fn.dw.weight``, ...): strip a ``vision_tower.`` prefix first.

    Returns:
        The same tensors (not copied) under native names, e.g. ``convs.0.conv.weight``,
        ``blocks.0.0.spatial_block.conv1.weight``.

    Raises:
        CheckpointError: A key is not a remote-code DaViT tensor name.
    """
    renamed = {}
    for remote_key, tensor in state_dict.items():
        native_key = _native_vision_key(remote_key)
        if native_key is None:
            raise CheckpointError(f"unexpected key in a remote-code Florence-2 vision tower: {remote_key!r}")
        renamed[native_key] = tensor
    return renamed

