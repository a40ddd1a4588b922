"""Overlap of shapes: box IoU by hand and against torchvision, polygon masks against pixels counted by hand,
and the greedy one-to-one matcher on small matrices whose matches are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from pycocotools import mask as mask_utils

from omnivis.eval.overlap import box_iou, greedy_matches, mask_overlap


def _rectangle(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    """An axis-aligned rectangle as a flat clockwise polygon."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


# ---------------------------------------------------------------------------------------------------------
# box_iou


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        # Two 2x2 squares sharing a 1x1 corner: 1 / (4 + 4 - 1).
        ((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7),
        # Two 4x2 boxes sharing half their width: 4 / (8 + 8 - 4).
        ((0, 0, 4, 2), (2, 0, 6, 2), 1 / 3),
        # A 2x2 box inside a 4x4 one: 4 / 16.
        ((0, 0, 4, 4), (1, 1, 3, 3), 0.25),
        # Half of a 10x10 box: 50 / 100, exactly the usual threshold.
        ((0, 0, 10, 5), (0, 0, 10, 10), 0.5),
        # Sharing an edge only: no area in common.
        ((0, 0, 1, 1), (1, 0, 2, 1), 0.0),
        # Far apart.
        ((0, 0, 1, 1), (5, 5, 6, 6), 0.0),
        # Fractional corners: 0.5 * 0.5 / (1 + 1 - 0.25).
        ((0.0, 0.0, 1.0, 1.0), (0.5, 0.5, 1.5, 1.5), 0.25 / 1.75),
    ],
)
def test_box_iou_hand_computed_pairs(first: tuple, second: tuple, expected: float) -> None:
    assert box_iou([first], [second])[0, 0] == pytest.approx(expected, abs=1e-12)
    # IoU is symmetric.
    assert box_iou([second], [first])[0, 0] == pytest.approx(expected, abs=1e-12)


def test_identical_boxes_overlap_fully() -> None:
    boxes = [(0, 0, 1, 1), (3.5, 2.25, 10.0, 7.75), (100, 200, 640, 480)]
    assert np.diag(box_iou(boxes, boxes)).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "degenerate",
    [
        (1, 1, 1, 3),  # zero width
        (1, 1, 3, 1),  # zero height
        (2, 2, 2, 2),  # a point
        (2, 2, 0, 0),  # inverted in both axes
        (2, 0, 0, 2),  # inverted in x only
        (0, 2, 2, 0),  # inverted in y only
    ],
)
def test_degenerate_boxes_overlap_nothing(degenerate: tuple) -> None:
    # Against a real box that spans them, and against themselves (an empty union): 0, never NaN.
    overlaps = box_iou([degenerate, degenerate], [(0, 0, 4, 4), degenerate])
    assert not np.isnan(overlaps).any()
    assert overlaps.tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_box_iou_shape_and_dtype() -> None:
    first = [(0, 0, 2, 2), (1, 1, 3, 3)]
    second = [(0, 0, 2, 2), (1, 1, 3, 3), (10, 10, 11, 11)]
    overlaps = box_iou(first, second)
    assert overlaps.shape == (2, 3)
    assert overlaps.dtype == np.float64
    expected = [[1.0, 1 / 7, 0.0], [1 / 7, 1.0, 0.0]]
    np.testing.assert_allclose(overlaps, expected, rtol=0, atol=1e-12)


def test_box_iou_empty_inputs() -> None:
    assert box_iou([], [(0, 0, 1, 1), (1, 1, 2, 2)]).shape == (0, 2)
    assert box_iou([(0, 0, 1, 1)], []).shape == (1, 0)
    assert box_iou([], []).shape == (0, 0)


