"""Evaluation: the paper's metrics, computed by the libraries the field trusts, on every task.

`evaluate(model, dataset)` runs a model over every query a dataset's annotations can judge and scores the
answers; `score(predictions, dataset)` scores answers made elsewhere (any model, the data engine). Both
return task -> metric name -> value, e.g. `{"<OD>": {"AP": 0.41, "AP50": 0.63, ...}, "<CAPTION>":
{"CIDEr": 1.12, "BLEU-4": 0.35}}`, and with `out_dir` also write metrics.json, details.json,
predictions.jsonl and report.html (see `outputs`). Which metric each task gets, and which library computes
it, is listed in `metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from omnivis.errors import InputError
from omnivis.eval.evaluation import Evaluation, RecordSource, collect_queries, open_source, score_predictions
from omnivis.eval.inference import DecodingSettings, predict_queries
from omnivis.eval.metrics import LOWER_IS_BETTER, METRIC_NAMES, TASK_METRICS
from omnivis.eval.outputs import metrics_only, write_outputs
from omnivis.eval.predictions import Prediction, read_predictions
from omnivis.eval.report import format_table
from omnivis.tasks import TASKS

if TYPE_CHECKING:
    from omnivis.predictor import Predictor

__all__ = [
    "LOWER_IS_BETTER",
    "METRIC_NAMES",
    "TASK_METRICS",
    "DecodingSettings",
    "Evaluation",
    "Prediction",
    "evaluate",
    "format_table",
    "read_predictions",
    "run_evaluation",
    "score",
    "score_evaluation",
]


def evaluate(
    model: Predictor | str | Path,
    dataset: RecordSource | str | Path,
    tasks: Sequence[str] | None = None,
    *,
    limit: int | None = None,
    settings: DecodingSettings | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
    device: str = "cpu",
) -> dict[str, dict[str, float | None]]:
    """Runs a model over a dataset and scores every task it can.

    Args:
        model: A loaded `Predictor`, or what `omnivis.load` takes (a checkpoint directory or preset name).
        dataset: A dataset directory, an opened `Dataset`, or a list of records.
        tasks: Task tokens to evaluate; None means every task the records have annotations for.
        limit: Evaluate only the first `limit` records.
        settings: Batch size and decoding (default: batches of 16, 3 beams, up to 1024 new tokens).
        out_dir: Where to write metrics.json, details.json, predictions.jsonl and report.html.
        progress: Show a progress bar.
        device: Where a model given by name runs.

    Returns:
        Task -> metric name -> value (None where a metric is undefined).

    Raises:
        InputError: An unknown task or bad settings.
        DatasetError: A task named in `tasks` has no annotations in the records to judge it by.
    """
    evaluation = run_evaluation(
        model,
        dataset,
        tasks,
        limit=limit,
        settings=settings,
        out_dir=out_dir,
        progress=progress,
        device=device,
    )
    return metrics_only(evaluation)


def run_evaluation(
    model: Predictor | str | Path,
    dataset: RecordSource | str | Path,
    tasks: Sequence[str] | None = None,
    *,
    limit: int | None = None,
    settings: DecodingSettings | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
    device: str = "cpu",
) -> Evaluation:
    """`evaluate`, returning the whole `Evaluation` (details, answers, per-query scores)."""
    from omnivis.loading import load

    predictor = load(model, device=device) if isinstance(model, str | Path) else model
    source = open_source(dataset)
    collected = collect_queries(source, tasks, limit)
    answers = predict_queries(predictor, source, collected, settings or DecodingSettings(), progress=progress)
    evaluation = score_predictions(answers.predictions, collected)
    for task, refused in answers.refused.items():
        evaluation.details[task]["refused by the model"] = dict(refused)
    if out_dir is not None:
        name = str(model) if isinstance(model, str | Path) else "a model"
        write_outputs(out_dir, evaluation, source, title=f"omnivis evaluation of {name}")
    return evaluation


def score(
    predictions: Iterable[Prediction] | str | Path,
    dataset: RecordSource | str | Path,
    tasks: Sequence[str] | None = None,
    *,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, dict[str, float | None]]:
    """Scores predictions made elsewhere against a dataset's truth.

    Args:
        predictions: `Prediction`s, or the path of a predictions JSON Lines file (see `predictions`).
        dataset: A dataset directory, an opened `Dataset`, or a list of records.
        tasks: Task tokens to score; None means every task the predictions answer.
        limit: Score against only the first `limit` records (predictions for later ones are counted as
            skipped).
        out_dir: Where to write metrics.json, details.json, predictions.jsonl and report.html.

    Returns:
        Task -> metric name -> value.

    Raises:
        DatasetError: A malformed predictions file, or a task without annotations in the records.
    """
    return metrics_only(score_evaluation(predictions, dataset, tasks, limit=limit, out_dir=out_dir))


def score_evaluation(
    predictions: Iterable[Prediction] | str | Path,
    dataset: RecordSource | str | Path,
    tasks: Sequence[str] | None = None,
    *,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> Evaluation:
    """`score`, returning the whole `Evaluation`."""
    loaded = list(read_predictions(predictions) if isinstance(predictions, str | Path) else predictions)
    if tasks is None:
        answered = {prediction.task for prediction in loaded}
        tasks = [task for task in TASKS if task in answered]
        if not tasks:
            raise InputError("no predictions for any known task")
    source = open_source(dataset)
    evaluation = score_predictions(loaded, collect_queries(source, tasks, limit))
    if out_dir is not None:
        write_outputs(out_dir, evaluation, source, title="omnivis evaluation of a predictions file")
    return evaluation
