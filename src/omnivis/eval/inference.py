"""Asking a model every collected query: records read once in order, queries batched per task.

Each record's image is decoded once and shared by all its queries; queries wait in one queue per task and
run as a batch (`Predictor.run_batch`, one task per batch, each image with its own input) when `batch_size`
of them are waiting, and the rest at the end. Boxes are scored (`return_scores=True`) so that detection AP
ranks them by the model's confidence.

A query the model cannot take (its prompt is longer than the model's position table, say) does not stop
the evaluation: its batch is re-run one query at a time, and each refused query is counted by reason and
scored as unanswered.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from omnivis.errors import InputError
from omnivis.eval.evaluation import RecordSource, TaskQueries, first_records
from omnivis.eval.predictions import Prediction
from omnivis.eval.queries import Query
from omnivis.images import load_image

if TYPE_CHECKING:
    from omnivis.predictor import Predictor


@dataclass
class DecodingSettings:
    """How answers are generated during evaluation.

    Attributes:
        batch_size: Queries of one task run together.
        num_beams: Beam width; 3 as the official examples, 1 for greedy (faster).
        max_new_tokens: Longest answer; capped by the model's position table.
        task_max_new_tokens: Task -> a tighter cap for that task's answers (e.g. a few words for VQA), so a
            model that never ends an answer costs a bounded time; `max_new_tokens` still caps it.
    """

    batch_size: int = 16
    num_beams: int = 3
    max_new_tokens: int = 1024
    task_max_new_tokens: dict[str, int] = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("batch_size", "num_beams", "max_new_tokens"):
            _check_positive(name, getattr(self, name))
        for task, value in self.task_max_new_tokens.items():
            _check_positive(f"task_max_new_tokens[{task!r}]", value)

    def answer_length(self, task: str) -> int:
        """The longest answer `task` may get."""
        return min(self.max_new_tokens, self.task_max_new_tokens.get(task, self.max_new_tokens))


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class ModelAnswers:
    """The model's predictions, and the queries it refused, counted by task and reason."""

    predictions: list[Prediction] = field(default_factory=list)
    refused: dict[str, Counter[str]] = field(default_factory=dict)


def predict_queries(
    predictor: Predictor,
    source: RecordSource,
    collected: TaskQueries,
    settings: DecodingSettings,
    *,
    progress: bool = True,
) -> ModelAnswers:
    """Runs the model on every collected query.

    Args:
        predictor: The loaded model.
        source: The records the queries were collected from.
        collected: The queries, by task.
        settings: Batch size and decoding.
        progress: Show a progress bar over records (on stderr).

    Returns:
        One prediction per answered query, and the refused ones counted.
    """
    settings.validate()
    by_image: dict[str, list[Query]] = {}
    for task_queries in collected.queries.values():
        for query in task_queries:
            by_image.setdefault(query.image_id, []).append(query)
    answers = ModelAnswers()
    waiting: dict[str, list[tuple[Any, Query]]] = {}
    records = first_records(source, len(collected.positions))
    for record in tqdm(
        records, total=len(collected.positions), desc="evaluating", unit="image", disable=not progress
    ):
        image_queries = by_image.get(record.image_id, [])
        picture = load_image(record.image) if image_queries else None
        for query in image_queries:
            queue = waiting.setdefault(query.task, [])
            queue.append((picture, query))
            if len(queue) == settings.batch_size:
                _run(predictor, query.task, queue, settings, answers)
                queue.clear()
    for task, queue in waiting.items():
        if queue:
            _run(predictor, task, queue, settings, answers)
    return answers


def _run(
    predictor: Predictor,
    task: str,
    batch: list[tuple[Any, Query]],
    settings: DecodingSettings,
    answers: ModelAnswers,
) -> None:
    """One batch of a task; on an input the model refuses, each query alone, the refused ones counted."""
    try:
        results = _answer(predictor, task, batch, settings)
    except InputError as error:
        if len(batch) > 1:
            for item in batch:
                _run(predictor, task, [item], settings, answers)
        else:
            answers.refused.setdefault(task, Counter())[f"the model refused the input: {error}"] += 1
        return
    answers.predictions.extend(
        _prediction(query, result) for (_, query), result in zip(batch, results, strict=True)
    )


def _answer(
    predictor: Predictor, task: str, batch: list[tuple[Any, Query]], settings: DecodingSettings
) -> list[Any]:
    pictures = [picture for picture, _ in batch]
    texts = [query.input for _, query in batch]
    return predictor.run_batch(
        pictures, task, texts, num_beams=settings.num_beams, max_new_tokens=settings.answer_length(task),
        return_scores=True,
    )  # fmt: skip


def _prediction(query: Query, result: dict[str, Any]) -> Prediction:
    return Prediction(query.image_id, query.task, query.input, result[query.task])
