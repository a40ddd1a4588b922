"""Linear probes of a vision tower: the labels read off world records, the fit on known features, the errors,
and the whole probe on a small world split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from omnivis.data.build import make_world_dataset
from omnivis.data.dataset import open_dataset
from omnivis.errors import InputError
from omnivis.eval.probe import (
    CELL_PROBE_TARGETS,
    PROBE_TARGETS,
    TEXT_PROBE_TARGET,
    WORD_PROBE_TARGET,
    PlacedWord,
    background_colour,
    box_cells,
    cell_of,
    cell_shapes,
    fit_probe,
    format_probe_table,
    largest_shape_category,
    largest_shape_colour,
    line_words,
    probe_checkpoint,
    probe_tower,
)
from omnivis.train.config import ModelSettings
from omnivis.train.model_setup import build_predictor
from omnivis.world import VARIANTS, generate_record


def test_labels_of_a_scene_read_by_hand() -> None:
    # world-default-2-0: "Two circles, two hexagons, a rectangle, the word "mango" and the word "river" on a
    # pale green background with faint waves."; its shapes' phrases and box areas (px^2): large dotted orange
    # hexagon 4361 (the largest), small green circle 702, medium blue hexagon 2370, small dotted brown circle
    # 908, medium red rectangle 1784; the texts ('word "mango"' 2760) are not shapes.
    record = generate_record(index=0, seed=2, config=VARIANTS["default"])
    assert background_colour(record) == "pale green"
    assert largest_shape_category(record) == "hexagon"
    assert largest_shape_colour(record) == "orange"


def test_cells_hold_the_largest_shape_centred_in_them_read_by_hand() -> None:
    # world-default-2-0 (256 px) box centres: orange hexagon (118.7, 84.9), green circle (62.6, 37.8), blue
    # hexagon (35.1, 224.2), brown circle (101.3, 112.2), red rectangle (174.0, 221.9); texts are not shapes.
    record = generate_record(index=0, seed=2, config=VARIANTS["default"])
    phrases = [region.phrase if region else None for region in cell_shapes(record, (4, 4))]  # 64 px cells
    assert {cell: phrase for cell, phrase in enumerate(phrases) if phrase} == {
        0: "small green circle", 5: "large dotted orange hexagon",  # the brown circle shares cell 5, smaller
        12: "medium blue hexagon", 14: "medium red rectangle",
    }  # fmt: skip
    halves = [region.phrase if region else None for region in cell_shapes(record, (2, 2))]  # 128 px cells
    assert halves == ["large dotted orange hexagon", None, "medium blue hexagon", "medium red rectangle"]


def test_a_box_covers_the_cells_it_touches_read_by_hand() -> None:
    # 256 x 128 image, 8 x 4 grid: cells are 32 x 32 px.
    assert box_cells((10, 10, 40, 20), (256, 128), (4, 8)) == (slice(0, 1), slice(0, 2))
    assert box_cells((64, 32, 96, 64), (256, 128), (4, 8)) == (slice(1, 2), slice(2, 3))  # edges on lines
    assert box_cells((250, 127, 256, 128), (256, 128), (4, 8)) == (slice(3, 4), slice(7, 8))
    assert box_cells((100, 40, 100, 40), (256, 128), (4, 8)) == (
        slice(1, 2),
        slice(3, 4),
    )  # a point: one cell


def test_background_of_gradients_and_textures_is_the_first_colour() -> None:
    records = [generate_record(index=index, seed=1, config=VARIANTS["default"]) for index in range(60)]
    colours = {background_colour(record) for record in records}
    assert None not in colours
    for record in records:  # every brief caption names its background's first colour right after "on a"
        brief = record.caption("brief")
        assert f"on a {background_colour(record)}" in brief or f"mottled {background_colour(record)}" in brief
    assert all(" to " not in str(colour) and "mottled" not in str(colour) for colour in colours)


def test_a_separable_feature_is_found_and_chance_is_the_majority_share() -> None:
    generator = np.random.default_rng(0)
    labels = ["red", "green", "blue", "red"] * 25  # the held-out fifth: 20 rows, red 10 of them
    signal = np.array([{"red": 0.0, "green": 5.0, "blue": -5.0}[label] for label in labels])
    features = np.column_stack([signal, generator.normal(size=(100, 3))])
    result = fit_probe(features, labels, "colour")
    assert (result.accuracy, result.majority, result.classes) == (1.0, 0.5, 3)
    assert (result.train_records, result.test_records) == (80, 20)


def test_noise_features_score_near_chance() -> None:
    generator = np.random.default_rng(1)
    labels = [str(value) for value in generator.integers(0, 2, size=400)]
    result = fit_probe(generator.normal(size=(400, 8)), labels)
    assert abs(result.accuracy - 0.5) < 0.15


def test_bad_probe_inputs_say_what_is_wrong() -> None:
    with pytest.raises(InputError, match="needs two classes"):
        fit_probe(np.zeros((10, 2)), ["red"] * 10, "background")
    with pytest.raises(InputError, match="3 feature rows but 2 labels"):
        fit_probe(np.zeros((3, 2)), ["a", "b"])
    with pytest.raises(InputError, match="unknown probe target"):
        tower = torch.nn.Identity()
        probe_tower(tower, [], (64, 64), (0, 0, 0), (1, 1, 1), ["shininess"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="at least 10 records"):
        probe_checkpoint("tiny", "nowhere", records=3)


def test_words_are_placed_by_their_characters_share_of_the_line() -> None:
    """A 12-character line on a level 120 x 20 px quad: 10 px a character, the axis at y = 30."""
    # top left, top right, bottom right, bottom left
    quad = (10.0, 20.0, 130.0, 20.0, 130.0, 40.0, 10.0, 40.0)
    assert line_words("Push to open", quad) == [
        PlacedWord("Push", (30.0, 30.0), (40.0, 20.0)),  # characters 0-4: centre 2 of 12
        PlacedWord("to", (70.0, 30.0), (20.0, 20.0)),  # 5-7: centre 6
        PlacedWord("open", (110.0, 30.0), (40.0, 20.0)),  # 8-12: centre 10
    ]
    turned = (0.0, 0.0, 0.0, 60.0, -10.0, 60.0, -10.0, 0.0)  # the same line read downwards, 10 px high
    (word,) = line_words("abc", turned)
    assert word.centre == pytest.approx((-5.0, 30.0)) and word.size == pytest.approx((60.0, 10.0))
    with pytest.raises(InputError, match="8 numbers"):
        line_words("abc", (0.0, 1.0))


def test_cell_of_a_point() -> None:
    assert cell_of((0.0, 0.0), (256, 128), (4, 8)) == 0
    assert cell_of((255.9, 127.9), (256, 128), (4, 8)) == 31
    assert cell_of((40.0, 70.0), (256, 128), (4, 8)) == 2 * 8 + 1  # row 70/32, column 40/32
    assert cell_of((-5.0, 500.0), (256, 128), (4, 8)) == 3 * 8  # clamped into the image


EVERY_TARGET = [*PROBE_TARGETS, *CELL_PROBE_TARGETS, TEXT_PROBE_TARGET, WORD_PROBE_TARGET]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("probe") / "data"
    make_world_dataset(directory, 60, seed=4, variant="default", workers=1, progress=False)
    return directory


# 60 records hold a few dozen text lines of nearly as many texts; scikit-learn says so, rightly, for this size.
@pytest.mark.filterwarnings("ignore:The number of unique classes:UserWarning")
def test_the_probe_of_a_checkpoint_covers_every_target(world: Path, tmp_path: Path) -> None:
    predictor = build_predictor(ModelSettings(preset="tiny", image_size=64), seed=0)
    from omnivis.loading import save

    save(predictor, tmp_path / "model")
    results = probe_checkpoint(tmp_path / "model", world, records=60)
    assert [result.target for result in results] == EVERY_TARGET
    lines = sum(len(record.text_lines) for record in open_dataset(world))
    words = sum(len(line.text.split()) for record in open_dataset(world) for line in record.text_lines)
    for result in results:
        if result.target in PROBE_TARGETS:
            assert (result.train_records, result.test_records) == (48, 12)
        elif result.target == TEXT_PROBE_TARGET:  # one row per text line
            assert result.train_records + result.test_records == lines > 0
        elif result.target == WORD_PROBE_TARGET:  # one row per cell holding a word: at most one per word
            assert 0 < result.train_records + result.test_records <= words
        else:  # cells: at 64 px the grid is 2 x 2, so 1 to 4 cells with a shape per record
            assert 60 <= result.train_records + result.test_records <= 240
        assert 0.0 <= result.accuracy <= 1.0 and 1 / result.classes <= result.majority <= 1.0
    table = format_probe_table(results)
    assert table.splitlines()[0].split() == ["target", "accuracy", "majority", "classes"]
    assert len(table.splitlines()) == 1 + len(results)


def test_the_command_prints_the_table(world: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from omnivis.cli import main
    from omnivis.loading import save

    save(build_predictor(ModelSettings(preset="tiny", image_size=64), seed=0), tmp_path / "model")
    assert main(["pretrain", "probe", "--model", str(tmp_path / "model"), "--data", str(world),
                 "--records", "20"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "target"
    assert [line.split()[0] for line in lines[1:]] == EVERY_TARGET
