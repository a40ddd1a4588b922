"""The model-vs-baseline comparison (`omnivis.eval.comparison`): verdicts, rows, the table and query caps,
checked against values worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from omnivis import demo
from omnivis.errors import InputError
from omnivis.eval.baselines import fit_baseline, score_baseline
from omnivis.eval.comparison import (
    BEATS,
    DOES_NOT_BEAT,
    NOT_EVALUATED,
    UNDEFINED,
    ComparisonRow,
    cap_queries,
    compare,
    format_comparison,
    score_baseline_on,
    verdict,
)
from omnivis.eval.evaluation import TaskQueries, collect_queries
from omnivis.eval.queries import Query
from omnivis.world import VARIANTS, generate_record


@pytest.mark.parametrize(
    ("metric", "model", "baseline", "expected"),
    [
        ("AP50", 0.30, 0.10, BEATS),
        ("AP50", 0.10, 0.30, DOES_NOT_BEAT),
        ("accuracy", 0.25, 0.25, DOES_NOT_BEAT),  # a tie does not beat the baseline
        ("CER", 0.40, 0.90, BEATS),  # lower is better
        ("CER", 0.90, 0.40, DOES_NOT_BEAT),
        ("CER", 1.00, 1.00, DOES_NOT_BEAT),
        ("accuracy", 0.50004, 0.5, DOES_NOT_BEAT),  # both shown as 0.5000
        ("accuracy", 0.50006, 0.5, BEATS),  # 0.5001 against 0.5000
        ("CER", 0.49996, 0.5, DOES_NOT_BEAT),  # both shown as 0.5000
        ("CIDEr", 2.5, 0, BEATS),  # an int is a value too
        ("CIDEr", None, 0.3, UNDEFINED),
        ("AP50", 0.3, None, UNDEFINED),
    ],
)
def test_verdict_is_direction_aware_and_judges_the_shown_values(
    metric: str, model: float | None, baseline: float | None, expected: str
) -> None:
    assert verdict(metric, model, baseline) == expected


@pytest.mark.parametrize("bad", [float("nan"), True, "0.5"])
def test_verdict_refuses_values_that_are_not_numbers(bad: Any) -> None:
    with pytest.raises(InputError, match="real number"):
        verdict("AP50", bad, 0.1)


def test_verdict_texts_say_plainly_where_the_budget_was_not_enough() -> None:
    assert BEATS == "beats the baseline"
    assert DOES_NOT_BEAT == "does not beat the baseline: the training budget was not enough"


def test_compare_takes_each_tasks_headline_metric_and_marks_tasks_without_truth() -> None:
    model = {"<VQA>": {"accuracy": 0.6}, "<OCR>": {"CER": 0.7, "WER": 0.1}, "<OD>": {"AP": 0.9, "AP50": 0.2}}
    baseline = {
        "<VQA>": {"accuracy": 0.4}, "<OCR>": {"CER": 1.0, "WER": 1.0}, "<OD>": {"AP": 0.0, "AP50": 0.3},
    }  # fmt: skip
    rows = compare(model, baseline, ["<OD>", "<VQA>", "<OCR>", "<CAPTION>"])
    assert [(row.task, row.metric, row.model, row.baseline, row.verdict) for row in rows] == [
        ("<OD>", "AP50", 0.2, 0.3, DOES_NOT_BEAT),  # AP (0.9 against 0.0) is not the headline metric
        ("<VQA>", "accuracy", 0.6, 0.4, BEATS),
        ("<OCR>", "CER", 0.7, 1.0, BEATS),
        ("<CAPTION>", "CIDEr", None, None, NOT_EVALUATED),
    ]
    assert rows[2].baseline_rule == "empty text"
    assert [row.task for row in compare(model, baseline)] == ["<VQA>", "<OCR>", "<OD>"]


def test_compare_refuses_a_task_the_baseline_was_not_scored_on_and_unknown_tasks() -> None:
    with pytest.raises(InputError, match="baseline was not scored on <VQA>"):
        compare({"<VQA>": {"accuracy": 0.6}}, {})
    with pytest.raises(InputError, match="no headline metric"):
        compare({"<NOPE>": {"accuracy": 0.6}}, {"<NOPE>": {"accuracy": 0.6}})


def test_format_comparison_as_written_out_by_hand() -> None:
    rows = [
        ComparisonRow("<VQA>", "accuracy", 0.5, 0.25, BEATS, "majority"),
        ComparisonRow("<OCR>", "CER", 0.8, 0.6, DOES_NOT_BEAT, "empty text"),
        ComparisonRow("<OD>", "AP50", None, None, NOT_EVALUATED, "mean box"),
    ]
    ocr_line = (
        "<OCR>  CER (lower is better)  0.8000    0.6000  does not beat the baseline: the training budget was "
        "not enough"
    )
    od_line = "<OD>   AP50" + " " * 22 + "n/a       n/a  " + NOT_EVALUATED
    expected = [
        "task   metric" + " " * 18 + "model  baseline  verdict",
        "-" * len(od_line),  # as long as the longest line
        "<VQA>  accuracy" + " " * 15 + "0.5000    0.2500  beats the baseline",
        ocr_line,
        od_line,
        "The model beats the trivial baseline on 1 of 2 tasks judged. Not on <OCR>: the training budget was "
        "not enough for them. Not judged: <OD>.",
    ]
    assert format_comparison(rows).split("\n") == expected


# ----- the queries both are asked -----


def _questions(count: int) -> TaskQueries:
    queries = [
        Query(f"image-{number}", "<VQA>", f"question {number}?", "question", (10, 10), [], "")
        for number in range(count)
    ]
    return TaskQueries({"<VQA>": queries}, {f"image-{n}": n for n in range(count)}, {})


def test_cap_queries_spreads_the_kept_queries_evenly() -> None:
    kept = cap_queries(_questions(10), 4).queries["<VQA>"]
    # Every 2.5th of 10: positions 0, 2.5, 5, 7.5 rounded down.
    assert [query.image_id for query in kept] == ["image-0", "image-2", "image-5", "image-7"]
    assert len(cap_queries(_questions(3), 4).queries["<VQA>"]) == 3
    assert cap_queries(_questions(3), None).queries["<VQA>"] == _questions(3).queries["<VQA>"]
    assert cap_queries(_questions(10), 4).positions == _questions(10).positions
    # A task's own cap wins over the common one, evenly spread the same way.
    assert len(cap_queries(_questions(10), 2, task_caps={"<VQA>": 5}).queries["<VQA>"]) == 5
    others = cap_queries(_questions(10), 2, task_caps={"<OD>": 5}).queries["<VQA>"]
    assert [query.image_id for query in others] == ["image-0", "image-5"]
    with pytest.raises(InputError, match="positive integer"):
        cap_queries(_questions(3), 0)
    with pytest.raises(InputError, match="<VQA> must be a positive integer"):
        cap_queries(_questions(3), 2, task_caps={"<VQA>": 0})


@pytest.fixture(scope="module")
def world_queries() -> TaskQueries:
    records = [generate_record(index, demo.DEMO_SEED, VARIANTS["default"]) for index in range(2, 4)]
    return collect_queries(records, None)


def test_baseline_on_a_selection_answers_each_asked_query_once(world_queries: TaskQueries) -> None:
    baseline = fit_baseline(generate_record(index, 1, VARIANTS["default"]) for index in range(6))
    asked = cap_queries(world_queries, 2)
    evaluation = score_baseline_on(baseline, world_queries, asked)
    assert list(evaluation.metrics) == list(asked.queries)
    for task, task_queries in asked.queries.items():
        assert evaluation.details[task]["answered"] == len(task_queries) <= 2
        assert "skipped predictions" not in evaluation.details[task]


def test_baseline_on_referring_queries_alone_takes_objects_from_every_query(
    world_queries: TaskQueries,
) -> None:
    # Without the image's detection queries in `asked`, the largest-object rule still finds the objects.
    baseline = fit_baseline(generate_record(index, 1, VARIANTS["default"]) for index in range(6))
    task = "<REFERRING_EXPRESSION_SEGMENTATION>"
    asked = TaskQueries({task: world_queries.queries[task]}, world_queries.positions, world_queries.sizes)
    alone = score_baseline_on(baseline, world_queries, asked).metrics[task]
    assert alone == score_baseline(baseline, world_queries, largest_object=True).metrics[task]


# ----- the world split and the model -----
