"""The metric registry end to end: every task's truth fed back as its answer scores the best value of every
metric, no answer scores the worst, and every query gets one per-query score.

The queries come from procedural-world records (three images, so CIDEr's document frequencies give its
n-grams non-zero weights: over a single image CIDEr is 0 even for a perfect caption).
"""

from __future__ import annotations

import pytest

from omnivis.eval.metrics import LOWER_IS_BETTER, METRIC_NAMES, TASK_METRICS
from omnivis.eval.queries import Query, queries
from omnivis.tasks import TASKS
from omnivis.world import VARIANTS, generate

SEED = 0
DETECTION = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"}
CAPTIONS = {"CIDEr", "BLEU-4"}
# The metrics each task reports, by their published names.
EXPECTED_NAMES = {
    "<OCR>": {"CER", "WER"},
    "<OCR_WITH_REGION>": {"F1"},
    "<CAPTION>": CAPTIONS,
    "<DETAILED_CAPTION>": CAPTIONS,
    "<MORE_DETAILED_CAPTION>": CAPTIONS,
    "<OD>": DETECTION,
    "<DENSE_REGION_CAPTION>": DETECTION,
    "<REGION_PROPOSAL>": DETECTION,
    "<CAPTION_TO_PHRASE_GROUNDING>": {"Recall@1"},
    "<REFERRING_EXPRESSION_SEGMENTATION>": {"mIoU", "oIoU"},
    "<REGION_TO_SEGMENTATION>": {"mIoU", "oIoU"},
    "<OPEN_VOCABULARY_DETECTION>": DETECTION | {"acc@0.5"},
    "<REGION_TO_CATEGORY>": {"accuracy"},
    "<REGION_TO_DESCRIPTION>": CAPTIONS,
    "<REGION_TO_OCR>": {"CER", "WER"},
    "<VQA>": {"accuracy"},
}
CAPTION_TASKS = {task for task, names in EXPECTED_NAMES.items() if names == CAPTIONS}
# CIDEr-D is 10 times a cosine similarity: 10 for a caption equal to its only reference.
BEST = {"CIDEr": 10.0, "CER": 0.0, "WER": 0.0}
WORST = {"CER": 1.0, "WER": 1.0}


@pytest.fixture(scope="module")
def world_queries() -> dict[str, list[Query]]:
    records = list(generate(3, SEED, VARIANTS["default"]))
    return {task: [query for record in records for query in queries(record, task)] for task in TASKS}


def test_every_task_has_a_metric() -> None:
    assert TASK_METRICS.keys() == TASKS.keys()
    assert set(EXPECTED_NAMES) == set(TASKS)
    assert LOWER_IS_BETTER == {"CER", "WER"}


@pytest.mark.parametrize("task", list(TASKS))
def test_truth_as_answers_scores_the_best(task: str, world_queries: dict[str, list[Query]]) -> None:
    found = world_queries[task]
    assert found, f"seed {SEED} should give {task} queries"
    score = TASK_METRICS[task](found, [query.answer for query in found])
    assert set(score.metrics) == EXPECTED_NAMES[task]
    assert set(score.metrics) <= set(METRIC_NAMES)
    assert score.rules
    for name, value in score.metrics.items():
        if value is None:  # COCO's undefined ranges (e.g. no large objects)
            assert name in DETECTION - {"AP", "AP50", "AP75", "AR100"}
        elif name == "CIDEr" and len(found) < 3:
            assert value > 0, name
        elif name == "BLEU-4":
            # pycocoevalcap adds a tiny smoothing constant to every n-gram precision.
            assert value == pytest.approx(1.0, abs=1e-6)
        else:
            assert value == pytest.approx(BEST.get(name, 1.0), abs=1e-9), name
    assert len(score.per_query) == len(found)
    if task not in CAPTION_TASKS:
        assert score.per_query == pytest.approx([1.0] * len(found), abs=1e-9)


@pytest.mark.parametrize("task", list(TASKS))
def test_no_answers_score_the_worst(task: str, world_queries: dict[str, list[Query]]) -> None:
    found = world_queries[task]
    score = TASK_METRICS[task](found, [None] * len(found))
    assert set(score.metrics) == EXPECTED_NAMES[task]
    for name, value in score.metrics.items():
        if value is not None:
            assert value == WORST.get(name, 0.0), name
    assert len(score.per_query) == len(found)
    assert score.per_query == [0.0] * len(found)


def test_region_to_category_accuracy_by_hand() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    found = [Query("a", "<REGION_TO_CATEGORY>", box, "region", (100, 100), "star", "star") for _ in range(4)]
    answers = [
        "Star<loc_0><loc_0><loc_100><loc_100>",  # echoed tokens and case aside, right
        "square<loc_0><loc_0><loc_100><loc_100>",
        None,
        "star",
    ]
    score = TASK_METRICS["<REGION_TO_CATEGORY>"](found, answers)
    assert score.metrics == {"accuracy": 2 / 4}
    assert score.per_query == [1.0, 0.0, 0.0, 1.0]
