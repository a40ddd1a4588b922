"""Tagging pre-training of the vision tower: tags from records, a vocabulary, a short run that learns, and a
checkpoint the training loop's `model.vision_init` reads."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import omnivis
from omnivis.data.build import make_world_dataset
from omnivis.data.transforms import preprocess
from omnivis.errors import ConfigError
from omnivis.images import load_image
from omnivis.model.florence import IGNORE_INDEX
from omnivis.predictor import ImageProcessing
from omnivis.pretrain import TaggingConfig, pretrain_tagging, record_tags, tag_vocabulary
from omnivis.pretrain.tagging_data import (
    Classes,
    TaggingExamples,
    TaggingTargets,
    cell_targets,
    cell_word_targets,
    class_vocabulary,
)
from omnivis.pretrain.tagging_heads import TaggingOutputs, read_tags, tagging_loss
from omnivis.train.config import ModelSettings
from omnivis.train.model_setup import build_predictor, load_encoder_parts
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
    """Zero logits on the object cell: each BCE is log 2, each softmax CE log(classes); an empty cell is named
    by nothing (its confident logits add nothing) and counts in objectness alone; the box counts on object
    cells only; a cut-out region's CE is log(classes), weighted, and padding slots count nothing."""
    targets = TaggingTargets(
        tags=torch.tensor([[1.0, 0.0]]), backgrounds=torch.tensor([2]),
        cell_categories=torch.tensor([[0, 1]]), cell_colours=torch.tensor([[3, 1]]),
        objectness=torch.tensor([[1.0, 0.0]]),
        boxes=torch.tensor([[[0.5, 0.5, 0.2, 0.2], [9.0, 9.0, 9.0, 9.0]]]),
    )  # fmt: skip
    outputs = TaggingOutputs(
        tags=torch.zeros(1, 2), backgrounds=torch.zeros(1, 3),
        cell_categories=torch.tensor([[[0.0, 0.0], [9.0, -9.0]]]),
        cell_colours=torch.tensor([[[0.0] * 4, [-9.0, 9.0, 3.0, 1.0]]]),
        objectness=torch.zeros(1, 2), boxes=torch.zeros(1, 2, 4),
    )  # fmt: skip
    log = math.log
    cells = log(2) + log(4) + log(2) + (0.5 + 0.5 + 0.2 + 0.2) / 4
    assert tagging_loss(outputs, targets, cell_weight=0.5).item() == pytest.approx(
        log(2) + log(3) + 0.5 * cells
    )
    # A record naming no background leaves that term out.
    targets.backgrounds = torch.tensor([IGNORE_INDEX])
    assert tagging_loss(outputs, targets, cell_weight=0.5).item() == pytest.approx(log(2) + 0.5 * cells)
    targets.crop_categories = torch.tensor([[1, IGNORE_INDEX]])
    outputs.crop_categories = torch.tensor([[0.0, 0.0, 0.0], [9.0, -9.0, 0.0]])
    assert tagging_loss(outputs, targets, cell_weight=0.5, crop_weight=2.0).item() == pytest.approx(
        log(2) + 0.5 * cells + 2.0 * log(3)
    )
    # Words (5 of them): the cell holding one and each cut-out naming one add log 5, weighted; cells and
    # cut-outs without a word add nothing.
    targets.cell_words = torch.tensor([[IGNORE_INDEX, 4]])
    outputs.cell_words = torch.zeros(1, 2, 5)
    targets.crop_words = torch.tensor([[IGNORE_INDEX, 0]])
    outputs.crop_words = torch.zeros(2, 5)
    assert tagging_loss(outputs, targets, 0.5, crop_weight=2.0, word_weight=3.0).item() == pytest.approx(
        log(2) + 0.5 * cells + 2.0 * log(3) + 3.0 * log(5) + 2.0 * log(5)
    )
    targets.cell_words = torch.full((1, 2), IGNORE_INDEX)  # no word anywhere: no NaN, no term
    assert tagging_loss(outputs, targets, 0.5, crop_weight=2.0, word_weight=3.0).item() == pytest.approx(
        log(2) + 0.5 * cells + 2.0 * log(3) + 2.0 * log(5)
    )


def test_crops_are_the_largest_named_regions_cut_out() -> None:
    """The scene's named regions by area (px^2): hexagon 4,361, text 2,760, hexagon 2,370, text 2,280, circle
    908, circle 702; the rectangle (1,784) is not among the classes."""
    record = generate_record(index=0, seed=2, config=VARIANTS["default"])
    classes = Classes(categories=("circle", "hexagon", "text"), colours=(), backgrounds=())
    processing = ImageProcessing(size=(64, 64))
    examples = TaggingExamples([record], 64, processing, ["has:text"], classes, (2, 2), crops_per_image=8,
                               crop_size=32)  # fmt: skip
    *_, crops, labels, words = examples[0]
    assert labels.tolist() == [1, 2, 1, 2, 0, 0, IGNORE_INDEX, IGNORE_INDEX]
    assert words.tolist() == [IGNORE_INDEX] * 8  # no word crops asked for
    assert crops.shape == (8, 3, 32, 32) and not crops[6:].any()
    left, top, right, bottom = 84.25, 53.25, 153.125, 116.5625  # the large hexagon, 15% of 68.875 each way
    margin = 0.15 * 68.875
    image = load_image(record.image).crop((left - margin, top - margin, right + margin, bottom + margin))
    assert torch.equal(crops[0], preprocess([image], (32, 32), processing.mean, processing.std)[0])
    without_crops = TaggingExamples([record], 64, processing, [], classes, (2, 2))
    assert len(examples[0]) == 8 + 3 and len(without_crops[0]) == 8


