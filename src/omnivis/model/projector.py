"""From the DaViT feature map to visual tokens in the language model's width (Florence-2 paper, section 3).

The grid gets learned 2-D position embeddings (a row half and a column half) and a cosine "temporal" embedding
(Florence-2 treats an image as a one-frame video: frame 0's embedding is added to every token). The tokens become
one average-pooled token followed by the grid (1 + 24*24 = 577 at 768x768), then a bias-free linear projection and a
LayerNorm. Names match the official transformers-native checkpoint (`model.multi_modal_projector.*`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ProjectorConfig:
    vision_dim: int = 1024  # the last DaViT stage's channels
    projection_dim: int = 768  # the language model's d_model
    max_grid_positions: int = 50  # rows/columns the 2-D position table holds (24 are used at 768x768)
    max_temporal_embeddings: int = 100  # frames the cosine table holds; images use frame 0 only


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """The (length, dim) cosine position table: sines in even channels, cosines in odd ones."""
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / half))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * frequencies[None, :]  # (length, half)
    table = torch.empty(length, dim)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table


class PositionEmbedding2D(nn.Module):
    """Learned absolute positions: a column embedding and a row embedding, concatenated along channels."""

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        self.row_embeddings = nn.Embedding(max_positions, dim // 2)
        self.column_embeddings = nn.Embedding(max_positions, dim - dim // 2)

    def forward(self, height: int, width: int) -> torch.Tensor:
        if max(height, width) > self.row_embeddings.num_embeddings:
            raise ValueError(
                f"feature grid {height}x{width} exceeds the position table ({self.row_embeddings.num_embeddings})"
            )
        device = self.row_embeddings.weight.device
        columns = self.column_embeddings(torch.arange(width, device=device))  # (W, C/2)
        rows = self.row_embeddings(torch.arange(height, device=device))  # (H, C/2)
        grid = torch.cat([columns[None].expand(height, -1, -1), rows[:, None].expand(-1, width, -1)], dim=-1)
        return grid.permute(2, 0, 1)  # (C, H, W)

    @torch.no_grad()
    def fill_sinusoids_(self) -> None:
        """Sets both tables to the sinusoid code of their index (amplitude 1), in place.

        A from-scratch alternative to BART's normal init (std 0.02): added to vision features of spread ~1,
        positions that small leave the cells nearly indistinguishable until training grows them, while the
        code tells every cell from its neighbours from the first step (MAE's 2-D sin-cos table, learnable).
        """
        for table in (self.row_embeddings, self.column_embeddings):
            code = sinusoid_table(table.num_embeddings, table.embedding_dim)  # (positions, C/2)
            table.weight.copy_(code.to(table.weight.dtype))

    @torch.no_grad()
    def resample_(self, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> None:
        """Stretches the rows and columns a grid used over a new grid's, linearly, in place.

        For a change of input size (the high-resolution stage): position i of the old grid meant the
        fraction i / (old - 1) of the image, and keeps meaning it on the new grid, rather than its index.
        """
        for table, old, new in ((self.row_embeddings, old_grid[0], new_grid[0]),
                                (self.column_embeddings, old_grid[1], new_grid[1])):  # fmt: skip
            if max(old, new) > table.num_embeddings:
                raise ValueError(f"grid side {max(old, new)} exceeds the position table ({table.num_embeddings})")
            used = table.weight[:old].T[None]  # (1, C/2, old)
            stretched = nn.functional.interpolate(used, size=new, mode="linear", align_corners=True)  # (1, C/2, new)
            table.weight[:new] = stretched[0].T


class TemporalEmbedding(nn.Module):
    """The fixed cosine table, kept as a buffer because the official checkpoints store it."""

    def __init__(self, max_frames: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("pos_idx_to_embed", sinusoid_table(max_frames, dim))


class ImageProjector(nn.Module):
    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        self.image_position_embed = PositionEmbedding2D(config.max_grid_positions, config.vision_dim)
        self.visual_temporal_embed = TemporalEmbedding(config.max_temporal_embeddings, config.vision_dim)
        self.image_projection = nn.Linear(config.vision_dim, config.projection_dim, bias=False)
        self.image_proj_norm = nn.LayerNorm(config.projection_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Maps a (B, C, H, W) feature map to (B, 1 + H*W, projection_dim) visual tokens."""
        _, _, height, width = features.shape
        features = features + self.image_position_embed(height, width).to(features.dtype)
        tokens = features.flatten(2).transpose(1, 2)  # (B, H*W, C)
        tokens = tokens + self.visual_temporal_embed.pos_idx_to_embed[0].to(tokens.dtype)  # frame 0 of a 1-frame video
        pooled = tokens.mean(dim=1, keepdim=True)  # (B, 1, C)
        tokens = torch.cat([pooled, tokens], dim=1)  # (B, 1 + H*W, C)
        return self.image_proj_norm(self.image_projection(tokens))
