"""A model against the trivial baseline: one row per task, its headline metric, both values and a verdict.

`cap_queries` picks the queries both are asked (evenly spread, a bounded number per task), `evaluate_on`
runs and scores a model on them and `score_baseline_on` a fitted baseline.

A metric alone says little (see `baselines`): the question a reader has is whether the model learned anything
a constant answer does not already earn. `compare(model_metrics, baseline_metrics)` answers it per task with
the task's one headline metric (`metrics.HEADLINE_METRICS`), direction-aware (CER: lower is better), and
`format_comparison` / `comparison_html` show the rows as text and as an HTML table.

A model beats the baseline only if it is better at the precision the table shows (4 decimals): a verdict
must never contradict the two numbers printed beside it.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from omnivis.errors import InputError
from omnivis.eval.baselines import BASELINE_RULES, Baseline
from omnivis.eval.evaluation import Evaluation, RecordSource, TaskQueries, score_predictions
from omnivis.eval.inference import DecodingSettings, predict_queries
from omnivis.eval.metrics import HEADLINE_METRICS, LOWER_IS_BETTER

BEATS = "beats the baseline"
DOES_NOT_BEAT = "does not beat the baseline: the training budget was not enough"
UNDEFINED = "no verdict: the metric is undefined on this split"
NOT_EVALUATED = "not evaluated: the split has no truth for this task (use more scenes)"
if TYPE_CHECKING:
    from omnivis.predictor import Predictor

# Values are compared as shown: rounded to this many decimals.
DECIMALS = 4


@dataclass(frozen=True)
class ComparisonRow:
    """One task's line of the comparison.

    Attributes:
        task: The task token.
        metric: Its headline metric's name.
        model: The model's value (None where undefined).
        baseline: The baseline's value (None where undefined).
        verdict: `BEATS`, `DOES_NOT_BEAT`, `UNDEFINED` or `NOT_EVALUATED`.
        baseline_rule: What the baseline answers for this task (`BASELINE_RULES`).
    """

    task: str
    metric: str
    model: float | None
    baseline: float | None
    verdict: str
    baseline_rule: str


def verdict(metric: str, model: float | None, baseline: float | None) -> str:
    """Whether `model` beats `baseline` on `metric` (lower is better for `LOWER_IS_BETTER` ones).

    Both are rounded to `DECIMALS` first; a tie does not beat the baseline.

    Returns:
        `BEATS`, `DOES_NOT_BEAT`, or `UNDEFINED` when either value is None.

    Raises:
        InputError: A value that is neither a real number nor None, or NaN.
    """
    for value in (model, baseline):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value)
        ):
            raise InputError(f"a metric value must be a real number or None, got {value!r}")
    if model is None or baseline is None:
        return UNDEFINED
    shown_model, shown_baseline = round(float(model), DECIMALS), round(float(baseline), DECIMALS)
    better = shown_model < shown_baseline if metric in LOWER_IS_BETTER else shown_model > shown_baseline
    return BEATS if better else DOES_NOT_BEAT


def compare(
    model_metrics: Mapping[str, Mapping[str, float | None]],
    baseline_metrics: Mapping[str, Mapping[str, float | None]],
    tasks: Sequence[str] | None = None,
) -> list[ComparisonRow]:
    """One row per task, on the task's headline metric.

    Args:
        model_metrics: The model's metrics, task -> metric name -> value.
        baseline_metrics: The baseline's, scored on the same queries.
        tasks: The rows, in order; a task missing from `model_metrics` gets a `NOT_EVALUATED` row. None:
            the tasks of `model_metrics`.

    Raises:
        InputError: A task without a headline metric, or one the model was scored on and the baseline not.
    """
    rows = []
    for task in list(model_metrics) if tasks is None else tasks:
        if task not in HEADLINE_METRICS:
            raise InputError(f"no headline metric for task {task!r}")
        metric, rule = HEADLINE_METRICS[task], BASELINE_RULES.get(task, "")
        if task not in model_metrics:
            rows.append(ComparisonRow(task, metric, None, None, NOT_EVALUATED, rule))
            continue
        if task not in baseline_metrics:
            raise InputError(f"the baseline was not scored on {task}: score it on the same queries")
        model_value, baseline_value = model_metrics[task].get(metric), baseline_metrics[task].get(metric)
        said = verdict(metric, model_value, baseline_value)
        rows.append(ComparisonRow(task, metric, model_value, baseline_value, said, rule))
    return rows


def cap_queries(
    collected: TaskQueries, per_task: int | None, *, task_caps: Mapping[str, int] | None = None
) -> TaskQueries:
    """At most `per_task` queries of each task (all when None), evenly spaced in query order, so spread over
    the images; `task_caps` gives some tasks their own cap. Each record's position and size are kept."""
    caps = dict(task_caps or {})
    for name, value in [("per_task", per_task), *caps.items()]:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"{name} must be a positive integer or None, got {value!r}")
    kept = {}
    for task, task_queries in collected.queries.items():
        cap = caps.get(task, per_task)
        count = len(task_queries)
        if cap is None:
            kept[task] = list(task_queries)
            continue
        step = max(count / cap, 1.0)
        kept[task] = [task_queries[int(number * step)] for number in range(min(count, cap))]
    return TaskQueries(kept, dict(collected.positions), dict(collected.sizes))


