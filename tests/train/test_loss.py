"""The summed token loss, checked against PyTorch's cross_entropy and hand-built target distributions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from omnivis.loading import bundled_tokenizer
from omnivis.model.florence import IGNORE_INDEX
from omnivis.train.loss import LossSettings, location_range, summed_token_loss

VOCAB = 1100
FIRST = 50  # <loc_0> sits at id 50 in these tests; bins 0..999 are ids 50..1049


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, VOCAB, generator=generator)
    labels = torch.tensor([[4, FIRST + 0, FIRST + 500, FIRST + 999, IGNORE_INDEX],
                           [7, FIRST + 1, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
                           [FIRST + 998, 2, 3, 9, 1060]])  # fmt: skip
    return logits, labels


def test_plain_loss_is_the_sum_of_cross_entropy_over_real_tokens() -> None:
    logits, labels = _batch()
    expected = F.cross_entropy(
        logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    assert torch.allclose(summed_token_loss(logits, labels, LossSettings()), expected, rtol=1e-6)


def test_label_smoothing_matches_pytorch() -> None:
    logits, labels = _batch(1)
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                               reduction="sum", label_smoothing=0.1)  # fmt: skip
    assert torch.allclose(
        summed_token_loss(logits, labels, LossSettings(label_smoothing=0.1)), expected, rtol=1e-6
    )


def _explicit_target(label: int, smoothing: float, radius: int) -> torch.Tensor:
    """The target distribution written out: 1 - s on the bin, s over neighbours by weight radius + 1 - |k|."""
    target = torch.zeros(VOCAB)
    bin_index = label - FIRST
    if not 0 <= bin_index < 1000:
        target[label] = 1.0
        return target
    target[label] = 1 - smoothing
    neighbours = {
        bin_index + k: radius + 1 - abs(k)
        for k in range(-radius, radius + 1)
        if k and 0 <= bin_index + k < 1000
    }
    total = sum(neighbours.values())
    for neighbour, weight in neighbours.items():
        target[FIRST + neighbour] += smoothing * weight / total
    return target


def test_location_smoothing_is_cross_entropy_against_the_spread_target() -> None:
    logits, labels = _batch(2)
    settings = LossSettings(location_smoothing=0.2, location_smoothing_radius=2, first_location_id=FIRST)
    expected = torch.zeros(())
    for row in range(labels.shape[0]):
        for column in range(labels.shape[1]):
            label = int(labels[row, column])
            if label == IGNORE_INDEX:
                continue
            target = _explicit_target(label, 0.2, 2)
            expected += -(target * F.log_softmax(logits[row, column], dim=-1)).sum()
    assert torch.allclose(summed_token_loss(logits, labels, settings), expected, rtol=1e-5)


def test_hand_computed_edge_bin_weights() -> None:
    # <loc_0> with radius 2: neighbours 1 (weight 2) and 2 (weight 1) only -> 2/3 and 1/3 of the smoothing.
    target = _explicit_target(FIRST, 0.3, 2)
    assert torch.allclose(target[FIRST : FIRST + 3], torch.tensor([0.7, 0.2, 0.1]))
    logits = torch.zeros(1, 1, VOCAB)
    logits[0, 0, FIRST : FIRST + 3] = torch.tensor([2.0, 1.0, 0.5])
    log_z = torch.logsumexp(logits[0, 0], dim=0)
    expected = -(0.7 * (2.0 - log_z) + 0.2 * (1.0 - log_z) + 0.1 * (0.5 - log_z))
    settings = LossSettings(location_smoothing=0.3, location_smoothing_radius=2, first_location_id=FIRST)
    assert torch.allclose(summed_token_loss(logits, torch.tensor([[FIRST]]), settings), expected, rtol=1e-6)


def test_gradients_flow_and_padding_gets_none() -> None:
    logits, labels = _batch(3)
    logits.requires_grad_(True)
    settings = LossSettings(location_smoothing=0.1, label_smoothing=0.05, first_location_id=FIRST)
    summed_token_loss(logits, labels, settings).backward()
    assert logits.grad is not None
    assert torch.count_nonzero(logits.grad[0, 4]) == 0 and torch.count_nonzero(logits.grad[1, 2:]) == 0
    assert torch.isfinite(logits.grad).all()


def test_the_bundled_tokenizer_has_contiguous_location_ids() -> None:
    tokenizer = bundled_tokenizer()
    first = location_range(tokenizer)
    assert tokenizer.convert_ids_to_tokens([first, first + 999]) == ["<loc_0>", "<loc_999>"]


def test_row_weights_scale_each_rows_tokens() -> None:
    logits, labels = _batch(2)
    settings = LossSettings(task_weights={"<VQA>": 4.0, "<OD>": 0.5})
    weights = settings.row_weights(["<VQA>", "<CAPTION>", "<OD>"])
    assert weights is not None and weights.tolist() == [4.0, 1.0, 0.5]
    assert LossSettings().row_weights(["<VQA>"]) is None
    rows = [
        F.cross_entropy(logits[row], labels[row], ignore_index=IGNORE_INDEX, reduction="sum")
        for row in range(3)
    ]
    expected = 4.0 * rows[0] + 1.0 * rows[1] + 0.5 * rows[2]
    assert torch.allclose(summed_token_loss(logits, labels, settings, weights), expected, rtol=1e-6)