def test_word_crops_follow_the_region_crops_and_keep_the_words_aspect() -> None:
    """The scene's texts "mango" and "river" (one word each, reading order: "mango" first), with one region
    slot before them: each cut out as a square around the word's centre, named by the word's index."""
    record = generate_record(index=0, seed=2, config=VARIANTS["default"])
    classes = Classes(categories=("hexagon",), colours=(), backgrounds=(), words=("mango", "river"))
    processing = ImageProcessing(size=(64, 64))
    examples = TaggingExamples([record], 64, processing, [], classes, (2, 2), crops_per_image=1, crop_size=32,
                               word_crops_per_image=3)  # fmt: skip
    *_, crops, categories, words = examples[0]
    assert categories.tolist() == [0] + [IGNORE_INDEX] * 3  # the large hexagon, then no region labels
    assert words.tolist() == [IGNORE_INDEX, 0, 1, IGNORE_INDEX]
    line = record.text_lines[0]
    assert line.text == "mango"
    xs, ys = line.quad[0::2], line.quad[1::2]
    centre_x, centre_y = (xs[0] + xs[1] + xs[2] + xs[3]) / 4, (ys[0] + ys[1] + ys[2] + ys[3]) / 4
    length = math.hypot((xs[1] + xs[2] - xs[0] - xs[3]) / 2, (ys[1] + ys[2] - ys[0] - ys[3]) / 2)
    half = length * (0.5 + 0.15)  # a one-word line: the word spans it; wider than high
    square = (centre_x - half, centre_y - half, centre_x + half, centre_y + half)
    image = load_image(record.image).crop(square)
    assert torch.allclose(crops[1], preprocess([image], (32, 32), processing.mean, processing.std)[0])
    assert not crops[3].any()


def test_cell_word_targets_by_hand() -> None:
    """On a 4x4 grid of the same scene: "mango" centred at (198.3, 144.4) -> row 2 col 3 (cell 11), "river"
    at (101.0, 183.0) -> row 2 col 1 (cell 9); a word not among the classes is left out like an empty cell."""
    record = generate_record(index=0, seed=2, config=VARIANTS["default"])
    classes = Classes(categories=(), colours=(), backgrounds=(), words=("apple", "mango", "river"))
    words = cell_word_targets(record, (4, 4), classes)
    expected = [IGNORE_INDEX] * 16
    expected[11], expected[9] = 1, 2
    assert words.tolist() == expected
    only_mango = replace(classes, words=("mango",))
    assert cell_word_targets(record, (4, 4), only_mango).tolist().count(IGNORE_INDEX) == 15


def test_classes_are_read_from_the_records() -> None:
    records = [generate_record(index=index, seed=3, config=VARIANTS["default"]) for index in range(40)]
    classes = class_vocabulary(records)
    assert "text" in classes.categories and "star" in classes.categories
    assert {"red", "blue"} <= set(classes.colours) and "text" not in classes.colours
    assert "pale green" in classes.backgrounds and list(classes.backgrounds) == sorted(classes.backgrounds)
    said = {word for record in records for line in record.text_lines for word in line.text.split()}
    assert classes.words == tuple(sorted(said)) and len(said) > 10


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
    load_encoder_parts(fresh, result.checkpoint)
    assert all(torch.equal(trained[name], tensor) for name, tensor in fresh.vision_tower.state_dict().items())


def test_loader_processes_and_crops_give_the_same_run_as_in_process(easy_world: Path, tmp_path: Path) -> None:
    config = TaggingConfig(data=str(easy_world), out=str(tmp_path / "a"), image_size=64, steps=3,
                           batch_size=8, warmup_steps=1, crops_per_image=2, crop_size=32)  # fmt: skip
    alone = pretrain_tagging(config, progress=False)
    loaded = pretrain_tagging(replace(config, out=str(tmp_path / "b"), num_workers=2), progress=False)
    assert alone.losses == loaded.losses
    plain = pretrain_tagging(replace(config, out=str(tmp_path / "c"), crops_per_image=0), progress=False)
    assert plain.losses != alone.losses  # the crops' loss is part of the run
    words = pretrain_tagging(replace(config, out=str(tmp_path / "d"), word_crops_per_image=2), progress=False)
    assert words.losses != alone.losses  # and so are the words'


