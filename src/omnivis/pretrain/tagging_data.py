"""The examples a tagging run learns from: an image's tags, its classes, per-cell targets, cut-out regions.

`omnivis.pretrain.tagging` says what is learnt and why; this file turns a record into the tensors it learns
from, with no model in sight: the pooled tags (`record_tags`, counted into a vocabulary), the single-label
classes (`Classes`), the per-cell targets of the last feature map (`cell_targets`, `cell_word_targets`) and,
optionally, the largest regions and the words of the text cut out (`TaggingExamples`).
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from omnivis.data.records import Record, Region
from omnivis.data.transforms import preprocess
from omnivis.eval.probe import PlacedWord, background_colour, cell_words, line_words, shape_colour
from omnivis.images import load_image
from omnivis.model.florence import IGNORE_INDEX

CROP_MARGIN = 0.15  # of a cut-out region's longer side, each way: its outline stays whole


def region_tags(region: Region) -> set[str]:
    """The tags of one region: its category and, for a shape, its colour-and-shape pair ("pair:red star")."""
    if not region.category:
        return set()
    tags = {f"category:{region.category}"}
    colour = shape_colour(region)
    if colour is not None:
        tags.add(f"pair:{colour} {region.category}")
    return tags


def record_tags(record: Record) -> set[str]:
    """The tags of one record: its regions' tags, the words of its brief caption, whether it shows text."""
    tags = {tag for region in record.regions for tag in region_tags(region)}
    brief = record.caption("brief")
    if brief:
        tags |= {f"word:{word}" for word in re.findall(r"[a-z]+", brief.lower())}
    if record.text_lines:
        tags.add("has:text")
    return tags


def tag_vocabulary(records: Sequence[Record], max_tags: int) -> list[str]:
    """The `max_tags` most frequent tags of `records` (ties by name), excluding tags every record has."""
    counts = collections.Counter(tag for record in records for tag in record_tags(record))
    informative = [(tag, count) for tag, count in counts.items() if count < len(records)]
    return [tag for tag, _ in sorted(informative, key=lambda item: (-item[1], item[0]))[:max_tags]]


@dataclass(frozen=True)
class Classes:
    """The single-label classes: a cell's object's category and colour, the image's background colour, the
    word of text centred in a cell.

    A cell without an object (or whose object has no colour) is class "none": index `len(categories)` or
    `len(colours)`. An image whose caption names no background is left out of that loss, and a cell holding
    no word (or one not among `words`) out of the words' loss.
    """

    categories: tuple[str, ...]
    colours: tuple[str, ...]
    backgrounds: tuple[str, ...]
    words: tuple[str, ...] = ()


def class_vocabulary(records: Sequence[Record]) -> Classes:
    """The sorted categories, shape colours, background colours and words of text found in `records`."""
    categories = {region.category for record in records for region in record.regions if region.category}
    colours = {colour for record in records for region in record.regions if (colour := shape_colour(region))}
    backgrounds = {name for record in records if (name := background_colour(record))}
    words = {word for record in records for line in record.text_lines for word in line.text.split()}
    return Classes(*(tuple(sorted(names)) for names in (categories, colours, backgrounds, words)))


@dataclass
class TaggingTargets:
    """A batch's targets: pooled tags and background; per cell (B, h*w, ...) category, colour, object, box,
    word; per cut-out (B, K) category and word (IGNORE_INDEX where a cut-out has none, or is padding)."""

    tags: torch.Tensor  # (B, T) multi-hot
    backgrounds: torch.Tensor  # (B,) class index, IGNORE_INDEX when the record names none
    cell_categories: torch.Tensor  # (B, h*w) the largest centred object's category, len(categories) if none
    cell_colours: torch.Tensor  # (B, h*w) its colour, len(colours) if none or colourless
    objectness: torch.Tensor  # (B, h*w) 1 where an object's centre lies
    boxes: torch.Tensor  # (B, h*w, 4) the largest such object: centre offsets in the cell, sqrt of size share
    crop_categories: torch.Tensor | None = None  # (B, K) the cut-outs' categories
    cell_words: torch.Tensor | None = None  # (B, h*w) the longest word centred in the cell
    crop_words: torch.Tensor | None = None  # (B, K) the cut-outs' words

    def to(self, device: torch.device) -> TaggingTargets:
        return TaggingTargets(**{field.name: None if (value := getattr(self, field.name)) is None
                                 else value.to(device) for field in dataclasses.fields(self)})  # fmt: skip


