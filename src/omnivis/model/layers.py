"""Small building blocks shared by the transformer stacks: stochastic depth and the two-layer MLP.

Both reproduce the arithmetic of the transformers-native Florence-2 checkpoint exactly, so that a model built
from them gives the reference's numbers (including, in training mode, the same random drop decisions for the
same random seed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omnivis.errors import InputError


class DropPath(nn.Module):
    """Stochastic depth: during training, zero a residual branch for whole samples at random.

    A kept sample's branch is scaled by ``1 / keep_probability`` so the expected value is unchanged; in eval
    mode, or with a rate of 0, the branch passes through untouched and no random number is drawn.

    Args:
        drop_rate: Probability of dropping the branch for a given sample, in ``[0, 1)``.
    """

    def __init__(self, drop_rate: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise InputError(f"drop_rate must lie in [0, 1), got {drop_rate}")
        self.drop_rate = drop_rate

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        """Drop or rescale ``branch`` (batch first, any trailing shape)."""
        if self.drop_rate == 0.0 or not self.training:
            return branch
        keep_probability = 1.0 - self.drop_rate
        # One decision per sample, broadcast over every other dimension.
        mask_shape = (branch.shape[0],) + (1,) * (branch.ndim - 1)
        # floor(uniform + keep) is 1 with probability keep: drawn this way (in the branch's dtype) to consume the
        # random stream exactly as the reference does.
        keep_mask = torch.floor(
            torch.rand(mask_shape, dtype=branch.dtype, device=branch.device) + keep_probability
        )  # (batch, 1, ...)
        return branch.div(keep_probability) * keep_mask

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}"


class MLP(nn.Module):
    """Position-wise feed-forward network: ``fc2(gelu(fc1(x)))`` with the exact (erf) GELU.

    Args:
        width: Input and output channels.
        hidden_width: Channels of the hidden layer.
    """

    def __init__(self, width: int, hidden_width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden_width)
        self.fc2 = nn.Linear(hidden_width, width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Map ``(..., width)`` to ``(..., width)``."""
        return self.fc2(F.gelu(self.fc1(tokens)))  # (..., width)
