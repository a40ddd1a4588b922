"""Tagging pre-training of the vision tower: tags from records, a vocabulary, a short run that learns, and a
checkpoint the training loop's `model.vision_init` reads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import omnivis
from omnivis.data.build import make_world_dataset
from omnivis.errors import ConfigError
from omnivis.model.florence import IGNORE_INDEX
from omnivis.pretrain import TaggingConfig, pretrain_tagging, record_tags, tag_vocabulary
from omnivis.pretrain.tagging import (
    Classes,
    TaggingOutputs,
    TaggingTargets,
    cell_targets,
    class_vocabulary,
    read_tags,
    tagging_loss,
)
from omnivis.train.config import ModelSettings
from omnivis.train.model_setup import build_predictor, load_vision_tower
from omnivis.world import VARIANTS, generate_record


def test_tags_are_categories_pairs_caption_words_and_text() -> None:
    record = generate_record(index=0, seed=2, config=VARIANTS["default"])  # the scene of world-default-2-0
    assert record_tags(record) == {
        "category:circle", "category:hexagon", "category:rectangle", "category:text",
        # the shapes' phrases: "large dotted orange hexagon", "small green circle", "medium blue hexagon",
        # "small dotted brown circle", "medium red rectangle"; the texts' ('word "mango"') give no pair
        "pair:orange hexagon", "pair:green circle", "pair:blue hexagon", "pair:brown circle",
        "pair:red rectangle",
        "word:two", "word:circles", "word:hexagons", "word:a", "word:rectangle", "word:the", "word:word",
        "word:mango", "word:and", "word:river", "word:on", "word:pale", "word:green", "word:background",
        "word:with", "word:faint", "word:waves", "has:text",
    }  # fmt: skip


def test_cell_targets_by_hand() -> None:
    """On a 4x4 grid of the 256 px scene: each region in the cell of its centre, the cell's largest one's
    category, colour and box."""
    record = generate_record(index=0, seed=2, config=VARIANTS["default"])
    classes = Classes(categories=("circle", "hexagon", "text"), colours=("brown", "orange"), backgrounds=())
    categories, colours, objectness, boxes = cell_targets(record, (4, 4), classes)
    # Centres (x, y): orange hexagon (118.7, 84.9) -> row 1 col 1; green circle (62.6, 37.8) -> row 0 col 0;
    # blue hexagon (35.1, 224.1) -> row 3 col 0; brown circle (101.2, 112.2) -> row 1 col 1;
    # red rectangle (174.0, 221.9) -> row 3 col 2; "mango" (198.3, 144.4) -> row 2 col 3;
    # "river" (101.0, 183.0) -> row 2 col 1.
    assert objectness.nonzero().flatten().tolist() == [0, 5, 9, 11, 12, 14]
    none_category, none_colour = 3, 2
    # Cell (1, 1) holds the hexagon (68.9 x 63.3 px) and the smaller brown circle: the hexagon's targets.
    assert (categories[5].item(), colours[5].item()) == (1, 1)
    assert (categories[0].item(), colours[0].item()) == (0, none_colour)  # green: not among these colours
    assert (categories[11].item(), colours[11].item()) == (2, none_colour)  # a text has no shape colour
    assert (categories[14].item(), colours[14].item()) == (none_category, none_colour)  # rectangle: unknown
    assert (categories[1].item(), colours[1].item()) == (none_category, none_colour)  # an empty cell
    x, y = (84.25 + 153.125) / 2 / 64, (53.25 + 116.5625) / 2 / 64
    expected = [x - 1, y - 1, (68.875 / 256) ** 0.5, (63.3125 / 256) ** 0.5]
    assert boxes[5].tolist() == pytest.approx(expected)
    assert boxes[1].tolist() == [0.0] * 4


def test_the_loss_by_hand() -> None:
    """Zero logits: each BCE is log 2, each softmax CE log(classes); the box counts on object cells only."""
    targets = TaggingTargets(
        tags=torch.tensor([[1.0, 0.0]]), backgrounds=torch.tensor([2]),
        cell_categories=torch.tensor([[0, 1]]), cell_colours=torch.tensor([[3, 1]]),
        objectness=torch.tensor([[1.0, 0.0]]),
        boxes=torch.tensor([[[0.5, 0.5, 0.2, 0.2], [9.0, 9.0, 9.0, 9.0]]]),
    )  # fmt: skip
    outputs = TaggingOutputs(
        tags=torch.zeros(1, 2), backgrounds=torch.zeros(1, 3), cell_categories=torch.zeros(1, 2, 2),
        cell_colours=torch.zeros(1, 2, 4), objectness=torch.zeros(1, 2), boxes=torch.zeros(1, 2, 4),
    )  # fmt: skip
    log = math.log
    cells = log(2) + log(4) + log(2) + (0.5 + 0.5 + 0.2 + 0.2) / 4
    assert tagging_loss(outputs, targets, cell_weight=0.5).item() == pytest.approx(
        log(2) + log(3) + 0.5 * cells
    )
    # A record naming no background leaves that term out.
    targets.backgrounds = torch.tensor([IGNORE_INDEX])
    assert tagging_loss(outputs, targets, cell_weight=0.5).item() == pytest.approx(log(2) + 0.5 * cells)


def test_classes_are_read_from_the_records() -> None:
    records = [generate_record(index=index, seed=3, config=VARIANTS["default"]) for index in range(40)]
    classes = class_vocabulary(records)
    assert "text" in classes.categories and "star" in classes.categories
    assert {"red", "blue"} <= set(classes.colours) and "text" not in classes.colours
    assert "pale green" in classes.backgrounds and list(classes.backgrounds) == sorted(classes.backgrounds)


def test_the_vocabulary_keeps_the_most_frequent_informative_tags() -> None:
    records = [generate_record(index=index, seed=3, config=VARIANTS["easy"]) for index in range(40)]
    tags = tag_vocabulary(records, max_tags=10)
    assert len(tags) == 10 and "word:background" not in tags  # every record has it: it tells nothing
    counts = [sum(tag in record_tags(record) for record in records) for tag in tags]
    assert counts == sorted(counts, reverse=True)


@pytest.fixture(scope="module")
def easy_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("easy") / "data"
    make_world_dataset(directory, 32, seed=1, variant="easy", workers=1, progress=False)
    return directory


def test_a_short_run_learns_and_its_tower_starts_training(easy_world: Path, tmp_path: Path) -> None:
    config = TaggingConfig(data=str(easy_world), out=str(tmp_path / "run"), image_size=64, steps=40,
                           batch_size=16, learning_rate=2e-3, warmup_steps=5)  # fmt: skip
    result = pretrain_tagging(config, progress=False)
    assert sum(result.losses[-5:]) / 5 < 0.7 * sum(result.losses[:5]) / 5
    assert read_tags(tmp_path / "run") == result.tags
    classes = json.loads((tmp_path / "run" / "classes.json").read_text())
    assert classes["categories"] and classes["colours"] and classes["backgrounds"]
    trained = omnivis.load(result.checkpoint).model.vision_tower.state_dict()
    fresh = build_predictor(ModelSettings(preset="tiny", image_size=64), seed=0).model
    assert any(
        not torch.equal(trained[name], tensor) for name, tensor in fresh.vision_tower.state_dict().items()
    )
    load_vision_tower(fresh, result.checkpoint)
    assert all(torch.equal(trained[name], tensor) for name, tensor in fresh.vision_tower.state_dict().items())


def test_bad_configs_are_named() -> None:
    with pytest.raises(ConfigError, match=r"steps must be >= 1, got 0; learning_rate must be > 0, got 0"):
        TaggingConfig(data="d", out="o", steps=0, learning_rate=0, warmup_steps=0)
    with pytest.raises(ConfigError, match=r"max_grad_norm must be > 0, got -1"):
        TaggingConfig(data="d", out="o", max_grad_norm=-1)
