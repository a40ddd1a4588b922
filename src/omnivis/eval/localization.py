"""Finding what a text names: phrase grounding Recall@1, referring expression accuracy@0.5, and referring
segmentation mIoU / oIoU. omnivis computes these itself (no library implements them apart from a dataset's
loader); the tests check them against hand-computed values.

- Phrase grounding (Flickr30k Entities protocol, "any box"): each phrase with true boxes counts once; the
  model's top-ranked box for the phrase (the highest score, else the first in the answer) is a hit when it
  overlaps any of the phrase's true boxes by IoU >= 0.5. A phrase is matched to the answer's labels by
  exact text in the form the parser leaves labels (non-ASCII removed, white space stripped); phrases the
  answer lacks are misses. Recall@1 = hits / phrases.
- Referring expression comprehension (paper, section 6: `<OPEN_VOCABULARY_DETECTION>` given the expression):
  the answer's first box (a polygon answer's first object's bounding box) is correct when its IoU with the
  referent's box is >= 0.5. accuracy@0.5 = correct / expressions.
- Referring segmentation and region-to-segmentation: the union of every polygon in the answer against the
  true polygons, both rasterized by pycocotools. mIoU is the mean of per-query IoUs, oIoU the sum of
  intersections over the sum of unions; a query whose prediction and truth both cover no pixel agrees
  perfectly (IoU 1). To tell a missed object from a loose outline, an answer also counts as having found its
  object when the bounds of all its polygons overlap those of the true ones by box IoU >= 0.5, the rule a
  referring expression's box is held to (`segmentation_found`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omnivis.eval.overlap import box_iou, mask_overlap
from omnivis.eval.queries import label_key

IOU_THRESHOLD = 0.5  # a box is right when it overlaps the truth by at least this much


def grounding_hits(
    answer: Mapping[str, Any] | None, truth: Sequence[tuple[str, Sequence[Sequence[float]]]]
) -> list[bool]:
    """For each true (phrase, boxes), whether the answer's top box for the phrase is right."""
    boxes = [] if answer is None else list(answer.get("bboxes", []))
    labels = [] if answer is None else [label_key(str(label)) for label in answer.get("labels", [])]
    scores = None if answer is None else answer.get("scores")
    hits = []
    for phrase, true_boxes in truth:
        candidates = [index for index, label in enumerate(labels) if label == label_key(phrase)]
        if not candidates:
            hits.append(False)
            continue
        top = max(candidates, key=lambda index: scores[index]) if scores else candidates[0]
        hits.append(bool((box_iou([boxes[top]], true_boxes) >= IOU_THRESHOLD).any()))
    return hits


def grounding_recall(
    answers: Sequence[Mapping[str, Any] | None],
    truths: Sequence[Sequence[tuple[str, Sequence[Sequence[float]]]]],
) -> tuple[dict[str, float], list[float]]:
    """Recall@1 over every phrase of every caption, and each caption's share of hits."""
    per_caption = [grounding_hits(answer, truth) for answer, truth in zip(answers, truths, strict=True)]
    phrases = sum(len(hits) for hits in per_caption)
    recall = sum(sum(hits) for hits in per_caption) / phrases if phrases else 0.0
    return {"Recall@1": recall}, [sum(hits) / len(hits) for hits in per_caption]


def first_box(answer: Mapping[str, Any] | None) -> list[float] | None:
    """The first box of an open-vocabulary detection answer: its first box, else its first polygon object's
    bounding box, else None."""
    if answer is None:
        return None
    if answer.get("bboxes"):
        return [float(value) for value in answer["bboxes"][0]]
    points = [value for polygon in (answer.get("polygons") or [[]])[0] for value in polygon]
    if len(points) < 4:
        return None
    xs, ys = points[0::2], points[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


def referring_accuracy(
    answers: Sequence[Mapping[str, Any] | None], referents: Sequence[Sequence[float]]
) -> tuple[dict[str, float], list[float]]:
    """accuracy@0.5 of the first predicted box against each referent, and each query's IoU."""
    ious = []
    for answer, referent in zip(answers, referents, strict=True):
        box = first_box(answer)
        ious.append(0.0 if box is None else float(box_iou([box], [referent])[0, 0]))
    correct = sum(iou >= IOU_THRESHOLD for iou in ious)
    return {"acc@0.5": correct / len(ious) if ious else 0.0}, ious


def segmentation_overlap(
    answers: Sequence[Mapping[str, Any] | None],
    truths: Sequence[Sequence[Sequence[float]]],
    image_sizes: Sequence[tuple[int, int]],
) -> tuple[dict[str, float], list[float]]:
    """mIoU and oIoU of predicted polygon masks against true ones, and each query's IoU."""
    intersections, unions, ious = [], [], []
    for answer, truth, size in zip(answers, truths, image_sizes, strict=True):
        intersection, union = mask_overlap(_answer_polygons(answer), truth, size)
        intersections.append(intersection)
        unions.append(union)
        ious.append(intersection / union if union > 0 else 1.0)
    total_union = sum(unions)
    metrics = {
        "mIoU": sum(ious) / len(ious) if ious else 0.0,
        "oIoU": sum(intersections) / total_union if total_union > 0 else 1.0,
    }
    return metrics, ious


def segmentation_found(
    answers: Sequence[Mapping[str, Any] | None], truths: Sequence[Sequence[Sequence[float]]]
) -> list[bool]:
    """Whether each answer found its object: the bounds of all its polygons overlap the bounds of the true
    polygons by box IoU >= 0.5 (an answer or truth without a vertex finds nothing)."""
    found = []
    for answer, truth in zip(answers, truths, strict=True):
        answer_box, truth_box = _bounds(_answer_polygons(answer)), _bounds(truth)
        found.append(
            answer_box is not None
            and truth_box is not None
            and float(box_iou([answer_box], [truth_box])[0, 0]) >= IOU_THRESHOLD
        )
    return found


def _answer_polygons(answer: Mapping[str, Any] | None) -> list[Sequence[float]]:
    """Every polygon of every object of a segmentation answer; none for a missing answer."""
    return [] if answer is None else [polygon for item in answer.get("polygons", []) for polygon in item]


def _bounds(polygons: Sequence[Sequence[float]]) -> list[float] | None:
    """(x0, y0, x1, y1) around every vertex of flat polygons; None without a vertex."""
    xs = [value for polygon in polygons for value in polygon[0::2]]
    ys = [value for polygon in polygons for value in polygon[1::2]]
    return [min(xs), min(ys), max(xs), max(ys)] if xs and ys else None
