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
pairs — with a multi-label sigmoid loss, and the background's colour with a softmax. Pooled tags say what is
in an image, not where; the tasks that matter most (detection, grounding, "Where is the red star?") need the
where, so every cell of the last feature map also names the category and the colour of the largest object
whose centre lies in it (or "none", softmax each), whether one does, and its box (offsets in the cell and
size, L1), as a one-stage detector's head does (FCOS, YOLO). The result is a checkpoint whose vision tower
`omnivis train ... model.vision_init=<it>` starts from.

Why single-label softmax targets per cell and not the cell's tags as multi-hot sigmoids (the first design):
with 231 sigmoid tags averaged per cell, the box and objectness terms carried nearly all of the tower's
gradient, and the tower learnt where things are but not what they are. Linear probes (`omnivis.eval.probe`:
background colour, largest shape's category, its colour; 2,000 records of `data/world-train`, 128 px;
majority shares 0.16, 0.17, 0.11) measured, 2026-12-04:

| tower | background | category | colour |
|---|---|---|---|
| random initialisation | 0.51 | 0.14 | 0.20 |
| the committed model's (first design, 800 steps, then trained inside the model) | 0.16 | 0.19 | 0.07 |
| first design with the tag losses summed over tags, 400 steps at 3e-4 | 0.55 | 0.15 | 0.22 |
| this design, 250 steps at 3e-4 (an experiment's loop) | 0.84 | 0.16 | 0.21 |
| this design, `omnivis pretrain tagging --steps 800` (23.5 min, loss 3.80 -> 2.16) | 0.87 | 0.15 | 0.37 |

The background is learnt within a few hundred steps and the objects' colours follow; their category is not
yet found in the pooled features after 800 steps, nor in the cells: probed one cell at a time (the largest
shape centred there; `CELL_PROBE_TARGETS`), the 800-step tower finds its colour 0.69 of the time (majority
0.10) and its category 0.15 (majority 0.14). At 1e-3 a softmax on the background alone stayed at chance
for 60 steps, hence 3e-4 with clipping.

Two later changes, measured by continuing the committed model's tower at 256 px for 200 steps of 16 images
(3e-4; the same probes at 256 px, one cell of the 8 x 8 map at a time; the tower before: cell category 0.34,
cell colour 0.57), 2026-12-04:

| cells named | cell category | cell colour | largest shape's colour |
|---|---|---|---|
| all (an empty cell's class is "none") | 0.28 | 0.70 | 0.29 |
| only those holding an object (objectness says which) | 0.30 | 0.87 | 0.48 |
| only those, and the 4 largest regions cut out (64 px) and named by the cells' head | 0.33 | 0.83 | 0.43 |

With every cell named, ~9 of 10 cells of a default scene at 256 px are empty and the softmax mostly learns
"none"; named on object cells only, colour is learnt far faster. Cut-out regions (`crops_per_image`) are
how a tower learns to tell shapes apart fastest (from scratch, 0.91 in 100 steps of 64 crops,
`bench/shape_naming.py crops`), and they share the cells' category head so that one direction of the
features names a shape either way; in 200 steps they moved the cells' category only from 0.30 to 0.33.
Run longer, the same continuation with crops breaks through: 2,200 steps of 16 images (61.5 min on 2 cores,
loss 6.49 -> 1.39) give cell category 0.71 and cell colour 0.94 at 256 px (largest shape's category 0.31,
colour 0.42; at 128 px the cells give 0.29 and 0.67). Naming a shape by its cell is slow, not out of reach:
a matter of compute, which `device` and `num_workers` bring on a GPU.

Reading is the same story one level finer. A tower taught shapes keeps where text is, not what it says (a model
on it read at CER 0.84), so each cell also names the word of text centred in it (`word_weight`; its place along
the line by its characters' share, `omnivis.eval.probe.line_words`), and `word_crops_per_image` cuts each word
out in a square around it, named by the same head. Continuing stage 5i's tower at 256 px (16 images, 4
region and 4 word cut-outs each; per-cell probe of the word, 105 words, majority 0.026; of the category beside
it), 2026-12-05:

| run | cell word | cell category |
|---|---|---|
| stage 5i's tower | 0.069 | 0.80 |
| + 1,144 steps at 2e-4 (32 min, loss 15.0 -> 6.5) | 0.112 | 0.83 |
| + 1,400 steps at 3e-4 (40 min, loss 11.1 -> 4.5) | 0.255 | 0.85 |
| + 1,942 steps at 3e-4 (58 min, loss 6.8 -> 2.3) | 0.511 | 0.88 |

Words come slowly, then faster, as the shapes' category did, and naming shapes gained rather than suffered:
after the third run the cells' colour is 0.96 (from 0.92), and which of the 82 texts a line shows, from its
cells averaged, 0.41 (from 0.056). Each continuation above started its heads afresh; `heads=` continues them.

    checkpoint = pretrain_tagging(TaggingConfig(data="data/world-train", out="runs/tagging"))
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from omnivis.data.dataset import open_dataset
from omnivis.errors import ConfigError, DatasetError
from omnivis.io import atomic_write_bytes, atomic_write_json
from omnivis.loading import save
from omnivis.model.davit import DaViT
from omnivis.pretrain.tagging_data import (
    Batch,
    Classes,
    EpochBatches,
    TaggingExamples,
    collate,
)
from omnivis.pretrain.tagging_heads import (
    CLASSES_FILE,
    HEADS_FILE,
    TAGS_FILE,
    TaggingHeads,
    TaggingOutputs,
    counted_vocabularies,
    load_heads,
    read_vocabularies,
    tagging_loss,
)
from omnivis.train.config import ModelSettings, OptimSettings
from omnivis.train.model_setup import build_predictor
from omnivis.train.optim import build_scheduler

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
    learning_rate: float = 3e-4  # 1e-3 kept the tower's softmax heads at chance for 60 steps (see above)
    weight_decay: float = 0.05
    warmup_steps: int = 30
    max_grad_norm: float = 1.0  # gradient clipping (the first steps' gradients are the largest)
    vocabulary_records: int = 2000  # records the tag vocabulary is counted on
    max_tags: int = 512  # the most frequent tags kept
    cell_weight: float = 1.0  # weight of the per-cell losses beside the pooled ones
    crops_per_image: int = 0  # the largest regions of each image also cut out and named alone (0: none)
    crop_size: int = 64  # side a cut-out region is resized to (it fills it, as a small shape fills a cell)
    crop_weight: float = 1.0  # weight of the cut-outs' losses (regions' categories, words)
    word_weight: float = 1.0  # weight of the per-cell word loss (the word of text centred in a cell)
    word_crops_per_image: int = 0  # each image's first words of text also cut out and named alone (0: none)
    seed: int = 0
    log_every: int = 50
    init: str = ""  # a checkpoint directory whose vision tower the run continues; "" = the preset, fresh
    heads: str = ""  # a tagging run directory whose heads and vocabularies the run continues; "": fresh
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "auto" (CUDA when present); CUDA runs in bf16 autocast
    num_workers: int = 0  # DataLoader processes decoding images and building targets (0 = in this process)
    max_minutes: float = 0.0  # stop after this wall time and write what was learnt (0: no limit)

    def __post_init__(self) -> None:
        positive = ("image_size", "steps", "batch_size", "vocabulary_records", "max_tags", "log_every")
        problems = [
            f"{name} must be >= 1, got {getattr(self, name)}" for name in positive if getattr(self, name) < 1
        ]
        if min(self.num_workers, self.crops_per_image, self.word_crops_per_image) < 0:
            names = "num_workers, crops_per_image and word_crops_per_image"
            counts = f"{self.num_workers}, {self.crops_per_image}, {self.word_crops_per_image}"
            problems.append(f"{names} must be >= 0, got {counts}")
        if self.crop_size < 32 or not self.crop_weight >= 0:
            crops = f"{self.crop_size}, {self.crop_weight}"
            problems.append(f"crop_size must be >= 32 and crop_weight >= 0, got {crops}")
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.device):
            problems.append(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        if not (self.cell_weight >= 0 and self.word_weight >= 0):
            weights = f"{self.cell_weight}, {self.word_weight}"
            problems.append(f"cell_weight and word_weight must be >= 0, got {weights}")
        if not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not self.max_minutes >= 0:
            problems.append(f"max_minutes must be >= 0, got {self.max_minutes}")
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


class TaggingModel(nn.Module):
    """A vision tower with the tagging heads on its last feature map (and on its cut-outs' features)."""

    def __init__(self, vision_tower: DaViT, channels: int, tags: int, classes: Classes) -> None:
        super().__init__()
        self.vision_tower = vision_tower
        self.heads = TaggingHeads(channels, tags, classes)

    def forward(self, pixels: torch.Tensor, crops: torch.Tensor | None = None) -> TaggingOutputs:
        features = self.vision_tower.forward_features(pixels)  # (B, C, h, w)
        crop_features = None
        if crops is not None:  # (B, K, 3, s, s)
            crop_features = self.vision_tower.forward_features(crops.flatten(0, 1))  # (B*K, C, h', w')
        return self.heads(features, crop_features)


def pretrain_tagging(config: TaggingConfig, *, progress: bool = True) -> TaggingResult:
    """Trains a vision tower by tagging; writes out/final (a servable checkpoint meant for
    `model.vision_init`: its text side is untrained, or the `init` checkpoint's), out/tags.json,
    out/classes.json and out/tagging_config.json.

    Raises:
        ConfigError: A bad config, or a CUDA device on a machine without one.
        DatasetError: Data without tags to learn.
        CheckpointError: An `init` that cannot be read.
    """
    torch.manual_seed(config.seed)
    device = _device(config.device)
    dataset = open_dataset(config.data)
    tags, classes = _vocabularies(config, dataset)
    init = config.init or "scratch"
    settings = ModelSettings(preset=config.preset, init=init, image_size=config.image_size)
    predictor = build_predictor(settings, config.seed)
    tower = predictor.model.vision_tower
    model = TaggingModel(tower, predictor.model.config.vision.embed_dims[-1], len(tags), classes)
    if config.heads:
        load_heads(model.heads, Path(config.heads))
    model = model.to(device).train()
    optimizer, scheduler = _optimization(model, config)
    with torch.no_grad():  # the last feature map's grid at this input size
        probe = torch.zeros(1, 3, config.image_size, config.image_size, device=device)
        feature_shape = tower.forward_features(probe).shape
    grid = (int(feature_shape[2]), int(feature_shape[3]))
    examples = TaggingExamples(
        dataset, config.image_size, predictor.image_processing, tags, classes, grid,
        crops_per_image=config.crops_per_image, crop_size=config.crop_size,
        word_crops_per_image=config.word_crops_per_image,
    )  # fmt: skip
    batches = iter(_loader(examples, config))
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(config.steps):
        pixels, crops, targets = _to_device(next(batches), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            outputs = model(pixels, crops)
        loss = tagging_loss(
            _float32(outputs), targets, config.cell_weight, config.crop_weight, config.word_weight
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        seconds = time.perf_counter() - started
        out_of_time = 0 < config.max_minutes * 60 <= seconds
        if progress and ((step + 1) % config.log_every == 0 or step + 1 == config.steps or out_of_time):
            print(
                f"tagging step {step + 1}/{config.steps}: loss {loss.item():.4f} ({seconds:.0f} s)",
                flush=True,
            )
        if out_of_time:
            break
    model.cpu()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / TAGS_FILE, tags)
    atomic_write_json(out / CLASSES_FILE, dataclasses.asdict(classes))
    atomic_write_json(out / CONFIG_FILE, dataclasses.asdict(config))
    atomic_write_bytes(out / HEADS_FILE, safetensors.torch.save(_heads_state(model)))
    save(predictor, out / "final")
    return TaggingResult(out / "final", losses, tags)


def _vocabularies(config: TaggingConfig, dataset: Any) -> tuple[list[str], Classes]:
    """The tags and classes: a continued run's (`heads`), else counted on the first records of the data."""
    if config.heads:
        return read_vocabularies(config.heads, "tagging config: heads")
    return counted_vocabularies(dataset, config.vocabulary_records, config.max_tags, config.data)


def _heads_state(model: TaggingModel) -> dict[str, torch.Tensor]:
    """The heads' weights (saved with the checkpoint, so that a later run can continue them)."""
    return {name: tensor.contiguous() for name, tensor in model.heads.state_dict().items()}


def _optimization(
    model: nn.Module, config: TaggingConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW on every parameter, with the training loop's warm-up and cosine schedule."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    settings = OptimSettings(
        learning_rate=config.learning_rate, weight_decay=config.weight_decay, warmup_steps=config.warmup_steps
    )
    return optimizer, build_scheduler(optimizer, settings, config.steps)


def _device(name: str) -> torch.device:
    """The run's device; "auto" is CUDA when present."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"tagging config: device {name!r} asked for, but this machine has no CUDA device")
    return torch.device(name)


def _loader(examples: TaggingExamples, config: TaggingConfig) -> torch.utils.data.DataLoader:
    """Batches of `examples` in a seeded order, decoded by `config.num_workers` processes."""
    if len(examples) < config.batch_size:
        raise DatasetError(
            f"{config.data}: {len(examples)} records, fewer than one batch of {config.batch_size}"
        )
    return torch.utils.data.DataLoader(
        examples,
        batch_sampler=EpochBatches(len(examples), config.batch_size, config.seed),
        num_workers=config.num_workers,
        collate_fn=collate,
        persistent_workers=config.num_workers > 0,
        prefetch_factor=4 if config.num_workers > 0 else None,
        pin_memory=False,
    )


def _to_device(batch: Batch, device: torch.device) -> Batch:
    pixels, crops, targets = batch
    return pixels.to(device), None if crops is None else crops.to(device), targets.to(device)


def _float32(outputs: TaggingOutputs) -> TaggingOutputs:
    """The heads' logits in float32 (autocast leaves them bf16): the losses are computed at full precision."""
    return TaggingOutputs(**{field.name: None if (logits := getattr(outputs, field.name)) is None
                             else logits.float() for field in dataclasses.fields(TaggingOutputs)})  # fmt: skip