def test_init_continues_a_checkpoints_tower(easy_world: Path, tmp_path: Path) -> None:
    first = pretrain_tagging(
        TaggingConfig(data=str(easy_world), out=str(tmp_path / "a"), image_size=64, steps=2, batch_size=8,
                      warmup_steps=1, learning_rate=1e-2), progress=False,
    )  # fmt: skip
    again = pretrain_tagging(
        TaggingConfig(data=str(easy_world), out=str(tmp_path / "b"), image_size=64, steps=1, batch_size=8,
                      warmup_steps=0, learning_rate=1e-9, init=str(first.checkpoint)), progress=False,
    )  # fmt: skip
    started = omnivis.load(first.checkpoint).model.vision_tower.state_dict()
    continued = omnivis.load(again.checkpoint).model.vision_tower.state_dict()
    fresh = build_predictor(ModelSettings(preset="tiny", image_size=64), seed=0).model
    fresh_tower = fresh.vision_tower.state_dict()
    assert all(torch.allclose(continued[name], tensor, atol=1e-6) for name, tensor in started.items())
    assert not all(torch.allclose(continued[name], tensor, atol=1e-6) for name, tensor in fresh_tower.items())


def test_heads_continue_a_tagging_run_with_its_vocabularies(easy_world: Path, tmp_path: Path) -> None:
    """A run continued with `heads=` starts from the heads (and the tags and classes) the first one wrote, so
    its first step's loss is the first run's loss on those weights, not a fresh head's."""
    first = pretrain_tagging(
        TaggingConfig(data=str(easy_world), out=str(tmp_path / "a"), image_size=64, steps=30, batch_size=8,
                      warmup_steps=2, learning_rate=3e-3), progress=False,
    )  # fmt: skip
    config = TaggingConfig(data=str(easy_world), out=str(tmp_path / "b"), image_size=64, steps=1, batch_size=8,
                           warmup_steps=0, learning_rate=1e-9, init=str(first.checkpoint))  # fmt: skip
    fresh = pretrain_tagging(config, progress=False)
    continued = pretrain_tagging(replace(config, out=str(tmp_path / "c"), heads=str(tmp_path / "a")),
                                 progress=False)  # fmt: skip
    assert continued.losses[0] < 0.8 * fresh.losses[0]
    assert continued.tags == first.tags
    heads = load_file(tmp_path / "a" / "heads.safetensors")
    again = load_file(tmp_path / "c" / "heads.safetensors")
    assert heads.keys() == again.keys() == {"head.weight", "head.bias", "background_head.weight",
                                            "background_head.bias", "cell_head.weight", "cell_head.bias"}  # fmt: skip
    assert all(torch.allclose(heads[name], again[name], atol=1e-5) for name in heads)
    not_a_run = r"holds no heads.safetensors or tags.json or classes.json to continue"
    with pytest.raises(ConfigError, match=not_a_run):
        pretrain_tagging(replace(config, heads=str(first.checkpoint)), progress=False)


def test_a_time_limit_ends_the_run_and_keeps_what_was_learnt(easy_world: Path, tmp_path: Path) -> None:
    config = TaggingConfig(data=str(easy_world), out=str(tmp_path), image_size=64, steps=50, batch_size=8,
                           max_minutes=1e-6)  # fmt: skip
    result = pretrain_tagging(config, progress=False)
    assert len(result.losses) == 1 and (result.checkpoint / "model.safetensors").is_file()


def test_bad_configs_are_named() -> None:
    with pytest.raises(ConfigError, match=r"steps must be >= 1, got 0; learning_rate must be > 0, got 0"):
        TaggingConfig(data="d", out="o", steps=0, learning_rate=0, warmup_steps=0)
    with pytest.raises(ConfigError, match=r"max_grad_norm must be > 0, got -1"):
        TaggingConfig(data="d", out="o", max_grad_norm=-1)
    with pytest.raises(ConfigError, match=r"device must be cpu, cuda, cuda:N or auto, got 'gpu'"):
        TaggingConfig(data="d", out="o", device="gpu")
    counts = r"num_workers, crops_per_image and word_crops_per_image must be >= 0"
    with pytest.raises(ConfigError, match=counts + r", got -1, 0, 0"):
        TaggingConfig(data="d", out="o", num_workers=-1)
    with pytest.raises(ConfigError, match=counts + r", got 0, 0, -2"):
        TaggingConfig(data="d", out="o", word_crops_per_image=-2)
    with pytest.raises(ConfigError, match=r"cell_weight and word_weight must be >= 0, got 1.0, -1"):
        TaggingConfig(data="d", out="o", word_weight=-1)
    with pytest.raises(ConfigError, match=r"crop_size must be >= 32 and crop_weight >= 0, got 16, 1.0"):
        TaggingConfig(data="d", out="o", crop_size=16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="names the error of a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_named(easy_world: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"device 'cuda' asked for, but this machine has no CUDA device"):
        config = TaggingConfig(data=str(easy_world), out=str(tmp_path), device="cuda")
        pretrain_tagging(config, progress=False)
