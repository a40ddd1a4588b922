"""Evaluation end to end: a model (or a predictions file) against a dataset's truth, every task's metrics.

`evaluate(model, dataset)` asks the model every query the dataset's annotations can judge (see `queries`),
batched per task; `score(predictions, dataset)` takes answers made elsewhere (any model, the data engine).
Both end in the same place: predictions matched to queries by (image id, task, input), each task's metric
(`metrics.TASK_METRICS`), and, with `out_dir`, `metrics.json`, `details.json`, `predictions.jsonl` and a
`report.html` gallery of the best and worst samples.

Nothing is dropped silently. A prediction for an unknown task, an image the dataset does not hold, an input
that is none of the image's queries, a second answer to one query, or an answer that is malformed (NaN or
infinite coordinates included) is skipped and counted by reason in the task's details; a query left without
a valid answer is scored as an empty answer and counted as missing. Asking for a task the dataset has no
annotations for is an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from omnivis.data.records import Record
from omnivis.errors import DatasetError, InputError
from omnivis.eval.metrics import TASK_METRICS, TaskScore
from omnivis.eval.predictions import Prediction, check_answer
from omnivis.eval.queries import Query, input_key, queries
from omnivis.tasks import TASKS

# Samples shown per task at each end of the report's gallery.
GALLERY_SIZE = 3
# Where a predicted answer that fits no task is counted.
OTHER = "(other)"
# What each task's queries are made of, for the error when a dataset has none.
_NEEDS = {
    "<OCR>": "text lines", "<OCR_WITH_REGION>": "text lines", "<REGION_TO_OCR>": "text lines",
    "<CAPTION>": "brief captions", "<DETAILED_CAPTION>": "detailed captions",
    "<MORE_DETAILED_CAPTION>": "more_detailed captions", "<OD>": "regions", "<DENSE_REGION_CAPTION>": "regions",
    "<REGION_PROPOSAL>": "regions", "<OPEN_VOCABULARY_DETECTION>": "regions or referring expressions",
    "<CAPTION_TO_PHRASE_GROUNDING>": "groundings", "<REFERRING_EXPRESSION_SEGMENTATION>": "referring "
    "expressions of regions with polygons", "<REGION_TO_SEGMENTATION>": "regions with polygons",
    "<REGION_TO_CATEGORY>": "regions", "<REGION_TO_DESCRIPTION>": "region descriptions", "<VQA>": "questions",
}  # fmt: skip


class RecordSource(Protocol):
    """What evaluation reads records from: an `omnivis.data.Dataset`, or a list of records."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Record: ...
    def __iter__(self) -> Iterator[Record]: ...


@dataclass
class TaskQueries:
    """Every query of each task, and each record's place in the source (to fetch its image later) and size."""

    queries: dict[str, list[Query]] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Evaluation:
    """The outcome: metrics by task, the details behind them, and each query's answer and score."""

    metrics: dict[str, dict[str, float | None]]
    details: dict[str, dict[str, Any]]
    answers: dict[str, list[Any]]
    scores: dict[str, TaskScore]
    collected: TaskQueries


def open_source(dataset: RecordSource | str | Path) -> RecordSource:
    """A dataset directory opened, or records given directly, as a record source."""
    if isinstance(dataset, str | Path):
        from omnivis.data.dataset import open_dataset

        return open_dataset(dataset)
    return dataset


def collect_queries(
    source: RecordSource, tasks: Sequence[str] | None, limit: int | None = None
) -> TaskQueries:
    """The queries of the first `limit` records (all when None) for each task (every task when None).

    Raises:
        InputError: An unknown task or a limit that is not a positive integer.
        DatasetError: A task was asked for by name and the records have nothing to judge it by.
    """
    _check_tasks(tasks)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer, got {limit!r}")
    wanted = list(TASKS) if tasks is None else list(dict.fromkeys(tasks))
    collected = TaskQueries({task: [] for task in wanted})
    for position, record in enumerate(first_records(source, limit)):
        collected.positions[record.image_id] = position
        collected.sizes[record.image_id] = record.image_size
        for task in wanted:
            collected.queries[task].extend(queries(record, task))
    empty = [task for task in wanted if not collected.queries[task]]
    if tasks is not None and empty:
        lacking = "; ".join(f"{task} needs {_NEEDS[task]}" for task in empty)
        raise DatasetError(f"the dataset has nothing to evaluate {', '.join(empty)} by: {lacking}")
    for task in empty:
        del collected.queries[task]
    return collected


