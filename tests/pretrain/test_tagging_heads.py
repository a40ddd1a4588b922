"""The per-image tagging loss the training loop keeps: one loss per image, so batches and ranks add up."""

from __future__ import annotations

import math

import pytest
import torch

from omnivis.model.florence import IGNORE_INDEX
from omnivis.pretrain.tagging_data import Classes, TaggingTargets
from omnivis.pretrain.tagging_heads import TaggingHeads, TaggingOutputs, per_image_tagging_loss, tagging_loss


def _random_batch(images: int, generator: torch.Generator) -> tuple[TaggingOutputs, TaggingTargets]:
    """Random logits and targets for `images` images of 4 cells: 3 tags, 2 backgrounds, 2 categories (+ none),
    3 colours (+ none), 5 words."""
    cells = 4

    def logits(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    objectness = (torch.rand(images, cells, generator=generator) < 0.5).float()
    objectness[0, 0] = 1.0  # at least one object
    words = torch.randint(0, 5, (images, cells), generator=generator)
    words[torch.rand(images, cells, generator=generator) < 0.5] = IGNORE_INDEX
    targets = TaggingTargets(
        tags=(torch.rand(images, 3, generator=generator) < 0.5).float(),
        backgrounds=torch.tensor([IGNORE_INDEX, *torch.randint(0, 2, (images - 1,), generator=generator)]),
        cell_categories=torch.randint(0, 3, (images, cells), generator=generator),
        cell_colours=torch.randint(0, 4, (images, cells), generator=generator),
        objectness=objectness, boxes=torch.rand(images, cells, 4, generator=generator), cell_words=words,
    )  # fmt: skip
    outputs = TaggingOutputs(
        tags=logits(images, 3), backgrounds=logits(images, 2), cell_categories=logits(images, cells, 3),
        cell_colours=logits(images, cells, 4), objectness=logits(images, cells), boxes=logits(images, cells, 4),
        cell_words=logits(images, cells, 5),
    )  # fmt: skip
    return outputs, targets


def _image(batch: TaggingOutputs | TaggingTargets, index: int):
    fields = {name: None if value is None else value[index : index + 1] for name, value in vars(batch).items()}
    return type(batch)(**fields)


def test_each_images_loss_is_the_batch_loss_of_that_image_alone() -> None:
    """`tagging_loss` of a batch of one is the reference: the per-image losses of a batch of 5 are each image's
    loss alone (so which images share a batch or a rank changes nothing)."""
    outputs, targets = _random_batch(5, torch.Generator().manual_seed(0))
    per_image = per_image_tagging_loss(outputs, targets, cell_weight=0.5, word_weight=2.0)
    assert per_image.shape == (5,)
    for index in range(5):
        alone = tagging_loss(_image(outputs, index), _image(targets, index), cell_weight=0.5, word_weight=2.0)
        assert per_image[index].item() == pytest.approx(alone.item(), rel=1e-6), index


def test_an_image_without_objects_or_words_counts_tags_background_and_objectness_by_hand() -> None:
    """Zero logits, no object, no word, a named background of 2: log 2 (tags) + log 2 (background) +
    cell_weight x log 2 (objectness); nothing for the empty cells' names, boxes or words, and no NaN."""
    targets = TaggingTargets(
        tags=torch.tensor([[1.0, 0.0]]), backgrounds=torch.tensor([1]),
        cell_categories=torch.tensor([[2, 2]]), cell_colours=torch.tensor([[1, 1]]), objectness=torch.zeros(1, 2),
        boxes=torch.zeros(1, 2, 4), cell_words=torch.full((1, 2), IGNORE_INDEX),
    )  # fmt: skip
    outputs = TaggingOutputs(
        tags=torch.zeros(1, 2), backgrounds=torch.zeros(1, 2), cell_categories=torch.zeros(1, 2, 3),
        cell_colours=torch.zeros(1, 2, 2), objectness=torch.zeros(1, 2), boxes=torch.ones(1, 2, 4),
        cell_words=torch.zeros(1, 2, 4),
    )  # fmt: skip
    loss = per_image_tagging_loss(outputs, targets, cell_weight=0.5, word_weight=3.0)
    assert loss.item() == pytest.approx(math.log(2) + math.log(2) + 0.5 * math.log(2))


def test_the_heads_read_a_feature_map_cell_by_cell_in_row_major_order() -> None:
    classes = Classes(categories=("circle",), colours=("red", "blue"), backgrounds=("white",), words=("a", "b"))
    heads = TaggingHeads(channels=8, tags=3, classes=classes)
    features = torch.randn(2, 8, 2, 3)  # (B, C, h, w)
    outputs = heads(features)
    assert outputs.tags.shape == (2, 3) and outputs.backgrounds.shape == (2, 1)
    assert outputs.cell_categories.shape == (2, 6, 2) and outputs.cell_colours.shape == (2, 6, 3)
    assert outputs.objectness.shape == (2, 6) and outputs.boxes.shape == (2, 6, 4)
    assert outputs.cell_words is not None and outputs.cell_words.shape == (2, 6, 2)
    one_cell = heads.cell_head(features[:, :, 1, 2])  # row 1, column 2: cell 5
    torch.testing.assert_close(outputs.cell_words[:, 5], one_cell[:, -2:])
