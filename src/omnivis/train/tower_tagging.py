"""The tower's tagging losses kept beside the language loss (`TrainConfig.tagging`).

Why: tagging pre-training (`omnivis.pretrain.tagging`) teaches the vision tower what its cells show, down to
the word of text centred in each; the language loss alone then wears it away. Measured on the committed
model's lineage (linear probes, `omnivis pretrain probe`): the word in a cell 0.51 after tagging, 0.21 after
one language stage, 0.23 three stages later; a text line's text 0.41 -> 0.13 -> 0.17. Reading (OCR) is the
task that needs those features most.

How: the tagging heads (`TaggingHeads`) are registered on the model as `tagging_heads`, so DDP, FSDP, the
optimizer (at the text model's rate) and the training checkpoints' state carry them like any other parameter.
They read the very feature map the projector reads, inside the model's forward (`feature_heads=`), so the
auxiliary loss costs no second pass through the tower. Every image of the stream carries its record's targets
(`RecordTargets`); the loss is one per image (`per_image_tagging_loss`), summed over the step's images and
divided by their count, so 2 ranks of batch B add up to 1 process of batch 2B as the token losses do.

A checkpoint keeps the heads out of `model.safetensors` (which stays an ordinary, servable omnivis
checkpoint) in `heads.safetensors`, with `tags.json` and `classes.json` beside it: the layout of a tagging
run, so `tagging.heads=<checkpoint>` (or `omnivis pretrain tagging --heads`) continues them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from omnivis.data.dataset import open_dataset
from omnivis.io import atomic_write_json
from omnivis.predictor import Predictor
from omnivis.pretrain.tagging_data import Classes, RecordTargets, TaggingTargets
from omnivis.pretrain.tagging_heads import (
    CLASSES_FILE,
    HEADS_FILE,
    TAGS_FILE,
    TaggingHeads,
    TaggingOutputs,
    counted_vocabularies,
    load_heads,
    per_image_tagging_loss,
    read_vocabularies,
)
from omnivis.train.config import TaggingSettings, TrainConfig

HEADS_MODULE = "tagging_heads"  # the heads' name on the model, and the prefix of their state-dict names
_PREFIX = HEADS_MODULE + "."


@dataclass
class TowerTagging:
    """A run's tagging losses: the settings, the heads (registered on the model) and the record targets."""

    settings: TaggingSettings
    heads: TaggingHeads
    targets: RecordTargets
    tags: list[str]
    classes: Classes

    def summed_loss(self, outputs: TaggingOutputs, targets: TaggingTargets) -> torch.Tensor:
        """The weighted tagging losses of a micro-batch's images, summed (float32, whatever autocast gave)."""
        fields = {field.name: getattr(outputs, field.name) for field in dataclasses.fields(TaggingOutputs)}
        logits = TaggingOutputs(**{name: None if value is None else value.float()
                                   for name, value in fields.items()})  # fmt: skip
        weights = self.settings
        per_image = per_image_tagging_loss(logits, targets, weights.cell_weight, weights.word_weight)  # (B,)
        return weights.weight * per_image.sum()

    def checkpoint(self, state: dict[str, torch.Tensor]) -> HeadsCheckpoint:
        """The heads' part of a checkpoint, from their gathered weights (names without the prefix)."""
        return HeadsCheckpoint(state, self.tags, self.classes)


@dataclass
class HeadsCheckpoint:
    """The heads as a checkpoint holds them: weights, tags and classes (the files of a tagging run)."""

    weights: dict[str, torch.Tensor]
    tags: list[str]
    classes: Classes

    def write(self, directory: Path) -> None:
        weights = {name: tensor.detach().cpu().contiguous() for name, tensor in self.weights.items()}
        safetensors.torch.save_file(weights, str(directory / HEADS_FILE))
        atomic_write_json(directory / TAGS_FILE, self.tags)
        atomic_write_json(directory / CLASSES_FILE, dataclasses.asdict(self.classes))


def build_tower_tagging(config: TrainConfig, predictor: Predictor) -> TowerTagging | None:
    """The run's tagging losses (None when `tagging.weight` is 0), their heads registered on the model.

    The vocabularies and heads are `tagging.heads`'s, or counted on `data.train` and fresh; fresh heads start
    from the run's seed alone, the same on every rank, and leave the global RNG as it was.

    Raises:
        ConfigError: `tagging.heads` holds no heads, or heads of another width or vocabulary.
        DatasetError: `data.train` carries no tags.
    """
    settings = config.tagging
    if settings.weight == 0:
        return None
    if settings.heads:
        tags, classes = read_vocabularies(settings.heads, "tagging.heads")
    else:
        dataset = open_dataset(config.data.train)
        tags, classes = counted_vocabularies(dataset, settings.vocabulary_records, settings.max_tags,
                                             config.data.train)  # fmt: skip
    model = predictor.model
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(config.seed)
        heads = TaggingHeads(model.config.vision.embed_dims[-1], len(tags), classes)
        probe = torch.zeros(1, 3, *predictor.image_processing.size, dtype=model.dtype)
        grid = model.vision_tower.forward_features(probe).shape[2:]  # the last feature map's (h, w)
    if settings.heads:
        load_heads(heads, Path(settings.heads))
    model.add_module(HEADS_MODULE, heads)
    targets = RecordTargets(tags, classes, (int(grid[0]), int(grid[1])))
    return TowerTagging(settings, heads, targets, tags, classes)


def split_heads(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A gathered state dict -> (the model's own tensors, the heads' tensors without their prefix)."""
    own = {name: tensor for name, tensor in state.items() if not name.startswith(_PREFIX)}
    heads = {name.removeprefix(_PREFIX): tensor for name, tensor in state.items() if name.startswith(_PREFIX)}
    return own, heads


def read_heads(directory: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's heads under their names on the model ({} when it holds none)."""
    path = directory / HEADS_FILE
    if not path.is_file():
        return {}
    return {_PREFIX + name: tensor for name, tensor in safetensors.torch.load_file(str(path)).items()}
