"""How much two shapes overlap: boxes (by hand, the formula is one line), quadrilaterals (shapely) and polygon
masks (pycocotools' rasterizer, as COCO evaluates segmentation), and the greedy one-to-one matching that
turns overlaps into hits.

Degenerate shapes are legal input and overlap nothing: a box with x1 <= x0 or y1 <= y0 has no area, a
self-intersecting quadrilateral is repaired by shapely's `make_valid` before measuring, a polygon with fewer
than three vertices has no pixels. An intersection over an empty union is 0, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from shapely import make_valid
from shapely.geometry import Polygon

# A polygon needs three vertices (six numbers) to enclose pixels; pycocotools also reads a four-number
# "polygon" as a box, so shorter ones are dropped before rasterizing.
_MIN_POLYGON_COORDINATES = 6


def box_iou(first: Sequence[Sequence[float]], second: Sequence[Sequence[float]]) -> np.ndarray:
    """Intersection over union of every pair of (x0, y0, x1, y1) boxes: an (N, M) float64 array."""
    a = np.asarray(first, dtype=np.float64).reshape(-1, 4)  # (N, 4)
    b = np.asarray(second, dtype=np.float64).reshape(-1, 4)  # (M, 4)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])  # (N, M)
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    intersection = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)  # (N,)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # (M,)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def quad_iou(first: Sequence[Sequence[float]], second: Sequence[Sequence[float]]) -> np.ndarray:
    """Intersection over union of every pair of quadrilaterals (x0, y0, ..., x3, y3): an (N, M) array."""
    shapes_a = [_quad_shape(quad) for quad in first]
    shapes_b = [_quad_shape(quad) for quad in second]
    result = np.zeros((len(shapes_a), len(shapes_b)), dtype=np.float64)
    for row, shape_a in enumerate(shapes_a):
        for column, shape_b in enumerate(shapes_b):
            union = shape_a.union(shape_b).area
            if union > 0:
                result[row, column] = shape_a.intersection(shape_b).area / union
    return result


def _quad_shape(quad: Sequence[float]) -> Polygon:
    polygon = Polygon(list(zip(quad[0::2], quad[1::2], strict=True)))
    return polygon if polygon.is_valid else make_valid(polygon)


def mask_overlap(
    predicted: Sequence[Sequence[float]], truth: Sequence[Sequence[float]], image_size: tuple[int, int]
) -> tuple[float, float]:
    """Intersection and union, in pixels, of two polygon masks rasterized by pycocotools.

    Args:
        predicted: The predicted object's polygons, each flat (x0, y0, x1, y1, ...).
        truth: The true object's polygons.
        image_size: (width, height): pixels outside the image do not count.

    Returns:
        (intersection, union) pixel counts of the union of each side's polygons.
    """
    width, height = image_size
    masks = [_polygon_mask(polygons, width, height) for polygons in (predicted, truth)]
    if masks[0] is None or masks[1] is None:
        areas = [0.0 if mask is None else float(mask_utils.area(mask)) for mask in masks]
        return 0.0, areas[0] + areas[1]
    intersection = float(mask_utils.area(mask_utils.merge(masks, intersect=True)))
    union = float(mask_utils.area(mask_utils.merge(masks, intersect=False)))
    return intersection, union


def _polygon_mask(polygons: Sequence[Sequence[float]], width: int, height: int) -> dict | None:
    """One RLE mask for the union of the polygons, or None when none of them has three vertices."""
    kept = [
        [float(value) for value in polygon]
        for polygon in polygons
        if len(polygon) >= _MIN_POLYGON_COORDINATES
    ]
    if not kept:
        return None
    return mask_utils.merge(mask_utils.frPyObjects(kept, height, width))


def greedy_matches(
    overlaps: np.ndarray, threshold: float, allowed: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """One-to-one matches of predictions (rows, in rank order) to truths (columns).

    Each prediction in turn takes the still unmatched truth it overlaps most, if that overlap is at least
    `threshold` (and `allowed`, when given, permits the pair): the rule of COCO's and ICDAR's matchers.

    Returns:
        (prediction index, truth index) pairs.
    """
    taken: set[int] = set()
    matches = []
    for row in range(overlaps.shape[0]):
        candidates = [
            column
            for column in range(overlaps.shape[1])
            if column not in taken
            and overlaps[row, column] >= threshold
            and (allowed is None or bool(allowed[row, column]))
        ]
        if candidates:
            best = max(candidates, key=lambda column: overlaps[row, column])  # the first of equals on a tie
            taken.add(best)
            matches.append((row, best))
    return matches
