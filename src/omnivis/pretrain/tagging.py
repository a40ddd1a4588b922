"""Supervised pre-training of the vision tower by image tagging: predict what a record says is in its image.

Florence-2 starts from a pre-trained DaViT (and a pre-trained BART); a `tiny` model trained from scratch on
the world does not. Inside the sequence-to-sequence model the tower only learns through the text model, which
at first reads nothing from the image: measured on the `tiny` preset at 128 px, the tower's output collapsed to
nearly the same map for every image within 500 steps (spread across images 2% of its size, from 32% at
initialisation) and the model's loss stopped depending on the image at all (the same to 6 digits with the
images of a batch shuffled). Random, untrained features are no way out either: from them a linear probe finds
the background colour of a one-shape scene 43% of the time (7 colours) and its shape at chance.

Tagging gives the tower a direct signal first, as image-label pre-training (UniCL, section 2 of the Florence-2
paper's lineage) does at scale: the pooled last-stage features and one linear layer predict each of the
image's tags — its region categories, the words of its brief caption and its objects' colour-and-shape
pairs — with a multi-label sigmoid loss. Pooled tags say what is in an image, not where; the tasks that
matter most (detection, grounding, "Where is the red star?") need the where, so every cell of the last
feature map also predicts the tags of the objects whose centre lies in it, whether one does, and the box of
the largest of them (offsets in the cell and size, L1), as a one-stage detector's head does (FCOS, YOLO).
The result is a checkpoint whose vision tower `omnivis train ... model.vision_init=<it>` starts from.

    checkpoint = pretrain_tagging(TaggingConfig(data="data/world-train", out="runs/tagging"))
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omnivis.data.dataset import open_dataset
from omnivis.data.records import Record, Region
from omnivis.data.transforms import preprocess
from omnivis.errors import ConfigError, DatasetError
from omnivis.images import load_image
from omnivis.io import atomic_write_json
from omnivis.loading import save
from omnivis.model.davit import DaViT
from omnivis.train.config import ModelSettings, OptimSettings
from omnivis.train.model_setup import build_predictor
from omnivis.train.optim import build_scheduler

TAGS_FILE = "tags.json"
CONFIG_FILE = "tagging_config.json"


@dataclass(frozen=True)
class TaggingConfig:
    """A tagging run: the data, the tower's preset and input size, and the optimisation."""

    data: str  # a dataset directory (e.g. a world split)
    out: str  # the run directory; the checkpoint goes to out/final
    preset: str = "tiny"  # the model preset whose vision tower is trained
    image_size: int = 128  # square input side, as the later training stage will use
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    vocabulary_records: int = 2000  # records the tag vocabulary is counted on
    max_tags: int = 512  # the most frequent tags kept
    cell_weight: float = 1.0  # weight of the per-cell losses (tags, objectness, box) beside the pooled tags
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        positive = ("image_size", "steps", "batch_size", "vocabulary_records", "max_tags", "log_every")
        problems = [
            f"{name} must be >= 1, got {getattr(self, name)}" for name in positive if getattr(self, name) < 1
        ]
        if not self.cell_weight >= 0:
            problems.append(f"cell_weight must be >= 0, got {self.cell_weight}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_steps < self.steps:
            problems.append(f"warmup_steps must be in [0, steps), got {self.warmup_steps}")
        if problems:
            raise ConfigError("tagging config: " + "; ".join(problems))


@dataclass
class TaggingResult:
    checkpoint: Path
    losses: list[float]  # every step's loss
    tags: list[str]


def region_tags(region: Region) -> set[str]:
    """The tags of one region: its category and, for a shape, its colour-and-shape pair ("pair:red star").

    A shape's phrase ends with its colour and category ("large striped cyan rectangle"); a text's phrase
    quotes the text instead, so it gets its category alone.
    """
    if not region.category:
        return set()
    tags = {f"category:{region.category}"}
    words = region.phrase.split()
    if region.category != "text" and len(words) >= 2 and words[-1] == region.category:
        tags.add(f"pair:{words[-2]} {words[-1]}")
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


@dataclass
class TaggingTargets:
    """A batch's targets: pooled tags (B, T); per cell (B, h*w, ...) tags, objectness and the largest box."""

    tags: torch.Tensor  # (B, T) multi-hot
    cell_tags: torch.Tensor  # (B, h*w, T) multi-hot: the tags of the objects centred in each cell
    objectness: torch.Tensor  # (B, h*w) 1 where an object's centre lies
    boxes: torch.Tensor  # (B, h*w, 4) the largest such object: centre offsets in the cell, sqrt of size share


CELL_OUTPUTS = 5  # per cell besides the tags: objectness logit + 4 box numbers


class TaggingModel(nn.Module):
    """A vision tower with linear heads: tags on its pooled last-stage features, tags + box on each cell."""

    def __init__(self, vision_tower: DaViT, channels: int, tags: int) -> None:
        super().__init__()
        self.vision_tower = vision_tower
        self.head = nn.Linear(channels, tags)
        self.cell_head = nn.Linear(channels, tags + CELL_OUTPUTS)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled tag logits (B, T) and per-cell outputs (B, h*w, T + 5)."""
        features = self.vision_tower.forward_features(pixels)  # (B, C, h, w)
        cells = features.flatten(2).transpose(1, 2)  # (B, h*w, C), row-major like the projector's tokens
        return self.head(features.mean(dim=(2, 3))), self.cell_head(cells)


def tagging_loss(
    pooled: torch.Tensor, cells: torch.Tensor, targets: TaggingTargets, cell_weight: float
) -> torch.Tensor:
    """Pooled tags' BCE + `cell_weight` x (cells' tag BCE + objectness BCE + L1 box on object cells)."""
    tag_count = targets.tags.shape[1]
    loss = F.binary_cross_entropy_with_logits(pooled, targets.tags)
    cell_tags = F.binary_cross_entropy_with_logits(cells[..., :tag_count], targets.cell_tags)
    objectness = F.binary_cross_entropy_with_logits(cells[..., tag_count], targets.objectness)
    positive = targets.objectness.bool()  # (B, h*w)
    box = (
        F.l1_loss(cells[..., tag_count + 1 :][positive], targets.boxes[positive])
        if positive.any()
        else cells.new_zeros(())
    )
    return loss + cell_weight * (cell_tags + objectness + box)


def cell_targets(
    record: Record, grid: tuple[int, int], index: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One record's per-cell tags (h*w, T), objectness (h*w,) and boxes (h*w, 4) on a `grid` of (h, w) cells.

    A region belongs to the cell holding its box's centre; a cell's box is its largest region's: the
    centre's offset inside the cell (0..1 each way) and the square roots of its width and height shares of
    the image (sizes spread less so).
    """
    rows, columns = grid
    tags = torch.zeros(rows * columns, len(index))
    objectness = torch.zeros(rows * columns)
    boxes = torch.zeros(rows * columns, 4)
    largest = [0.0] * (rows * columns)
    for region in record.regions:
        left, top, right, bottom = region.box
        x = min(max((left + right) / 2 / record.width, 0.0), 1.0 - 1e-6) * columns
        y = min(max((top + bottom) / 2 / record.height, 0.0), 1.0 - 1e-6) * rows
        cell = int(y) * columns + int(x)
        objectness[cell] = 1.0
        for tag in region_tags(region):
            if tag in index:
                tags[cell, index[tag]] = 1.0
        width, height = (right - left) / record.width, (bottom - top) / record.height
        if width * height > largest[cell]:
            largest[cell] = width * height
            boxes[cell] = torch.tensor(
                [x - int(x), y - int(y), max(width, 0.0) ** 0.5, max(height, 0.0) ** 0.5]
            )
    return tags, objectness, boxes


