"""Does the model read the image? The loss with each example given another example's image, minus the loss.

A sequence-to-sequence model learning from scratch first learns its answers' language, and can settle there
for good: its vision tower collapses to one output for every image, and the text side learns to ignore it
(omnivis measured exactly this on the `tiny` preset: a shuffled batch scored the same to 6 digits). The loss
curve alone does not show it; this number does, at the cost of two forward passes at each checkpoint. Near 0
after the first few hundred steps means the run is not learning to see (see `omnivis pretrain tagging`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from omnivis.model.florence import IGNORE_INDEX
from omnivis.train import distributed
from omnivis.train.data import Batch
from omnivis.train.distributed import Runtime
from omnivis.train.loss import LossSettings, summed_token_loss


@torch.no_grad()
def image_reliance(
    model: torch.nn.Module,
    batch: Batch,
    loss_settings: LossSettings,
    autocast: contextlib.AbstractContextManager[Any],
    runtime: Runtime,
) -> float:
    """Mean token loss with the batch's images rotated by one, minus the true mean loss, over all ranks.

    Every rank must call it (FSDP gathers parameters in the forward). The model runs in eval mode (no dropout
    noise between the two passes) and is put back in the mode it was in.
    """
    was_training = {module: module.training for module in model.modules()}
    model.eval()
    try:
        images = batch.pixel_values.shape[0]
        rotated = torch.roll(torch.arange(images, device=batch.pixel_values.device), 1)
        losses = [_summed_loss(model, batch, pixels, loss_settings, autocast)
                  for pixels in (batch.pixel_values, batch.pixel_values[rotated])]  # fmt: skip
    finally:
        for module, training in was_training.items():
            module.train(training)
    tokens = sum(float((labels != IGNORE_INDEX).sum()) for labels in batch.chunk_labels)
    totals = distributed.all_reduce_sum(torch.stack([*losses, losses[0].new_tensor(tokens)]), runtime)
    return float((totals[1] - totals[0]) / totals[2].clamp(min=1))


def _summed_loss(
    model: torch.nn.Module,
    batch: Batch,
    pixels: torch.Tensor,
    loss_settings: LossSettings,
    autocast: contextlib.AbstractContextManager[Any],
) -> torch.Tensor:
    with autocast:
        chunk_logits = model(pixels, chunks=batch.chunks)["chunk_logits"]
        return sum(  # type: ignore[return-value]
            (summed_token_loss(logits, labels, loss_settings).float()
             for logits, labels in zip(chunk_logits, batch.chunk_labels, strict=True)),
            torch.zeros((), device=pixels.device),
        )  # fmt: skip
