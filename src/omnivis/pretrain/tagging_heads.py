"""The tagging heads and their losses: what a vision tower's features must name (`omnivis.pretrain.tagging`).

The heads are linear layers on the tower's last feature map: pooled, the image's tags (multi-label) and its
background colour; per cell, the category, colour, objectness, box and word of what is centred there. They
serve two loops: tagging pre-training (`tagging_loss`, a mean over the batch's cells) and the training loop,
which keeps them beside the language loss (`per_image_tagging_loss`, one loss per image, so that ranks and
micro-batches add up as the token losses do). Both save them the same way (`HEADS_FILE` and the vocabularies
beside it), so either continues the other's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from omnivis.errors import ConfigError, DatasetError
from omnivis.model.florence import IGNORE_INDEX
from omnivis.pretrain.tagging_data import Classes, TaggingTargets, class_vocabulary, tag_vocabulary

# The files heads are saved in, beside a tagging run's checkpoint or in a training checkpoint that keeps them.
HEADS_FILE = "heads.safetensors"  # the heads' weights, so that a later run can continue them
TAGS_FILE = "tags.json"
CLASSES_FILE = "classes.json"


@dataclass
class TaggingOutputs:
    """The heads' logits: pooled (B, T) tags and (B, backgrounds); per cell (B, h*w, ...) the rest."""

    tags: torch.Tensor
    backgrounds: torch.Tensor
    cell_categories: torch.Tensor  # (B, h*w, categories + 1)
    cell_colours: torch.Tensor  # (B, h*w, colours + 1)
    objectness: torch.Tensor  # (B, h*w)
    boxes: torch.Tensor  # (B, h*w, 4)
    crop_categories: torch.Tensor | None = None  # (B*K, categories + 1): the cells' category head per crop
    cell_words: torch.Tensor | None = None  # (B, h*w, words)
    crop_words: torch.Tensor | None = None  # (B*K, words): the cells' word head per crop


class TaggingHeads(nn.Module):
    """Linear heads on a feature map: tags and background on its pooled features, the rest on each cell."""

    def __init__(self, channels: int, tags: int, classes: Classes) -> None:
        super().__init__()
        # The cell head's outputs: category, colour (each with "none"), objectness, box, word (at least one
        # column, so that a world without text keeps the same head).
        self.split = (len(classes.categories) + 1, len(classes.colours) + 1, 1, 4, max(len(classes.words), 1))
        self.head = nn.Linear(channels, tags)
        self.background_head = nn.Linear(channels, max(len(classes.backgrounds), 1))
        self.cell_head = nn.Linear(channels, sum(self.split))

    def forward(self, features: torch.Tensor, crop_features: torch.Tensor | None = None) -> TaggingOutputs:
        """(B, C, h, w) features, and optionally (B*K, C, h', w') features of cut-outs -> the logits."""
        pooled = features.mean(dim=(2, 3))  # (B, C)
        cells = features.flatten(2).transpose(1, 2)  # (B, h*w, C), row-major like the projector's tokens
        categories, colours, objectness, boxes, words = self.cell_head(cells).split(self.split, dim=-1)
        crop_categories = crop_words = None
        if crop_features is not None:  # named by the cells' heads: one feature direction serves both
            crop_logits = self.cell_head(crop_features.mean(dim=(2, 3)))  # (B*K, sum(split))
            crop_categories, *_, crop_words = crop_logits.split(self.split, dim=-1)
        return TaggingOutputs(
            self.head(pooled), self.background_head(pooled), categories, colours, objectness.squeeze(-1),
            boxes, crop_categories, words, crop_words,
        )  # fmt: skip


def tagging_loss(
    outputs: TaggingOutputs,
    targets: TaggingTargets,
    cell_weight: float,
    crop_weight: float = 1.0,
    word_weight: float = 1.0,
) -> torch.Tensor:
    """Pooled tags' BCE + background CE + `cell_weight` x (category, colour CE on the cells holding an
    object + objectness BCE + box L1) + `word_weight` x the word CE on the cells holding a word +
    `crop_weight` x the cut-outs' category and word CEs, each term only where it has targets."""
    loss = F.binary_cross_entropy_with_logits(outputs.tags, targets.tags)
    if (targets.backgrounds != IGNORE_INDEX).any():
        loss = loss + F.cross_entropy(outputs.backgrounds, targets.backgrounds, ignore_index=IGNORE_INDEX)
    positive = targets.objectness.bool()  # (B, h*w)
    objectness = F.binary_cross_entropy_with_logits(outputs.objectness, targets.objectness)
    if positive.any():  # one host sync; named and boxed on the cells holding an object only
        categories = F.cross_entropy(outputs.cell_categories[positive], targets.cell_categories[positive])
        colours = F.cross_entropy(outputs.cell_colours[positive], targets.cell_colours[positive])
        box = F.l1_loss(outputs.boxes[positive], targets.boxes[positive])
    else:
        categories = colours = box = loss.new_zeros(())
    loss = loss + cell_weight * (categories + colours + objectness + box)
    if outputs.cell_words is not None and targets.cell_words is not None:
        cell_words = outputs.cell_words.flatten(0, 1)  # (B*h*w, words)
        loss = loss + word_weight * _labelled_cross_entropy(cell_words, targets.cell_words)
    pairs = ((outputs.crop_categories, targets.crop_categories), (outputs.crop_words, targets.crop_words))
    for logits, labels in pairs:
        if logits is not None and labels is not None:
            loss = loss + crop_weight * _labelled_cross_entropy(logits, labels)
    return loss


