"""What an evaluation leaves on disk: metrics, details, per-sample predictions and the HTML report.

The output directory is built aside and moved into place whole (`omnivis.io.atomic_directory`), replacing
any earlier one, so a reader never sees the metrics of one run beside the predictions of another.

- `metrics.json`: task -> metric name -> value (null where a metric is undefined, e.g. AP without truth);
- `details.json`: per task, the counts behind the numbers (queries, answered, missing, skipped by reason)
  and the rules used (how detections are ranked, which protocol);
- `predictions.jsonl`: one line per answered query in the predictions-file format (so it can be scored
  again with `omnivis eval --predictions`), with the sample's `score` and its `truth` added;
- `report.html` + `gallery/`: the metrics table and each task's best and worst samples drawn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omnivis.eval.evaluation import GALLERY_SIZE, Evaluation, RecordSource
from omnivis.eval.predictions import Prediction
from omnivis.eval.queries import Query
from omnivis.eval.report import GalleryItem, TaskGallery, write_report
from omnivis.io import atomic_directory, atomic_write_json, atomic_write_text


def write_outputs(out_dir: str | Path, evaluation: Evaluation, source: RecordSource, title: str) -> Path:
    """Writes the evaluation's files into `out_dir` (replaced whole); returns the report's path."""
    out = Path(out_dir)
    with atomic_directory(out) as staging:
        atomic_write_json(staging / "metrics.json", evaluation.metrics)
        atomic_write_json(staging / "details.json", evaluation.details)
        atomic_write_text(staging / "predictions.jsonl", "".join(_prediction_lines(evaluation)))
        galleries = {task: task_gallery(evaluation, task, source) for task in evaluation.metrics}
        write_report(staging, evaluation.metrics, evaluation.details, galleries, title=title)
    return out / "report.html"


def _prediction_lines(evaluation: Evaluation) -> list[str]:
    lines = []
    for task, task_queries in evaluation.collected.queries.items():
        per_query = evaluation.scores[task].per_query
        for query, answer, score in zip(task_queries, evaluation.answers[task], per_query, strict=True):
            if answer is not None:
                prediction = Prediction(query.image_id, task, query.input, answer)
                lines.append(
                    json.dumps(prediction.to_json(score=score, truth=query.answer), ensure_ascii=False) + "\n"
                )
    return lines


def task_gallery(evaluation: Evaluation, task: str, source: RecordSource) -> TaskGallery:
    """The task's best and worst scored samples (ties broken by query order)."""
    task_queries = evaluation.collected.queries[task]
    per_query = evaluation.scores[task].per_query
    scored = sorted((score, number) for number, score in enumerate(per_query) if score is not None)
    worst = [number for _, number in scored[:GALLERY_SIZE]]
    best = [number for _, number in reversed(scored[len(worst) :][-GALLERY_SIZE:])]

    def item(number: int) -> GalleryItem:
        query = task_queries[number]
        image = source[evaluation.collected.positions[query.image_id]].image
        answer = evaluation.answers[task][number]
        return GalleryItem(
            task, query.image_id, _display_input(query), per_query[number], image, answer, query.answer
        )

    return TaskGallery([item(number) for number in best], [item(number) for number in worst])


def _display_input(query: Query) -> str | None:
    if query.input is None or isinstance(query.input, str):
        return query.input
    return ",".join(f"{value:g}" for value in query.input)


def metrics_only(evaluation: Evaluation) -> dict[str, Any]:
    """The metrics mapping the public API returns: task -> metric name -> value."""
    return {task: dict(values) for task, values in evaluation.metrics.items()}