def _check_tasks(tasks: Sequence[str] | None) -> None:
    if tasks is None:
        return
    if isinstance(tasks, str) or not tasks:
        raise InputError(f"tasks must be a non-empty list of task tokens, got {tasks!r}")
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise InputError(f"unknown task(s) {', '.join(map(repr, unknown))}; known tasks: {', '.join(TASKS)}")


def first_records(source: RecordSource, limit: int | None) -> Iterator[Record]:
    """The source's first `limit` records (all when None), read in order."""
    for position, record in enumerate(source):
        if limit is not None and position >= limit:
            return
        yield record


def score_predictions(predictions: Iterable[Prediction], collected: TaskQueries) -> Evaluation:
    """Match predictions to the collected queries and compute every task's metrics."""
    index: dict[tuple[str, str, str], list[tuple[str, int]]] = {}
    for task, task_queries in collected.queries.items():
        for number, query in enumerate(task_queries):
            index.setdefault(query.key, []).append((task, number))
    answers = {task: [None] * len(task_queries) for task, task_queries in collected.queries.items()}
    answered = {task: [False] * len(task_queries) for task, task_queries in collected.queries.items()}
    skipped: dict[str, Counter[str]] = {task: Counter() for task in [*collected.queries, OTHER]}
    for prediction in predictions:
        bucket, outcome = _match(prediction, collected, index, answered)
        if isinstance(outcome, str):
            skipped[bucket][outcome] += 1
            continue
        for task, number in outcome:
            answers[task][number] = prediction.answer
            answered[task][number] = True
    scores = {task: TASK_METRICS[task](collected.queries[task], answers[task]) for task in collected.queries}
    details = {
        task: _details(collected.queries[task], answered[task], skipped[task], scores[task])
        for task in scores
    }
    if skipped[OTHER]:
        details[OTHER] = {"skipped": dict(skipped[OTHER])}
    metrics = {task: scores[task].metrics for task in scores}
    return Evaluation(metrics, details, answers, scores, collected)


def _prediction_key(prediction: Prediction, collected: TaskQueries) -> tuple[str, str, str]:
    """The prediction's (image id, task, input text), its region quantized on its image's size."""
    size = collected.sizes[prediction.image_id]
    return prediction.image_id, prediction.task, input_key(prediction.input, size)


def _match(
    prediction: Prediction,
    collected: TaskQueries,
    index: dict[tuple[str, str, str], list[tuple[str, int]]],
    answered: dict[str, list[bool]],
) -> tuple[str, str | list[tuple[str, int]]]:
    """(the task bucket to count it in, why the prediction is skipped or else the query slots it answers)."""
    task = prediction.task
    if task not in TASKS:
        return OTHER, f"unknown task {task[:40]!r}"
    if task not in collected.queries:
        return OTHER, f"task {task} not evaluated"
    if prediction.image_id not in collected.positions:
        return task, "image id not in the dataset (or past --limit)"
    problem = check_answer(task, prediction.answer)
    if problem is not None:
        # Counted by kind: the offending values (in the message after "got") would make every count a 1.
        return task, f"invalid answer: {problem.split(', got ')[0]}"
    if isinstance(prediction.input, tuple) and not _is_box(prediction.input):
        return task, "invalid input: a region must be four numbers"
    try:
        key = _prediction_key(prediction, collected)
    except InputError:
        return task, "invalid input: a region outside its image"
    if key not in index:
        return task, "input is none of the image's queries"
    slots = index[key]
    if any(answered[match_task][number] for match_task, number in slots):
        return task, "second answer to one query"
    return task, slots


def _is_box(values: tuple[Any, ...]) -> bool:
    return len(values) == 4 and all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in values
    )


def _details(
    task_queries: list[Query], answered: list[bool], skipped: Counter[str], score: TaskScore
) -> dict[str, Any]:
    details: dict[str, Any] = {
        "queries": len(task_queries),
        "answered": sum(answered),
        "missing (scored as empty answers)": len(task_queries) - sum(answered),
    }
    if skipped:
        details["skipped predictions"] = dict(skipped)
    details.update(score.counts)
    details["rules"] = score.rules
    return details
