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
image's tags — its region categories and the words of its brief caption — with a multi-label sigmoid loss.
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
from omnivis.data.records import Record
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
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        positive = ("image_size", "steps", "batch_size", "vocabulary_records", "max_tags", "log_every")
        problems = [
            f"{name} must be >= 1, got {getattr(self, name)}" for name in positive if getattr(self, name) < 1
        ]
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


def record_tags(record: Record) -> set[str]:
    """The tags of one record: its region categories, the words of its brief caption, whether it shows text."""
    tags = {f"category:{region.category}" for region in record.regions if region.category}
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


class TaggingModel(nn.Module):
    """A vision tower with a linear tag head on its pooled last-stage features."""

    def __init__(self, vision_tower: DaViT, channels: int, tags: int) -> None:
        super().__init__()
        self.vision_tower = vision_tower
        self.head = nn.Linear(channels, tags)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.vision_tower.forward_features(pixels)  # (B, C, h, w)
        return self.head(features.mean(dim=(2, 3)))  # (B, tags) logits


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
    batches = _batches(dataset, config, size, predictor.image_processing, index)
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(config.steps):
        pixels, targets = next(batches)
        loss = F.binary_cross_entropy_with_logits(model(pixels), targets)
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
    dataset: Any, config: TaggingConfig, size: tuple[int, int], processing: Any, index: dict[str, int]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (pixels, multi-hot targets) batches over a seeded shuffle of the records, epoch after epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    while True:
        order = torch.randperm(len(dataset), generator=generator).tolist()
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            records = [dataset[position] for position in order[start : start + config.batch_size]]
            pixels = preprocess([load_image(record.image) for record in records], size, processing.mean,
                                processing.std)  # fmt: skip
            targets = torch.zeros(len(records), len(index))
            for row, record in enumerate(records):
                for tag in record_tags(record):
                    if tag in index:
                        targets[row, index[tag]] = 1.0
            yield pixels, targets


def read_tags(run_dir: str | Path) -> list[str]:
    """The tag vocabulary a tagging run wrote."""
    return list(json.loads((Path(run_dir) / TAGS_FILE).read_text(encoding="utf-8")))
