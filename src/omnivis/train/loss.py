"""The language-modelling loss every task shares (paper, section 3), summed so ranks and micro-batches add up.

The loss of an optimizer step is the mean over every target token of the step: all micro-batches, all ranks.
Each micro-batch therefore returns its token losses *summed*; the loop divides by the step's token count,
known before the first forward pass. Averaging per micro-batch instead would weigh a token of a short batch
more than one of a long batch, and 2 ranks would then not train like 1 process with twice the batch.

A task's tokens can weigh more than one (`task_weights`): the loss is then the weighted mean. A VQA answer is
a token or two besides its start and end, a detection target dozens, so by the token a short-answer task has
little say in the gradient however often it is drawn; weighting its tokens gives it a say without spending
compute on more of its examples.

Two smoothings are offered. `label_smoothing` is the usual uniform one. `location_smoothing` spreads part of a
location token's target over the neighbouring bins (a triangular kernel), since `<loc_411>` for a true
`<loc_412>` is almost right, and plain cross-entropy punishes it as hard as `<loc_900>`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from omnivis.model.florence import IGNORE_INDEX
from omnivis.tasks.locations import NUM_BINS
from omnivis.tokenizer import Tokenizer


@dataclass(frozen=True)
class LossSettings:
    """How token targets are smoothed; the defaults give plain cross-entropy."""

    label_smoothing: float = 0.0
    location_smoothing: float = 0.0
    location_smoothing_radius: int = 2
    first_location_id: int = -1  # id of `<loc_0>`; the bins' ids are contiguous from it (-1: none)
    task_weights: Mapping[str, float] = field(default_factory=dict)  # task -> weight of its tokens (else 1)

    def row_weights(self, tasks: Sequence[str]) -> torch.Tensor | None:
        """(rows,) the weight of each row's tokens, by its task; None when every task weighs 1."""
        if not self.task_weights:
            return None
        return torch.tensor([self.task_weights.get(task, 1.0) for task in tasks], dtype=torch.float32)


def location_range(tokenizer: Tokenizer) -> int:
    """The id of `<loc_0>`, checking that the 1,000 location tokens have contiguous ids (all known vocabularies do).

    Raises:
        ValueError: The ids are not contiguous, so neighbouring bins cannot be found by arithmetic.
    """
    first = tokenizer.location_token_id(0)
    if tokenizer.location_token_id(NUM_BINS - 1) != first + NUM_BINS - 1:
        raise ValueError("the tokenizer's location tokens do not have contiguous ids")
    return first


def summed_token_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    settings: LossSettings,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The sum over real target tokens of their (smoothed) cross-entropy, in float32.

    Args:
        logits: (B, T, vocab) decoder logits.
        labels: (B, T) target ids, IGNORE_INDEX where padded.
        settings: The smoothing.
        row_weights: (B,) a weight for each row's tokens (see `LossSettings.row_weights`); None: 1.

    Returns:
        A scalar: divide it by the number of real tokens of the whole step (weighted by the same weights)
        for the mean.
    """
    real = labels != IGNORE_INDEX  # (B, T)
    log_probs = F.log_softmax(logits[real].float(), dim=-1)  # (M, vocab), real tokens only
    targets = labels[real]  # (M,)
    loss = -log_probs.gather(1, targets[:, None])[:, 0]  # (M,) plain cross-entropy
    if settings.location_smoothing > 0 and settings.first_location_id >= 0:
        loss = _location_smoothed(loss, log_probs, targets, settings)
    if settings.label_smoothing > 0:
        uniform = -log_probs.mean(dim=-1)  # (M,) cross-entropy against the uniform distribution
        loss = (1 - settings.label_smoothing) * loss + settings.label_smoothing * uniform
    if row_weights is not None:
        token_weights = row_weights.to(loss.device)[:, None].expand_as(labels)[real]  # (M,) its row's weight
        loss = loss * token_weights
    return loss.sum()


def _location_smoothed(
    loss: torch.Tensor, log_probs: torch.Tensor, targets: torch.Tensor, settings: LossSettings
) -> torch.Tensor:
    """Cross-entropy against (1 - s) on the true bin + s spread over bins within the radius, by a triangle."""
    first, radius = settings.first_location_id, settings.location_smoothing_radius
    bins = targets - first  # (M,)
    is_location = (bins >= 0) & (bins < NUM_BINS)
    if not bool(is_location.any()):
        return loss
    offsets = torch.cat([torch.arange(-radius, 0), torch.arange(1, radius + 1)]).to(targets.device)  # (2r,)
    kernel = (radius + 1 - offsets.abs()).float()  # triangle: nearer bins get more
    rows = is_location.nonzero()[:, 0]
    neighbours = bins[rows, None] + offsets[None]  # (L, 2r)
    valid = (neighbours >= 0) & (neighbours < NUM_BINS)  # the image edge: bins beyond it do not exist
    weights = kernel[None] * valid  # (L, 2r)
    weights = weights / weights.sum(dim=1, keepdim=True)
    neighbour_ids = neighbours.clamp(0, NUM_BINS - 1) + first  # (L, 2r)
    neighbour_loss = -(log_probs[rows[:, None], neighbour_ids] * weights).sum(dim=1)  # (L,)
    smoothed = loss.clone()
    smoothed[rows] = (1 - settings.location_smoothing) * loss[
        rows
    ] + settings.location_smoothing * neighbour_loss
    return smoothed
