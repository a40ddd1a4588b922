"""Predictions files: reading JSON Lines written by hand, errors that name the file and line, the structure
check of every answer type, and the round trip through `Prediction.to_json`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from omnivis.errors import DatasetError
from omnivis.eval.predictions import Prediction, check_answer, read_predictions
from omnivis.tasks import TASKS


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------
# Reading


def test_reads_valid_lines_and_skips_blank_ones(tmp_path: Path) -> None:
    lines = [
        '{"image_id": "a", "task": "<CAPTION>", "result": {"<CAPTION>": "a red star"}}',
        "",
        "   ",
        '{"image_id": "a", "task": "<OD>", "text": null, '
        '"result": {"<OD>": {"bboxes": [[0, 0, 1, 1]], "labels": ["star"]}}}',
        '{"image_id": "画像-2", "task": "<VQA>", "text": "星はいくつ？", "result": {"<VQA>": "二"}}',
        '{"image_id": "b", "task": "<REGION_TO_CATEGORY>", "text": [1, 2, 3.5, 4],'
        ' "result": {"<REGION_TO_CATEGORY>": "star<loc_1><loc_2><loc_3><loc_4>"}, "score": 0.5}',
        '{"image_id": "b", "task": "<REGION_TO_OCR>", "text": "<loc_1><loc_2><loc_3><loc_4>",'
        ' "result": {"<REGION_TO_OCR>": "HI", "<OD>": "ignored"}}',
    ]
    predictions = list(read_predictions(_write(tmp_path / "predictions.jsonl", lines)))
    assert predictions == [
        Prediction("a", "<CAPTION>", None, "a red star"),
        Prediction("a", "<OD>", None, {"bboxes": [[0, 0, 1, 1]], "labels": ["star"]}),
        Prediction("画像-2", "<VQA>", "星はいくつ？", "二"),
        Prediction("b", "<REGION_TO_CATEGORY>", (1, 2, 3.5, 4), "star<loc_1><loc_2><loc_3><loc_4>"),
        Prediction("b", "<REGION_TO_OCR>", "<loc_1><loc_2><loc_3><loc_4>", "HI"),
    ]
    # A region given as a list becomes a tuple (hashable, like a record's boxes).
    assert isinstance(predictions[3].input, tuple)


def test_an_empty_file_has_no_predictions(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    assert list(read_predictions(path)) == []


@pytest.mark.parametrize(
    ("bad_line", "key_word"),
    [
        ('{"image_id": "a", "task": "<OCR>", ', "not valid JSON"),
        ("[1, 2, 3]", "JSON object"),
        ('"a string"', "JSON object"),
        ('{"task": "<OCR>", "result": {"<OCR>": "HI"}}', "image_id"),
        ('{"image_id": "", "task": "<OCR>", "result": {"<OCR>": "HI"}}', "image_id"),
        ('{"image_id": 7, "task": "<OCR>", "result": {"<OCR>": "HI"}}', "image_id"),
        ('{"image_id": "a", "result": {"<OCR>": "HI"}}', "task"),
        ('{"image_id": "a", "task": "<OCR>", "result": {"<CAPTION>": "HI"}}', "result"),
        ('{"image_id": "a", "task": "<OCR>", "result": "HI"}', "result"),
        ('{"image_id": "a", "task": "<OCR>"}', "result"),
        ('{"image_id": "a", "task": "<VQA>", "text": 5, "result": {"<VQA>": "2"}}', "text"),
        ('{"image_id": "a", "task": "<VQA>", "text": {"q": "?"}, "result": {"<VQA>": "2"}}', "text"),
        ('{"image_id": "a", "task": "<VQA>", "text": true, "result": {"<VQA>": "2"}}', "text"),
    ],
)
def test_bad_lines_are_errors_naming_file_and_line(tmp_path: Path, bad_line: str, key_word: str) -> None:
    good = '{"image_id": "a", "task": "<OCR>", "result": {"<OCR>": "HI"}}'
    path = _write(tmp_path / "bad.jsonl", [good, "", bad_line, good])
    with pytest.raises(DatasetError) as raised:
        list(read_predictions(path))
    message = str(raised.value)
    assert str(path) in message
    assert "line 3" in message
    assert key_word in message


def test_lines_before_a_bad_one_are_read(tmp_path: Path) -> None:
    good = '{"image_id": "a", "task": "<OCR>", "result": {"<OCR>": "HI"}}'
    path = _write(tmp_path / "bad.jsonl", [good, "{"])
    lines = read_predictions(path)
    assert next(lines) == Prediction("a", "<OCR>", None, "HI")
    with pytest.raises(DatasetError, match="line 2"):
        next(lines)


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.jsonl"
    with pytest.raises(DatasetError, match="missing.jsonl"):
        list(read_predictions(path))


def test_a_non_finite_coordinate_is_not_an_error_of_the_file(tmp_path: Path) -> None:
    # JSON readers accept NaN; the answer is read, and check_answer is what refuses it.
    line = (
        '{"image_id": "a", "task": "<OD>", "result": {"<OD>": {"bboxes": [[NaN, 0, 1, 1]], "labels": ["x"]}}}'
    )
    (prediction,) = read_predictions(_write(tmp_path / "nan.jsonl", [line]))
    assert math.isnan(prediction.answer["bboxes"][0][0])
    assert "finite" in check_answer("<OD>", prediction.answer)


# ---------------------------------------------------------------------------------------------------------
# Answer structure

# One well-formed answer of each parse type, with a task that answers it.
WELL_FORMED: dict[str, tuple[str, Any]] = {
    "pure_text": ("<CAPTION>", "a red star"),
    "ocr": ("<OCR_WITH_REGION>", {"quad_boxes": [[0, 0, 4, 0, 4, 2, 0, 2]], "labels": ["HI"]}),
    "description_with_bboxes": ("<OD>", {"bboxes": [[0, 0, 1, 1], [2, 2, 3.5, 4]], "labels": ["a", "b"]}),
    "bboxes": ("<REGION_PROPOSAL>", {"bboxes": [[0, 0, 1, 1]], "labels": [""]}),
    "phrase_grounding": ("<CAPTION_TO_PHRASE_GROUNDING>", {"bboxes": [[0, 0, 1, 1]], "labels": ["a star"]}),
    "polygons": ("<REFERRING_EXPRESSION_SEGMENTATION>", {"polygons": [[[0, 0, 4, 0, 2, 3]]], "labels": [""]}),
    "description_with_bboxes_or_polygons": (
        "<OPEN_VOCABULARY_DETECTION>",
        {"bboxes": [[0, 0, 1, 1]], "bboxes_labels": ["star"], "polygons": [], "polygons_labels": []},
    ),
}


def test_every_parse_type_is_covered() -> None:
    assert set(WELL_FORMED) == {task.parse_type for task in TASKS.values()}
    for parse_type, (task, _) in WELL_FORMED.items():
        assert TASKS[task].parse_type == parse_type


@pytest.mark.parametrize("parse_type", list(WELL_FORMED))
def test_well_formed_answers_pass(parse_type: str) -> None:
    task, answer = WELL_FORMED[parse_type]
    assert check_answer(task, answer) is None


@pytest.mark.parametrize("task", [task for task, spec in TASKS.items() if spec.parse_type == "pure_text"])
def test_text_tasks_need_a_string(task: str) -> None:
    assert check_answer(task, "") is None
    assert check_answer(task, "星") is None
    for answer in (None, 3, ["a"], {"text": "a"}):
        assert "string" in check_answer(task, answer)


def test_box_answers_with_scores() -> None:
    answer = {"bboxes": [[0, 0, 1, 1], [1, 1, 2, 2]], "labels": ["a", "b"], "scores": [0.9, 1]}
    assert check_answer("<OD>", answer) is None
    assert "scores" in check_answer("<OD>", {**answer, "scores": [0.9]})
    assert "scores" in check_answer("<OD>", {**answer, "scores": [0.9, float("nan")]})
    assert "scores" in check_answer("<OD>", {**answer, "scores": [0.9, True]})
    assert "scores" in check_answer("<OD>", {**answer, "scores": "high"})
    # Open-vocabulary detection reads scores too.
    vocabulary = {"bboxes": [[0, 0, 1, 1]], "bboxes_labels": ["a"], "scores": [0.5, 0.4]}
    assert "scores" in check_answer("<OPEN_VOCABULARY_DETECTION>", vocabulary)


@pytest.mark.parametrize("task", ["<OD>", "<REGION_PROPOSAL>", "<CAPTION_TO_PHRASE_GROUNDING>"])
@pytest.mark.parametrize(
    ("box", "key_word"),
    [
        ([float("nan"), 0, 1, 1], "finite"),
        ([0, float("inf"), 1, 1], "finite"),
        ([0, 0, float("-inf"), 1], "finite"),
        ([True, 0, 1, 1], "finite"),
        ([0, 0, "1", 1], "finite"),
        ([0, 0, 1], "4"),
        ([0, 0, 1, 1, 2], "4"),
        ("0 0 1 1", "4"),
    ],
)
def test_bad_boxes(task: str, box: Any, key_word: str) -> None:
    message = check_answer(task, {"bboxes": [[0, 0, 1, 1], box], "labels": ["a", "b"]})
    assert message is not None
    assert "bboxes[1]" in message
    assert key_word in message


@pytest.mark.parametrize(
    ("task", "answer"),
    [
        ("<OD>", {"bboxes": [[0, 0, 1, 1]], "labels": ["a", "b"]}),
        ("<OD>", {"bboxes": [[0, 0, 1, 1]]}),
        ("<REGION_PROPOSAL>", {"bboxes": [], "labels": [""]}),
        ("<OCR_WITH_REGION>", {"quad_boxes": [[0, 0, 4, 0, 4, 2, 0, 2]], "labels": []}),
        ("<REGION_TO_SEGMENTATION>", {"polygons": [[[0, 0, 4, 0, 2, 3]]], "labels": ["", ""]}),
        ("<OPEN_VOCABULARY_DETECTION>", {"bboxes": [[0, 0, 1, 1]], "bboxes_labels": []}),
        ("<OPEN_VOCABULARY_DETECTION>", {"polygons": [[[0, 0, 4, 0, 2, 3]]], "polygons_labels": []}),
    ],
)
def test_labels_and_shapes_of_different_lengths(task: str, answer: dict) -> None:
    assert "labels" in check_answer(task, answer)


def test_labels_must_be_strings_and_lists() -> None:
    assert "string" in check_answer("<OD>", {"bboxes": [[0, 0, 1, 1]], "labels": [7]})
    assert "lists" in check_answer("<OD>", {"bboxes": [[0, 0, 1, 1]], "labels": "a"})
    assert "lists" in check_answer("<OD>", {"bboxes": None, "labels": []})


def test_structured_tasks_need_an_object() -> None:
    for task in ("<OD>", "<OCR_WITH_REGION>", "<REGION_TO_SEGMENTATION>", "<OPEN_VOCABULARY_DETECTION>"):
        assert "object" in check_answer(task, "a star")
        assert "object" in check_answer(task, None)


def test_missing_lists_are_an_empty_answer() -> None:
    # An answer with nothing in it is well formed: scoring counts it as finding nothing.
    for task in ("<OD>", "<OCR_WITH_REGION>", "<REGION_TO_SEGMENTATION>", "<OPEN_VOCABULARY_DETECTION>"):
        assert check_answer(task, {}) is None


@pytest.mark.parametrize(
    ("quad", "key_word"),
    [
        ([0, 0, 4, 0, 4, 2, 0], "8"),
        ([0, 0, 4, 0], "8"),
        ([0, 0, 4, 0, 4, 2, 0, float("nan")], "finite"),
        ([0, 0, 4, 0, 4, False, 0, 2], "finite"),
    ],
)
def test_bad_quads(quad: list, key_word: str) -> None:
    message = check_answer("<OCR_WITH_REGION>", {"quad_boxes": [quad], "labels": ["HI"]})
    assert "quad_boxes[0]" in message
    assert key_word in message


@pytest.mark.parametrize(
    "polygons",
    [
        [[0, 0, 4, 0, 2]],  # an odd count of numbers
        [[0, 0, 4, 0, 2, float("nan")]],
        [[0, 0, 4, 0, 2, float("inf")]],
        [[0, 0, 4, True, 2, 3]],
        [0, 0, 4, 0, 2, 3],  # one level of nesting missing
        "0 0 4 0 2 3",
    ],
)
def test_bad_polygons(polygons: Any) -> None:
    message = check_answer("<REGION_TO_SEGMENTATION>", {"polygons": [polygons], "labels": [""]})
    assert "polygons[0]" in message
    assert "finite" in message
    vocabulary = {"bboxes": [], "bboxes_labels": [], "polygons": [polygons], "polygons_labels": ["star"]}
    assert "polygons[0]" in check_answer("<OPEN_VOCABULARY_DETECTION>", vocabulary)


def test_open_vocabulary_box_problems_are_named() -> None:
    answer = {
        "bboxes": [[0, 0, float("nan"), 1]],
        "bboxes_labels": ["star"],
        "polygons": [],
        "polygons_labels": [],
    }
    assert "bboxes[0]" in check_answer("<OPEN_VOCABULARY_DETECTION>", answer)


# ---------------------------------------------------------------------------------------------------------
# Writing


def test_to_json_round_trips_through_read_predictions(tmp_path: Path) -> None:
    predictions = [
        Prediction("a", "<OD>", None, {"bboxes": [[0.5, 1, 2, 3]], "labels": ["star"], "scores": [0.25]}),
        Prediction("a", "<REGION_TO_CATEGORY>", (1.0, 2.0, 3.5, 4.0), "star<loc_1><loc_2><loc_3><loc_4>"),
        Prediction("画像", "<VQA>", "星はいくつ？", "二"),
        Prediction("b", "<OCR>", None, "line one\nline two"),
        Prediction(
            "b",
            "<REGION_TO_SEGMENTATION>",
            "<loc_1><loc_2><loc_3><loc_4>",
            {"polygons": [], "labels": []},
        ),
    ]
    path = tmp_path / "out.jsonl"
    with path.open("w", encoding="utf-8") as file:
        for index, prediction in enumerate(predictions):
            file.write(json.dumps(prediction.to_json(score=index / 4), ensure_ascii=False) + "\n")
    assert list(read_predictions(path)) == predictions


def test_to_json_layout() -> None:
    prediction = Prediction("a", "<REGION_TO_OCR>", (1, 2, 3, 4), "HI")
    assert prediction.to_json(truth="HI") == {
        "image_id": "a",
        "task": "<REGION_TO_OCR>",
        "text": [1, 2, 3, 4],
        "result": {"<REGION_TO_OCR>": "HI"},
        "truth": "HI",
    }
