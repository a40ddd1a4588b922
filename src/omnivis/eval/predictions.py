"""Predictions as data: one answer of one task on one image, read from and written to JSON Lines.

A predictions file holds one JSON object per line, as `omnivis eval` writes it and as any other program (or
the data engine) may:

    {"image_id": "world-default-0-0000007", "task": "<OD>", "text": null,
     "result": {"<OD>": {"bboxes": [[x0, y0, x1, y1], ...], "labels": [...], "scores": [...]}}}

`result` is the dict `run()` returns; `text` is the task's input (a phrase, a question, or a region as
[x0, y0, x1, y1] pixels or `<loc_..>` text) and may be left out for tasks without input. A line that is not
such an object is an error naming the file and line. An answer whose structure does not fit its task, or
that holds a NaN or infinite coordinate, is not an error of the file: `check_answer` names what is wrong,
and scoring counts the prediction as invalid (see `omnivis.eval.evaluation`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnivis.errors import DatasetError
from omnivis.eval.queries import TaskInput
from omnivis.tasks import TASKS

# The keys of each structured answer type and how many numbers each shape of it holds (None: any even count).
_BOX_KEYS = {
    "description_with_bboxes": ("bboxes", "labels"),
    "bboxes": ("bboxes", "labels"),
    "phrase_grounding": ("bboxes", "labels"),
}


@dataclass(frozen=True)
class Prediction:
    """One answer of one task on one image.

    Attributes:
        image_id: The record's id.
        task: The task token.
        input: The task's input, as `run` took it.
        answer: The answer under the task's key of `run()`'s result (a string or a dict).
    """

    image_id: str
    task: str
    input: TaskInput
    answer: Any

    def to_json(self, **extra: Any) -> dict[str, Any]:
        """The prediction as one JSON Lines object, with any extra fields (a score, the truth) after it."""
        task_input = list(self.input) if isinstance(self.input, tuple) else self.input
        return {
            "image_id": self.image_id,
            "task": self.task,
            "text": task_input,
            "result": {self.task: self.answer},
            **extra,
        }


def read_predictions(path: str | Path) -> Iterator[Prediction]:
    """The predictions of a JSON Lines file, in order; blank lines are skipped.

    Raises:
        DatasetError: The file cannot be read, or a line is not a JSON object with a string "image_id", a
            string "task" and a "result" object holding the task's answer.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield _parse_line(line, f"{path}, line {number}")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read predictions file {path}: {error}") from error


def _parse_line(line: str, where: str) -> Prediction:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    image_id, task, result = entry.get("image_id"), entry.get("task"), entry.get("result")
    if not isinstance(image_id, str) or not image_id:
        raise DatasetError(f'{where}: "image_id" must be a non-empty string, got {image_id!r}')
    if not isinstance(task, str):
        raise DatasetError(f'{where}: "task" must be a task token such as "<OD>", got {task!r}')
    if not isinstance(result, dict) or task not in result:
        raise DatasetError(f'{where}: "result" must be the object run() returns, keyed by the task {task!r}')
    task_input = entry.get("text")
    if isinstance(task_input, list):
        task_input = tuple(task_input)
    elif task_input is not None and not isinstance(task_input, str):
        raise DatasetError(
            f'{where}: "text" must be a string, a list of four numbers or null, got {task_input!r}'
        )
    return Prediction(image_id, task, task_input, result[task])


def check_answer(task: str, answer: Any) -> str | None:
    """What is wrong with an answer's structure for its task, or None when it is well formed.

    Checks what scoring reads: the answer type, lists of equal length, shapes with the right count of
    numbers, and that every coordinate and score is a finite number.
    """
    parse_type = TASKS[task].parse_type
    if parse_type == "pure_text":
        return (
            None
            if isinstance(answer, str)
            else f"a {task} answer must be a string, got {type(answer).__name__}"
        )
    if not isinstance(answer, Mapping):
        return f"a {task} answer must be an object, got {type(answer).__name__}"
    if parse_type in _BOX_KEYS:
        return _check_shapes(answer, "bboxes", "labels", 4) or _check_scores(answer, "bboxes")
    if parse_type == "ocr":
        return _check_shapes(answer, "quad_boxes", "labels", 8)
    if parse_type == "polygons":
        return _check_polygons(answer, "polygons", "labels")
    # Open-vocabulary detection answers with boxes, polygons, or both lists.
    return (
        _check_shapes(answer, "bboxes", "bboxes_labels", 4)
        or _check_scores(answer, "bboxes")
        or _check_polygons(answer, "polygons", "polygons_labels")
    )


def _check_shapes(answer: Mapping[str, Any], shapes_key: str, labels_key: str, size: int) -> str | None:
    shapes, labels = answer.get(shapes_key, []), answer.get(labels_key, [])
    problem = _check_labels(shapes, labels, shapes_key, labels_key)
    if problem:
        return problem
    for index, shape in enumerate(shapes):
        if not _is_numbers(shape) or len(shape) != size:
            return f"{shapes_key}[{index}] must be {size} finite numbers, got {shape!r}"
    return None


def _check_polygons(answer: Mapping[str, Any], polygons_key: str, labels_key: str) -> str | None:
    objects, labels = answer.get(polygons_key, []), answer.get(labels_key, [])
    problem = _check_labels(objects, labels, polygons_key, labels_key)
    if problem:
        return problem
    for index, polygons in enumerate(objects):
        if not isinstance(polygons, list) or not all(_is_numbers(p) and len(p) % 2 == 0 for p in polygons):
            return (
                f"{polygons_key}[{index}] must be a list of polygons of finite x, y pairs, got {polygons!r}"
            )
    return None


def _check_labels(shapes: Any, labels: Any, shapes_key: str, labels_key: str) -> str | None:
    if not isinstance(shapes, list) or not isinstance(labels, list):
        return f"{shapes_key!r} and {labels_key!r} must be lists"
    if len(shapes) != len(labels):
        return f"{len(shapes)} {shapes_key} but {len(labels)} {labels_key}"
    if not all(isinstance(label, str) for label in labels):
        return f"every one of {labels_key} must be a string"
    return None


def _check_scores(answer: Mapping[str, Any], shapes_key: str) -> str | None:
    scores = answer.get("scores")
    if scores is None:
        return None
    if not _is_numbers(scores) or len(scores) != len(answer.get(shapes_key, [])):
        return f"'scores' must be one finite number per box, got {scores!r}"
    return None


def _is_numbers(values: Any) -> bool:
    return isinstance(values, Sequence) and not isinstance(values, str) and all(_is_finite(v) for v in values)


def _is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