def per_image_tagging_loss(
    outputs: TaggingOutputs, targets: TaggingTargets, cell_weight: float, word_weight: float
) -> torch.Tensor:
    """(B,) each image's tagging loss: `tagging_loss`'s terms (cut-outs aside), each a mean over that image's
    own tags and cells, so a batch's losses do not depend on which images share it (a batch of one gives
    `tagging_loss`). Summed over a step's images and divided by their count, ranks add up exactly."""
    loss = F.binary_cross_entropy_with_logits(outputs.tags, targets.tags, reduction="none").mean(dim=1)
    named = targets.backgrounds != IGNORE_INDEX  # (B,)
    background = F.cross_entropy(outputs.backgrounds, targets.backgrounds.clamp(min=0), reduction="none")
    loss = loss + background * named
    positive = targets.objectness  # (B, h*w), 1.0 where an object is centred
    objectness = F.binary_cross_entropy_with_logits(outputs.objectness, positive, reduction="none")
    categories = _cell_cross_entropy(outputs.cell_categories, targets.cell_categories)  # (B, h*w)
    colours = _cell_cross_entropy(outputs.cell_colours, targets.cell_colours)
    box = F.l1_loss(outputs.boxes, targets.boxes, reduction="none").mean(dim=2)  # (B, h*w)
    cells = _mean_where(categories + colours + box, positive)  # (B,)
    loss = loss + cell_weight * (cells + objectness.mean(dim=1))
    if outputs.cell_words is not None and targets.cell_words is not None:
        holds_word = (targets.cell_words != IGNORE_INDEX).float()  # (B, h*w)
        words = _cell_cross_entropy(outputs.cell_words, targets.cell_words.clamp(min=0))
        loss = loss + word_weight * _mean_where(words, holds_word)
    return loss


def _cell_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, h*w, classes) logits, (B, h*w) labels -> (B, h*w) cross-entropy per cell."""
    return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")


def _mean_where(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, N) values, (B, N) 0/1 mask -> (B,) each row's mean where the mask is 1 (0 in a row without)."""
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def _labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax CE over the rows of (N, classes) logits whose label (any shape, N in all) is not IGNORE_INDEX;
    zero when none is (where `F.cross_entropy` would give NaN)."""
    labels = labels.flatten()  # (N,)
    if not (labels != IGNORE_INDEX).any():
        return logits.new_zeros(())
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


# The heads' files and vocabularies.


def read_vocabularies(source: str | Path, what: str) -> tuple[list[str], Classes]:
    """The tags and classes saved beside heads in `source` (a tagging run, or a training checkpoint).

    Raises:
        ConfigError: `source` lacks the heads or a vocabulary (`what` names the setting that gave it).
    """
    missing = [name for name in (HEADS_FILE, TAGS_FILE, CLASSES_FILE) if not (Path(source) / name).is_file()]
    if missing:
        raise ConfigError(f"{what}={str(source)!r} holds no {' or '.join(missing)} to continue")
    return read_tags(source), read_classes(source)


def counted_vocabularies(dataset: Any, records: int, max_tags: int, name: str) -> tuple[list[str], Classes]:
    """The `max_tags` most frequent tags and the classes of the first `records` records of `dataset`.

    Raises:
        DatasetError: The records carry no tags to learn.
    """
    counted = [dataset[index] for index in range(min(len(dataset), records))]
    tags, classes = tag_vocabulary(counted, max_tags), class_vocabulary(counted)
    if not tags:
        raise DatasetError(f"{name}: its records carry no tags (region categories or brief captions)")
    return tags, classes


def load_heads(heads: TaggingHeads, source: Path) -> None:
    """Loads the heads a tagging run (or a training run keeping them) saved in `source` into `heads`, whose
    vocabularies were read from the same place (`read_tags`, `read_classes`).

    Raises:
        ConfigError: The heads do not fit: another tower width or other vocabularies.
    """
    path = source / HEADS_FILE
    saved, expected = safetensors.torch.load_file(path), heads.state_dict()
    names = expected.keys() | saved.keys()
    wrong = sorted(name for name in names if name not in saved or name not in expected
                   or saved[name].shape != expected[name].shape)  # fmt: skip
    if wrong:
        raise ConfigError(f"the tagging heads in {path} do not fit this tower: {', '.join(wrong)}")
    heads.load_state_dict(saved)


def read_tags(run_dir: str | Path) -> list[str]:
    """The tag vocabulary a tagging run wrote."""
    return list(json.loads((Path(run_dir) / TAGS_FILE).read_text(encoding="utf-8")))


def read_classes(run_dir: str | Path) -> Classes:
    """The single-label classes a tagging run wrote (a run from before words: none)."""
    fields = json.loads((Path(run_dir) / CLASSES_FILE).read_text(encoding="utf-8"))
    return Classes(**{name: tuple(values) for name, values in fields.items()})