def cell_targets(
    record: Record, grid: tuple[int, int], classes: Classes
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One record's per-cell category and colour indices (h*w,), objectness (h*w,) and boxes (h*w, 4).

    A region belongs to the cell holding its box's centre; a cell's targets are its largest region's: its
    category and colour (or "none"), the centre's offset inside the cell (0..1 each way) and the square roots
    of its width and height shares of the image (sizes spread less so).
    """
    rows, columns = grid
    categories = torch.full((rows * columns,), len(classes.categories))
    colours = torch.full((rows * columns,), len(classes.colours))
    objectness = torch.zeros(rows * columns)
    boxes = torch.zeros(rows * columns, 4)
    largest = [0.0] * (rows * columns)
    for region in record.regions:
        left, top, right, bottom = region.box
        x = min(max((left + right) / 2 / record.width, 0.0), 1.0 - 1e-6) * columns
        y = min(max((top + bottom) / 2 / record.height, 0.0), 1.0 - 1e-6) * rows
        cell = int(y) * columns + int(x)
        objectness[cell] = 1.0
        width, height = (right - left) / record.width, (bottom - top) / record.height
        if width * height > largest[cell]:
            largest[cell] = width * height
            boxes[cell] = torch.tensor(
                [x - int(x), y - int(y), max(width, 0.0) ** 0.5, max(height, 0.0) ** 0.5]
            )
            category, colour = region.category, shape_colour(region)
            categories[cell] = (
                classes.categories.index(category)
                if category in classes.categories
                else len(classes.categories)
            )
            colours[cell] = (
                classes.colours.index(colour) if colour in classes.colours else len(classes.colours)
            )
    return categories, colours, objectness, boxes


def cell_word_targets(record: Record, grid: tuple[int, int], classes: Classes) -> torch.Tensor:
    """One record's per-cell word indices (h*w,): the longest word of text centred in the cell
    (`omnivis.eval.probe.cell_words`), IGNORE_INDEX where none is or it is not among `classes.words`."""
    index = {word: position for position, word in enumerate(classes.words)}
    words = cell_words(record, grid)
    return torch.tensor([index.get(word, IGNORE_INDEX) if word else IGNORE_INDEX for word in words])


class RecordTargets:
    """A record's tagging targets, without its image: (tags (T,) multi-hot, background (), per cell (h*w,)
    category, colour, objectness, (h*w, 4) box and (h*w,) word). The training loop keeps them beside the
    language loss (`omnivis.train.tower_tagging`); `TaggingExamples` adds the image."""

    def __init__(self, tags: Sequence[str], classes: Classes, grid: tuple[int, int]) -> None:
        self.index = {tag: position for position, tag in enumerate(tags)}
        self.classes, self.grid = classes, grid

    def __call__(self, record: Record) -> tuple[torch.Tensor, ...]:
        multi_hot = torch.zeros(len(self.index))
        for tag in record_tags(record):
            if tag in self.index:
                multi_hot[self.index[tag]] = 1.0
        name = background_colour(record)
        backgrounds = self.classes.backgrounds
        background = backgrounds.index(name) if name in backgrounds else IGNORE_INDEX
        words = cell_word_targets(record, self.grid, self.classes)
        return (multi_hot, torch.tensor(background), *cell_targets(record, self.grid, self.classes), words)


def stack_targets(items: Sequence[tuple[torch.Tensor, ...]]) -> TaggingTargets:
    """`RecordTargets` of a batch's records stacked into one `TaggingTargets` (no cut-outs)."""
    tags, backgrounds, categories, colours, objectness, boxes, words = (
        torch.stack(part) for part in zip(*items, strict=True)
    )
    return TaggingTargets(tags, backgrounds, categories, colours, objectness, boxes, cell_words=words)