def evaluate_on(
    predictor: Predictor, source: RecordSource, asked: TaskQueries, settings: DecodingSettings, *,
    progress: bool = False,
) -> Evaluation:  # fmt: skip
    """The model's answers to `asked` (e.g. from `cap_queries`), scored: `omnivis.eval.run_evaluation` on
    chosen queries, with the queries the model refused counted in their task's details."""
    answers = predict_queries(predictor, source, asked, settings, progress=progress)
    evaluation = score_predictions(answers.predictions, asked)
    for task, refused in answers.refused.items():
        evaluation.details[task]["refused by the model"] = dict(refused)
    return evaluation


def score_baseline_on(baseline: Baseline, everything: TaskQueries, asked: TaskQueries) -> Evaluation:
    """The baseline scored on `asked`, a selection of `everything` (see `cap_queries`), with the largest
    object rule.

    It answers all of `everything`, since the largest-object rule reads each image's detection queries and
    the selection may have left those out, then keeps one answer per asked query (key).
    """
    every_query = [query for task_queries in everything.queries.values() for query in task_queries]
    wanted = {query.key for task_queries in asked.queries.values() for query in task_queries}
    answers = baseline.predict(every_query, largest_object=True)
    predictions, seen = [], set()
    for query, prediction in zip(every_query, answers, strict=True):
        if query.key in wanted and query.key not in seen:
            seen.add(query.key)
            predictions.append(prediction)
    return score_predictions(predictions, asked)


def format_value(value: float | None) -> str:
    """A metric value as the tables show it: `DECIMALS` decimals, or "n/a" for None."""
    return "n/a" if value is None else f"{float(value):.{DECIMALS}f}"


def _metric_label(metric: str) -> str:
    return f"{metric} (lower is better)" if metric in LOWER_IS_BETTER else metric


def format_comparison(rows: Sequence[ComparisonRow]) -> str:
    """The rows as a plain-text table: task, metric, model, baseline, verdict; then a count of wins.

    Lines carry no trailing spaces and the text no final newline.
    """
    header = ["task", "metric", "model", "baseline", "verdict"]
    cells = [header] + [
        [
            row.task,
            _metric_label(row.metric),
            format_value(row.model),
            format_value(row.baseline),
            row.verdict,
        ]  # fmt: skip
        for row in rows
    ]
    widths = [max(len(line[index]) for line in cells) for index in range(len(header))]
    lines = []
    for line in cells:
        task, metric, model, baseline, said = line
        parts = [task.ljust(widths[0]), metric.ljust(widths[1]), model.rjust(widths[2]),
                 baseline.rjust(widths[3]), said]  # fmt: skip
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "-" * max(len(line) for line in lines))
    lines.append(summary(rows))
    return "\n".join(lines)


def summary(rows: Sequence[ComparisonRow]) -> str:
    """One sentence: on how many tasks the model beats the baseline, and which it does not."""
    wins = [row.task for row in rows if row.verdict == BEATS]
    losses = [row.task for row in rows if row.verdict == DOES_NOT_BEAT]
    judged = [row for row in rows if row.verdict in (BEATS, DOES_NOT_BEAT)]
    text = f"The model beats the trivial baseline on {len(wins)} of {len(judged)} tasks judged."
    if losses:
        text += f" Not on {', '.join(losses)}: the training budget was not enough for them."
    unjudged = [row.task for row in rows if row not in judged]
    if unjudged:
        text += f" Not judged: {', '.join(unjudged)}."
    return text


def comparison_html(rows: Sequence[ComparisonRow]) -> str:
    """The rows as an HTML table (the report's `metrics` table style), every text escaped."""
    names = ("task", "metric", "model", "baseline", "verdict", "the baseline answers")
    header = "".join(f"<th>{name}</th>" for name in names)
    lines = []
    for row in rows:
        colour = {BEATS: "#176b2c", DOES_NOT_BEAT: "#a33"}.get(row.verdict, "#555")
        lines.append(
            f"<tr><th>{html.escape(row.task)}</th><td>{html.escape(_metric_label(row.metric))}</td>"
            f'<td class="value">{format_value(row.model)}</td>'
            f'<td class="value">{format_value(row.baseline)}</td>'
            f'<td style="color: {colour}">{html.escape(row.verdict)}</td>'
            f"<td>{html.escape(row.baseline_rule)}</td></tr>"
        )
    table = f'<table class="metrics">\n<tr>{header}</tr>\n' + "\n".join(lines) + "\n</table>"
    return table + f"\n<p><strong>{html.escape(summary(rows))}</strong></p>"