def pretrain_tagging(config: TaggingConfig, *, progress: bool = True) -> TaggingResult:
    """Trains a vision tower by tagging; writes out/final (a servable checkpoint whose text side is untrained,
    meant for `model.vision_init`), out/tags.json and out/tagging_config.json.

    Raises:
        ConfigError: A bad config.
        DatasetError: Data without tags to learn.
    """
    torch.manual_seed(config.seed)
    dataset = open_dataset(config.data)
    tags = tag_vocabulary([dataset[index] for index in range(min(len(dataset), config.vocabulary_records))],
                          config.max_tags)  # fmt: skip
    if not tags:
        raise DatasetError(f"{config.data}: its records carry no tags (region categories or brief captions)")
    size = (config.image_size, config.image_size)
    predictor = build_predictor(
        ModelSettings(preset=config.preset, image_size=config.image_size), config.seed
    )
    tower = predictor.model.vision_tower
    model = TaggingModel(tower, predictor.model.config.vision.embed_dims[-1], len(tags)).train()
    optim_settings = OptimSettings(
        learning_rate=config.learning_rate, weight_decay=config.weight_decay, warmup_steps=config.warmup_steps
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = build_scheduler(optimizer, optim_settings, config.steps)
    index = {tag: position for position, tag in enumerate(tags)}
    with torch.no_grad():  # the last feature map's grid at this input size
        feature_shape = tower.forward_features(torch.zeros(1, 3, *size)).shape
    grid = (int(feature_shape[2]), int(feature_shape[3]))
    batches = _batches(dataset, config, size, predictor.image_processing, index, grid)
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(config.steps):
        pixels, targets = next(batches)
        loss = tagging_loss(*model(pixels), targets, config.cell_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if progress and ((step + 1) % config.log_every == 0 or step + 1 == config.steps):
            seconds = time.perf_counter() - started
            print(
                f"tagging step {step + 1}/{config.steps}: loss {loss.item():.4f} ({seconds:.0f} s)",
                flush=True,
            )
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / TAGS_FILE, tags)
    atomic_write_json(out / CONFIG_FILE, dataclasses.asdict(config))
    save(predictor, out / "final")
    return TaggingResult(out / "final", losses, tags)


def _batches(
    dataset: Any,
    config: TaggingConfig,
    size: tuple[int, int],
    processing: Any,
    index: dict[str, int],
    grid: tuple[int, int],
) -> Iterator[tuple[torch.Tensor, TaggingTargets]]:
    """Endless (pixels, targets) batches over a seeded shuffle of the records, epoch after epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    while True:
        order = torch.randperm(len(dataset), generator=generator).tolist()
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            records = [dataset[position] for position in order[start : start + config.batch_size]]
            pixels = preprocess([load_image(record.image) for record in records], size, processing.mean,
                                processing.std)  # fmt: skip
            tags = torch.zeros(len(records), len(index))
            for row, record in enumerate(records):
                for tag in record_tags(record):
                    if tag in index:
                        tags[row, index[tag]] = 1.0
            cells = [cell_targets(record, grid, index) for record in records]
            # Per cell: tags, objectness, boxes, each stacked over the batch.
            stacked = (torch.stack([cell[part] for cell in cells]) for part in range(3))
            yield pixels, TaggingTargets(tags, *stacked)


def read_tags(run_dir: str | Path) -> list[str]:
    """The tag vocabulary a tagging run wrote."""
    return list(json.loads((Path(run_dir) / TAGS_FILE).read_text(encoding="utf-8")))
