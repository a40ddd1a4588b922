"""Phrase grounding Recall@1, referring accuracy@0.5 and segmentation mIoU / oIoU on answers whose hits,
IoUs and pixel counts are worked out by hand (rectangles with integer corners rasterize to exactly their
area, which tests/eval/test_overlap.py checks against pycocotools)."""

from __future__ import annotations

import pytest

from omnivis.eval.localization import (
    first_box,
    grounding_hits,
    grounding_recall,
    referring_accuracy,
    segmentation_found,
    segmentation_overlap,
)

STAR = (0.0, 0.0, 10.0, 10.0)
SQUARE = (50.0, 50.0, 60.0, 60.0)
CIRCLE = (20.0, 20.0, 30.0, 30.0)


def _rectangle(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


# ---------------------------------------------------------------------------------------------------------
# Phrase grounding


def test_any_of_a_phrases_boxes_counts() -> None:
    truth = [("two shapes", [STAR, SQUARE])]
    assert grounding_hits({"bboxes": [list(SQUARE)], "labels": ["two shapes"]}, truth) == [True]
    assert grounding_hits({"bboxes": [list(STAR)], "labels": ["two shapes"]}, truth) == [True]
    assert grounding_hits({"bboxes": [list(CIRCLE)], "labels": ["two shapes"]}, truth) == [False]


def test_top_box_is_the_highest_score() -> None:
    truth = [("a star", [STAR])]
    answer = {"bboxes": [list(SQUARE), list(STAR)], "labels": ["a star", "a star"], "scores": [0.2, 0.9]}
    assert grounding_hits(answer, truth) == [True]
    # The same boxes with the scores swapped: the top box is now the wrong one.
    assert grounding_hits({**answer, "scores": [0.9, 0.2]}, truth) == [False]


def test_without_scores_the_first_box_is_the_top_one() -> None:
    truth = [("a star", [STAR])]
    labels = ["a star", "a star"]
    assert grounding_hits({"bboxes": [list(SQUARE), list(STAR)], "labels": labels}, truth) == [False]
    assert grounding_hits({"bboxes": [list(STAR), list(SQUARE)], "labels": labels}, truth) == [True]


def test_labels_and_phrases_are_compared_without_surrounding_white_space() -> None:
    answer = {"bboxes": [list(STAR)], "labels": ["  a star \n"]}
    assert grounding_hits(answer, [("a star", [STAR])]) == [True]
    assert grounding_hits(answer, [(" a star\t", [STAR])]) == [True]
    # Only the ends: inner white space and case must match exactly.
    assert grounding_hits({"bboxes": [list(STAR)], "labels": ["a  star"]}, [("a star", [STAR])]) == [False]
    assert grounding_hits({"bboxes": [list(STAR)], "labels": ["A star"]}, [("a star", [STAR])]) == [False]


def test_phrase_missing_from_the_answer_is_a_miss() -> None:
    truth = [("a star", [STAR]), ("a square", [SQUARE])]
    answer = {"bboxes": [list(STAR)], "labels": ["a star"]}
    assert grounding_hits(answer, truth) == [True, False]


def test_no_answer_misses_every_phrase() -> None:
    truth = [("a star", [STAR]), ("a square", [SQUARE])]
    assert grounding_hits(None, truth) == [False, False]
    assert grounding_hits({"bboxes": [], "labels": []}, truth) == [False, False]


def test_iou_of_exactly_one_half_is_a_hit() -> None:
    # (0, 0, 10, 5) against (0, 0, 10, 10): 50 / 100.
    assert grounding_hits({"bboxes": [[0, 0, 10, 5]], "labels": ["a star"]}, [("a star", [STAR])]) == [True]
    # (0, 0, 10, 4.9): 49 / 100.
    thin = {"bboxes": [[0, 0, 10, 4.9]], "labels": ["a star"]}
    assert grounding_hits(thin, [("a star", [STAR])]) == [False]


def test_duplicate_phrase_text_shares_one_top_box() -> None:
    # Two phrases of a caption with the same text are told apart by nothing in the answer but their text,
    # so both are judged by the same top box: the first answered box, which is the first phrase's.
    truth = [("a star", [STAR]), ("a star", [SQUARE])]
    answer = {"bboxes": [list(STAR), list(SQUARE)], "labels": ["a star", "a star"]}
    assert grounding_hits(answer, truth) == [True, False]


def test_grounding_recall_over_captions() -> None:
    truths = [
        [("a star", [STAR]), ("a square", [SQUARE])],  # 1 hit of 2
        [("a circle", [CIRCLE])],  # 1 hit of 1
        [("a star", [STAR]), ("a circle", [CIRCLE])],  # no answer: 0 hits of 2
    ]
    answers = [
        {"bboxes": [list(STAR), list(STAR)], "labels": ["a star", "a square"]},
        {"bboxes": [list(CIRCLE)], "labels": ["a circle"]},
        None,
    ]
    metrics, per_caption = grounding_recall(answers, truths)
    # Recall@1 counts phrases, not captions: (1 + 1 + 0) / (2 + 1 + 2).
    assert metrics == {"Recall@1": pytest.approx(2 / 5, abs=1e-12)}
    assert per_caption == pytest.approx([1 / 2, 1.0, 0.0], abs=1e-12)


def test_grounding_recall_of_nothing() -> None:
    assert grounding_recall([], []) == ({"Recall@1": 0.0}, [])


# ---------------------------------------------------------------------------------------------------------
# Referring expression comprehension


def test_first_box_is_used_not_the_best() -> None:
    answer = {"bboxes": [list(SQUARE), list(STAR)], "bboxes_labels": ["the star", "the star"]}
    metrics, ious = referring_accuracy([answer], [STAR])
    assert metrics == {"acc@0.5": 0.0}
    assert ious == [0.0]


def test_referring_iou_of_exactly_one_half_counts() -> None:
    answers = [{"bboxes": [[0, 0, 10, 5]]}, {"bboxes": [[0, 0, 10, 4.9]]}]
    metrics, ious = referring_accuracy(answers, [STAR, STAR])
    assert ious == pytest.approx([0.5, 0.49], abs=1e-12)
    assert metrics == {"acc@0.5": 0.5}


def test_polygon_answer_uses_the_first_objects_bounding_box() -> None:
    # The first object has two parts spanning (0, 0)-(10, 10); the second object lies elsewhere.
    answer = {
        "bboxes": [],
        "bboxes_labels": [],
        "polygons": [[[0, 0, 4, 0, 4, 4], [6, 6, 10, 6, 10, 10]], [_rectangle(*SQUARE)]],
        "polygons_labels": ["the star", "the star"],
    }
    assert first_box(answer) == [0, 0, 10, 10]
    metrics, ious = referring_accuracy([answer], [STAR])
    assert ious == [1.0]
    assert metrics == {"acc@0.5": 1.0}


def test_no_box_scores_zero() -> None:
    answers = [None, {"bboxes": [], "polygons": []}, {"bboxes": [], "polygons": [[]]}]
    metrics, ious = referring_accuracy(answers, [STAR, STAR, STAR])
    assert ious == [0.0, 0.0, 0.0]
    assert metrics == {"acc@0.5": 0.0}


def test_referring_accuracy_over_queries() -> None:
    answers = [
        {"bboxes": [list(STAR)]},  # IoU 1
        {"bboxes": [[0, 0, 2, 10]]},  # 20 / 100
        None,  # 0
        {"bboxes": [[50, 50, 60, 55]]},  # 50 / 100
    ]
    metrics, ious = referring_accuracy(answers, [STAR, STAR, SQUARE, SQUARE])
    assert ious == pytest.approx([1.0, 0.2, 0.0, 0.5], abs=1e-12)
    assert metrics == {"acc@0.5": 2 / 4}
    assert referring_accuracy([], []) == ({"acc@0.5": 0.0}, [])


# ---------------------------------------------------------------------------------------------------------
# Referring segmentation


def _polygon_answer(*objects: list[list[float]]) -> dict:
    return {"polygons": list(objects), "labels": [""] * len(objects)}


def test_miou_and_oiou_differ_on_queries_of_different_sizes() -> None:
    # Query A: a 10x5 prediction inside a 10x10 truth: I = 50, U = 100.
    # Query B: a 10x10 prediction beside a disjoint 10x20 truth: I = 0, U = 100 + 200 = 300.
    answers = [_polygon_answer([_rectangle(0, 0, 10, 5)]), _polygon_answer([_rectangle(0, 0, 10, 10)])]
    truths = [[_rectangle(0, 0, 10, 10)], [_rectangle(20, 0, 30, 20)]]
    metrics, ious = segmentation_overlap(answers, truths, [(40, 40), (40, 40)])
    assert ious == pytest.approx([50 / 100, 0 / 300], abs=1e-12)
    assert metrics["mIoU"] == pytest.approx((0.5 + 0.0) / 2, abs=1e-12)  # 0.25
    assert metrics["oIoU"] == pytest.approx((50 + 0) / (100 + 300), abs=1e-12)  # 0.125


def test_every_object_of_the_answer_counts() -> None:
    # Two answered objects, each covering half of the 10x10 truth, plus 5x10 outside it.
    answer = _polygon_answer([_rectangle(0, 0, 5, 10)], [_rectangle(5, 0, 10, 10), _rectangle(10, 0, 15, 10)])
    metrics, ious = segmentation_overlap([answer], [[_rectangle(0, 0, 10, 10)]], [(40, 40)])
    assert ious == pytest.approx([100 / 150], abs=1e-12)
    assert metrics == pytest.approx({"mIoU": 100 / 150, "oIoU": 100 / 150}, abs=1e-12)


def test_no_answer_scores_zero() -> None:
    truths = [[_rectangle(0, 0, 10, 10)]] * 2
    metrics, ious = segmentation_overlap([None, {"polygons": []}], truths, [(40, 40)] * 2)
    assert ious == [0.0, 0.0]
    assert metrics == {"mIoU": 0.0, "oIoU": 0.0}


def test_both_empty_agree_perfectly() -> None:
    # Nothing predicted and nothing true (a truth polygon of two vertices covers no pixel).
    sizes = [(40, 40), (40, 40)]
    metrics, ious = segmentation_overlap([_polygon_answer(), None], [[], [[0, 0, 5, 5]]], sizes)
    assert ious == [1.0, 1.0]
    assert metrics == {"mIoU": 1.0, "oIoU": 1.0}
    # Beside a query with pixels, the empty one adds 1 to the mean and nothing to oIoU's sums.
    answers = [_polygon_answer(), _polygon_answer([_rectangle(0, 0, 10, 5)])]
    metrics, ious = segmentation_overlap(answers, [[], [_rectangle(0, 0, 10, 10)]], [(40, 40), (40, 40)])
    assert ious == pytest.approx([1.0, 0.5], abs=1e-12)
    assert metrics == pytest.approx({"mIoU": 0.75, "oIoU": 50 / 100}, abs=1e-12)


def test_found_tells_a_missed_object_from_a_loose_outline() -> None:
    truths = [[_rectangle(0, 0, 10, 10)]] * 4 + [[]]
    answers = [
        _polygon_answer([_rectangle(0, 0, 10, 6)]),  # bounds IoU 60 / 100 = 0.6: found
        # Two small objects in opposite corners: their bounds together are the truth's.
        _polygon_answer([_rectangle(0, 0, 2, 2)], [_rectangle(8, 8, 10, 10)]),
        _polygon_answer([_rectangle(6, 0, 16, 10)]),  # I = 4 x 10 = 40, U = 160: 0.25, not found
        None,
        _polygon_answer([_rectangle(0, 0, 10, 10)]),  # no true vertex: nothing to find
    ]
    assert segmentation_found(answers, truths) == [True, True, False, False, False]