class TaggingExamples(torch.utils.data.Dataset):
    """One record's input and targets: (pixels (3, H, W), its `RecordTargets`, and with `crops_per_image` or
    `word_crops_per_image` its largest regions and first words cut out (K, 3, s, s), their categories (K,)
    and their words (K,), K the two counts summed)."""

    def __init__(
        self,
        dataset: Any,
        image_size: int,
        processing: Any,
        tags: Sequence[str],
        classes: Classes,
        grid: tuple[int, int],
        crops_per_image: int = 0,
        crop_size: int = 64,
        word_crops_per_image: int = 0,
    ) -> None:
        self.dataset, self.size, self.processing = dataset, (image_size, image_size), processing
        self.targets, self.classes = RecordTargets(tags, classes, grid), classes
        self.crops_per_image, self.crop_size = crops_per_image, crop_size
        self.word_crops_per_image = word_crops_per_image

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, ...]:
        record = self.dataset[position]
        image = load_image(record.image)
        pixels = preprocess([image], self.size, self.processing.mean, self.processing.std)
        item = (pixels[0], *self.targets(record))
        if not self.crops_per_image + self.word_crops_per_image:
            return item
        return (*item, *self._crops(record, image))

    def _crops(self, record: Record, image: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The largest named regions, then the first words (reading order), cut out with a margin and
        resized: (K, 3, s, s), categories (K,) and words (K,); unused slots are zeros and IGNORE_INDEX."""
        count = self.crops_per_image + self.word_crops_per_image
        crops = torch.zeros(count, 3, self.crop_size, self.crop_size)
        categories, words = torch.full((count,), IGNORE_INDEX), torch.full((count,), IGNORE_INDEX)
        named = [region for region in record.regions if region.category in self.classes.categories]
        named.sort(key=lambda region: -(region.box[2] - region.box[0]) * (region.box[3] - region.box[1]))
        for slot, region in enumerate(named[: self.crops_per_image]):
            left, top, right, bottom = region.box
            margin = CROP_MARGIN * max(right - left, bottom - top)
            crops[slot] = self._cut(image, (left - margin, top - margin, right + margin, bottom + margin))
            categories[slot] = self.classes.categories.index(region.category)
        placed = [word for line in record.text_lines for word in line_words(line.text, line.quad)
                  if word.text in self.classes.words]  # fmt: skip
        for slot, word in enumerate(placed[: self.word_crops_per_image], start=self.crops_per_image):
            crops[slot] = self._cut(image, _word_square(word))
            words[slot] = self.classes.words.index(word.text)
        return crops, categories, words

    def _cut(self, image: Any, box: tuple[float, float, float, float]) -> torch.Tensor:
        size = (self.crop_size, self.crop_size)
        return preprocess([image.crop(box)], size, self.processing.mean, self.processing.std)[0]


def _word_square(word: PlacedWord) -> tuple[float, float, float, float]:
    """A square around a word, its longer extent plus `CROP_MARGIN` each way: a word keeps its aspect (a long
    word squeezed into a square would not look like the same word at another length)."""
    half = max(word.size) * (0.5 + CROP_MARGIN)
    x, y = word.centre
    return (x - half, y - half, x + half, y + half)


class EpochBatches(torch.utils.data.Sampler[list[int]]):
    """Endless index batches: a seeded shuffle of the records each epoch, the last partial one left out."""

    def __init__(self, count: int, batch_size: int, seed: int) -> None:
        self.count, self.batch_size, self.seed = count, batch_size, seed

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            order = torch.randperm(self.count, generator=generator).tolist()
            for start in range(0, self.count - self.batch_size + 1, self.batch_size):
                yield order[start : start + self.batch_size]


Batch = tuple[torch.Tensor, torch.Tensor | None, TaggingTargets]  # pixels, crops or None, targets


def collate(items: list[tuple[torch.Tensor, ...]]) -> Batch:
    """`TaggingExamples` items stacked into a batch: pixels, crops (None without them) and the targets."""
    parts = [torch.stack(part) for part in zip(*items, strict=True)]
    pixels, tags, backgrounds, categories, colours, objectness, boxes, words = parts[:8]
    crops, crop_categories, crop_words = parts[8:] if len(parts) == 11 else (None, None, None)
    targets = TaggingTargets(
        tags, backgrounds, categories, colours, objectness, boxes, crop_categories, words, crop_words
    )
    return pixels, crops, targets
