"""Box detection quality by COCO's AP and AR, computed by pycocotools' `COCOeval` (never re-implemented).

Generated sequences carry no scores of their own. COCO's AP ranks detections by score, so each box's score
is the one `run(..., return_scores=True)` gives it (the geometric-mean probability of its four location
tokens); a box without a score is ranked by its place in the answer, scored 1 / (1 + position), so that every
image's first box comes before every image's second. `RANKING_RULE` says this beside the numbers.

Images, categories and annotations are numbered here; labels are matched to categories by exact text in the
form the reference parser leaves labels (`label_key`: non-ASCII removed, white space stripped). A predicted label that names no category of the truth cannot be a true
positive of any category, and COCOeval scores categories one by one, so such boxes are left out and counted
(`unknown_labels`). Class-agnostic tasks (region proposals, dense region captions) put every box in one
category. COCOeval's -1 (a quantity without ground truth) becomes None.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from omnivis.eval.queries import GroundTruthBox, label_key

RANKING_RULE = (
    "detections ranked by their box scores (location-token probabilities); a box without a score by its "
    "position in the answer, scored 1 / (1 + position)"
)
# COCOeval.stats order, as `summarize` fills it; the ones omnivis reports are named.
_STAT_NAMES = {0: "AP", 1: "AP50", 2: "AP75", 3: "APs", 4: "APm", 5: "APl", 8: "AR100"}
METRIC_NAMES: tuple[str, ...] = tuple(_STAT_NAMES.values())


@dataclass(frozen=True)
class DetectionSample:
    """One image's truth and predicted boxes.

    Attributes:
        image_size: (width, height).
        truth: The boxes to be found.
        boxes: Predicted (x0, y0, x1, y1) boxes.
        labels: The label of each predicted box.
        scores: The score of each predicted box, or None to rank by position.
    """

    image_size: tuple[int, int]
    truth: Sequence[GroundTruthBox]
    boxes: Sequence[Sequence[float]]
    labels: Sequence[str]
    scores: Sequence[float] | None = None


@dataclass
class DetectionResult:
    """COCO metrics and how many predicted boxes had a label outside the truth's categories."""

    metrics: dict[str, float | None]
    unknown_labels: int = 0
    notes: list[str] = field(default_factory=list)


def ranking_scores(count: int, scores: Sequence[float] | None) -> list[float]:
    """The scores detections are ranked by: the given ones, else 1 / (1 + position)."""
    if scores is not None:
        return [float(score) for score in scores]
    return [1.0 / (1 + position) for position in range(count)]


def coco_detection_metrics(
    samples: Sequence[DetectionSample], *, class_agnostic: bool = False
) -> DetectionResult:
    """COCO box AP@[.5:.95], AP50, AP75, APs/APm/APl and AR@100 of predictions over images.

    Args:
        samples: One per image.
        class_agnostic: Score boxes regardless of labels (region proposals, dense region captions).

    Returns:
        The metrics (None where COCO leaves a quantity undefined: no ground truth in its range) and the
        count of boxes left out for a label that is no category of the truth.
    """
    categories = (
        ["object"] if class_agnostic else sorted({label_key(t.label) for s in samples for t in s.truth})
    )
    category_ids = {name: index + 1 for index, name in enumerate(categories)}
    truth_document = _truth_document(samples, category_ids, class_agnostic)
    detections, unknown = _detections(samples, category_ids, class_agnostic)
    if not truth_document["annotations"]:
        return DetectionResult(dict.fromkeys(METRIC_NAMES), unknown, ["no ground-truth boxes: AP undefined"])
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = truth_document
        truth.createIndex()
        predicted = truth.loadRes(detections) if detections else _empty_results(truth_document)
        evaluation = COCOeval(truth, predicted, "bbox")
        evaluation.params.useCats = int(not class_agnostic)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = np.asarray(evaluation.stats, dtype=np.float64)
    metrics = {
        name: (None if stats[index] < 0 else float(stats[index])) for index, name in _STAT_NAMES.items()
    }
    return DetectionResult(metrics, unknown)


def _truth_document(
    samples: Sequence[DetectionSample], category_ids: dict[str, int], class_agnostic: bool
) -> dict[str, Any]:
    images = [
        {"id": index + 1, "width": s.image_size[0], "height": s.image_size[1]}
        for index, s in enumerate(samples)
    ]
    annotations: list[dict[str, Any]] = []
    for image_index, sample in enumerate(samples):
        for item in sample.truth:
            x0, y0, x1, y1 = item.box
            category = 1 if class_agnostic else category_ids[label_key(item.label)]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_index + 1, "category_id": category,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(item.area), "iscrowd": int(item.is_crowd),
            })  # fmt: skip
    categories = [{"id": index, "name": name} for name, index in category_ids.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def _detections(
    samples: Sequence[DetectionSample], category_ids: dict[str, int], class_agnostic: bool
) -> tuple[list[dict[str, Any]], int]:
    detections, unknown = [], 0
    for image_index, sample in enumerate(samples):
        scores = ranking_scores(len(sample.boxes), sample.scores)
        for box, label, score in zip(sample.boxes, sample.labels, scores, strict=True):
            category = 1 if class_agnostic else category_ids.get(label_key(label))
            if category is None:
                unknown += 1
                continue
            x0, y0, x1, y1 = (float(value) for value in box)
            detections.append(
                {
                    "image_id": image_index + 1,
                    "category_id": category,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": score,
                }
            )
    return detections, unknown


def _empty_results(truth_document: dict[str, Any]) -> COCO:
    """A results object without detections (`COCO.loadRes` refuses an empty list): every truth is missed."""
    results = COCO()
    results.dataset = {
        "images": truth_document["images"],
        "categories": truth_document["categories"],
        "annotations": [],
    }
    results.createIndex()
    return results