def test_box_iou_agrees_with_torchvision() -> None:
    generator = np.random.default_rng(0)

    def random_boxes(count: int) -> np.ndarray:
        corners = generator.uniform(0, 100, size=(count, 2))
        sizes = generator.uniform(0.5, 40, size=(count, 2))  # valid: positive width and height
        return np.concatenate([corners, corners + sizes], axis=1)

    first, second = random_boxes(37), random_boxes(23)
    expected = torchvision.ops.box_iou(torch.from_numpy(first), torch.from_numpy(second)).numpy()
    assert expected.dtype == np.float64
    assert (expected > 0).any()  # the check must include overlapping pairs
    np.testing.assert_allclose(box_iou(first.tolist(), second.tolist()), expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# mask_overlap


@pytest.mark.parametrize(
    ("rectangle", "image_size", "pixels"),
    [
        ((0, 0, 4, 4), (10, 10), 16),
        ((2, 3, 7, 9), (10, 10), 30),
        ((1, 1, 2, 2), (10, 10), 1),
        ((0, 0, 10, 10), (10, 10), 100),
        ((0, 0, 8, 2), (10, 4), 16),
    ],
)
def test_pycocotools_rasterizes_integer_rectangles_exactly(
    rectangle: tuple, image_size: tuple[int, int], pixels: int
) -> None:
    # The assumption the hand counts below rest on: a rectangle with integer corners covers
    # (x1 - x0) * (y1 - y0) pixels.
    width, height = image_size
    rle = mask_utils.frPyObjects([[float(value) for value in _rectangle(*rectangle)]], height, width)
    assert mask_utils.area(rle).tolist() == [pixels]


def test_pycocotools_clips_to_the_image() -> None:
    # The 4x4 rectangle (8, 8)-(12, 12) keeps its 2x2 corner inside a 10x10 image.
    rle = mask_utils.frPyObjects([_rectangle(8.0, 8.0, 12.0, 12.0)], 10, 10)
    assert mask_utils.area(rle).tolist() == [4]


def test_mask_overlap_of_two_squares() -> None:
    # 4x4 squares offset by (2, 2): a 2x2 intersection, union 16 + 16 - 4.
    assert mask_overlap([_rectangle(0, 0, 4, 4)], [_rectangle(2, 2, 6, 6)], (10, 10)) == (4.0, 28.0)


def test_mask_overlap_counts_overlapping_polygons_of_one_side_once() -> None:
    # (0,0)-(4,4) and (2,0)-(6,4) cover (0,0)-(6,4): 24 pixels, not 16 + 16.
    predicted = [_rectangle(0, 0, 4, 4), _rectangle(2, 0, 6, 4)]
    assert mask_overlap(predicted, [_rectangle(0, 0, 6, 4)], (10, 10)) == (24.0, 24.0)


def test_mask_overlap_of_disjoint_parts() -> None:
    # Truth in two parts (4 + 6 pixels); the prediction covers the first part and 2 pixels besides it.
    truth = [_rectangle(0, 0, 2, 2), _rectangle(5, 5, 8, 7)]
    predicted = [_rectangle(0, 0, 2, 3)]
    assert mask_overlap(predicted, truth, (10, 10)) == (4.0, 4.0 + 6.0 + 2.0)


def test_mask_overlap_reads_image_size_as_width_then_height() -> None:
    # In a 10-wide, 4-high image the 8x2 rectangle fits (16 pixels); read as 4 wide it would keep 8.
    assert mask_overlap([_rectangle(0, 0, 8, 2)], [_rectangle(0, 0, 8, 2)], (10, 4)) == (16.0, 16.0)


def test_mask_overlap_ignores_pixels_outside_the_image() -> None:
    # Only the 2x2 corner of each 4x4 square lies in the image.
    assert mask_overlap([_rectangle(8, 8, 12, 12)], [_rectangle(8, 8, 12, 12)], (10, 10)) == (4.0, 4.0)


def test_polygons_with_fewer_than_three_vertices_are_dropped() -> None:
    truth = [_rectangle(0, 0, 6, 4)]  # 24 pixels
    # Four numbers would be read as a box by pycocotools; two vertices enclose nothing.
    assert mask_overlap([[0, 0, 4, 0]], truth, (10, 10)) == (0.0, 24.0)
    assert mask_overlap([[0, 0]], truth, (10, 10)) == (0.0, 24.0)
    # A short polygon beside a real one: only the real one (2x2) counts.
    assert mask_overlap([[0, 0, 4, 0], _rectangle(0, 0, 2, 2)], truth, (10, 10)) == (4.0, 24.0)
    # On the truth side as well.
    assert mask_overlap(truth, [[0, 0, 4, 0]], (10, 10)) == (0.0, 24.0)


def test_empty_prediction() -> None:
    assert mask_overlap([], [_rectangle(2, 3, 7, 9)], (10, 10)) == (0.0, 30.0)
    assert mask_overlap([_rectangle(2, 3, 7, 9)], [], (10, 10)) == (0.0, 30.0)
    assert mask_overlap([], [], (10, 10)) == (0.0, 0.0)


# ---------------------------------------------------------------------------------------------------------
# greedy_matches


def test_rows_choose_in_rank_order() -> None:
    # Row 0 comes first and takes column 0 (0.9), although row 1 overlaps it more (0.95); row 1 then falls
    # back to column 1.
    overlaps = np.array([[0.9, 0.6], [0.95, 0.7]])
    assert greedy_matches(overlaps, 0.5) == [(0, 0), (1, 1)]


def test_each_truth_is_matched_once() -> None:
    overlaps = np.array([[0.9], [0.9], [0.8]])
    assert greedy_matches(overlaps, 0.5) == [(0, 0)]


def test_best_remaining_column_wins() -> None:
    overlaps = np.array([[0.55, 0.8, 0.7]])
    assert greedy_matches(overlaps, 0.5) == [(0, 1)]


def test_threshold_is_inclusive() -> None:
    assert greedy_matches(np.array([[0.49, 0.5]]), 0.5) == [(0, 1)]
    assert greedy_matches(np.array([[0.49]]), 0.5) == []
    # A row below the threshold everywhere leaves its columns to later rows.
    assert greedy_matches(np.array([[0.3, 0.2], [0.6, 0.1]]), 0.5) == [(1, 0)]


def test_allowed_mask_forbids_pairs() -> None:
    overlaps = np.array([[0.9, 0.6], [0.8, 0.4]])
    allowed = np.array([[False, True], [True, True]])
    # Row 0 may not take column 0, so takes column 1; row 1 takes column 0.
    assert greedy_matches(overlaps, 0.5, allowed=allowed) == [(0, 1), (1, 0)]
    # Nothing allowed: nothing matched.
    assert greedy_matches(overlaps, 0.5, allowed=np.zeros((2, 2), dtype=bool)) == []


def test_tie_goes_to_the_first_column() -> None:
    assert greedy_matches(np.array([[0.7, 0.7, 0.7]]), 0.5) == [(0, 0)]
    # With the first taken, the next of the equals.
    assert greedy_matches(np.array([[0.7, 0.7, 0.7], [0.7, 0.7, 0.7]]), 0.5) == [(0, 0), (1, 1)]


def test_empty_matrices() -> None:
    assert greedy_matches(np.zeros((0, 3)), 0.5) == []
    assert greedy_matches(np.zeros((2, 0)), 0.5) == []
