"""The metric of every task: one function per task family, in one registry keyed by the task tokens.

Each takes a task's queries and the answers to them (None where a query got no valid answer, which scores as
an empty answer: a model that said nothing is wrong, never excused) and gives a `TaskScore`: the metrics by
their published names, one score per query (higher is better; used to pick the best and worst samples of
the report), and the rules a reader needs to interpret the numbers.

| task                                    | metrics                                      | computed by           |
|-----------------------------------------|----------------------------------------------|-----------------------|
| captions (3 levels), region description | CIDEr (CIDEr-D), BLEU-4                      | pycocoevalcap         |
| detection, proposals, dense captions    | AP, AP50, AP75, APs, APm, APl, AR100         | pycocotools COCOeval  |
| open-vocabulary detection               | the same over category queries; acc@0.5 over referring expressions | both  |
| phrase grounding                        | Recall@1                                     | omnivis               |
| referring / region segmentation         | mIoU, oIoU                                   | pycocotools masks     |
| OCR, region to OCR                      | CER, WER                                     | jiwer                 |
| OCR with regions                        | F1 (quad IoU >= 0.5 and the same text)       | shapely               |
| region to category                      | accuracy (exact category)                    | omnivis               |
| VQA                                     | accuracy (VQAv2's, with its normalization)   | omnivis               |
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omnivis.eval import captioning, detection, localization, ocr, vqa
from omnivis.eval.overlap import box_iou, greedy_matches
from omnivis.eval.queries import Query, label_key

# The order metrics are listed in, everywhere.
METRIC_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "CIDEr", "BLEU-4", "Recall@1", "acc@0.5", "mIoU", "oIoU",
    "CER", "WER", "F1", "accuracy",
)  # fmt: skip
# Metrics where lower is better; every other is higher-is-better.
LOWER_IS_BETTER = frozenset({"CER", "WER"})

_LOCATION_TOKENS = re.compile(r"<loc_\d+>")


@dataclass
class TaskScore:
    """A task's metrics, a score per query (aligned with the queries; None where a query has none), the rules
    behind the numbers, and counts a reader should see (e.g. boxes whose label names no category)."""

    metrics: dict[str, float | None]
    per_query: list[float | None]
    rules: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


TaskMetric = Callable[[Sequence[Query], Sequence[Any]], TaskScore]


def _plain_text(answer: Any) -> str:
    """A plain-text answer without the location tokens region tasks echo; "" for no answer."""
    return "" if answer is None else " ".join(_LOCATION_TOKENS.sub(" ", answer).split())


def _captions(queries: Sequence[Query], answers: Sequence[Any]) -> TaskScore:
    references = [query.truth if isinstance(query.truth, list) else [query.truth] for query in queries]
    metrics, per_image = captioning.caption_metrics([_plain_text(answer) for answer in answers], references)
    rules = [
        "CIDEr-D and BLEU-4 by pycocoevalcap over PTB-style tokens; CIDEr's weights come from this set's references"
    ]
    return TaskScore(dict(metrics), list(per_image), rules)


def _detection_samples(
    queries: Sequence[Query], answers: Sequence[Any], labels_key: str, query_labels: bool
) -> list[detection.DetectionSample]:
    samples = []
    for query, answer in zip(queries, answers, strict=True):
        answer = answer or {}
        boxes = [list(box) for box in answer.get("bboxes", [])]
        labels = [str(label) for label in answer.get(labels_key, [])]
        # Open-vocabulary polygon answers are boxed: the query named the category, so every object has it.
        for polygons in answer.get("polygons", []) if query_labels else []:
            points = [value for polygon in polygons for value in polygon]
            if len(points) >= 4:
                boxes.append([min(points[0::2]), min(points[1::2]), max(points[0::2]), max(points[1::2])])
        if query_labels:
            labels = [str(query.input)] * len(boxes)
        scores = answer.get("scores") if len(answer.get("scores") or []) == len(boxes) else None
        samples.append(detection.DetectionSample(query.image_size, query.truth, boxes, labels, scores))
    return samples


def _image_f1(sample: detection.DetectionSample, class_agnostic: bool) -> float:
    """One image's F1 at IoU >= 0.5 (crowd truth left out), boxes matched in rank order: its gallery score."""
    truth = [item for item in sample.truth if not item.is_crowd]
    if not truth and not sample.boxes:
        return 1.0
    if not truth or not sample.boxes:
        return 0.0
    order = np.argsort(
        [-score for score in detection.ranking_scores(len(sample.boxes), sample.scores)], kind="stable"
    )
    overlaps = box_iou([sample.boxes[index] for index in order], [item.box for item in truth])
    same = np.array(
        [
            [class_agnostic or label_key(sample.labels[index]) == label_key(item.label) for item in truth]
            for index in order
        ]
    )
    return 2 * len(greedy_matches(overlaps, 0.5, allowed=same)) / (len(sample.boxes) + len(truth))


def _coco_score(samples: list[detection.DetectionSample], class_agnostic: bool) -> TaskScore:
    result = detection.coco_detection_metrics(samples, class_agnostic=class_agnostic)
    rules = [
        detection.RANKING_RULE,
        "COCO box AP by pycocotools" + (" (class-agnostic)" if class_agnostic else ""),
    ]
    counts = (
        {"boxes with a label that names no category": result.unknown_labels} if result.unknown_labels else {}
    )
    return TaskScore(
        result.metrics,
        [_image_f1(sample, class_agnostic) for sample in samples],
        rules + result.notes,
        counts,
    )


def _detection(queries: Sequence[Query], answers: Sequence[Any]) -> TaskScore:
    class_agnostic = queries[0].task != "<OD>"
    return _coco_score(_detection_samples(queries, answers, "labels", query_labels=False), class_agnostic)


def _open_vocabulary(queries: Sequence[Query], answers: Sequence[Any]) -> TaskScore:
    """AP over the category queries, accuracy@0.5 over the referring-expression queries."""
    per_query: list[float | None] = [None] * len(queries)
    metrics: dict[str, float | None] = {}
    rules: list[str] = []
    counts: dict[str, int] = {}
    categories = [index for index, query in enumerate(queries) if query.kind == "category"]
    if categories:
        samples = _detection_samples(
            [queries[i] for i in categories],
            [answers[i] for i in categories],
            "bboxes_labels",
            query_labels=True,
        )
        scored = _coco_score(samples, class_agnostic=False)
        metrics.update(scored.metrics)
        rules += [
            *scored.rules,
            "AP over one query per category present in an image, every returned box taken as that category",
        ]
        counts.update(scored.counts)
        for index, value in zip(categories, scored.per_query, strict=True):
            per_query[index] = value
    referring = [index for index, query in enumerate(queries) if query.kind == "referring"]
    if referring:
        accuracy, ious = localization.referring_accuracy(
            [answers[i] for i in referring], [queries[i].truth for i in referring]
        )
        metrics.update(accuracy)
        rules.append("acc@0.5: the first box answered for a referring expression against its referent")
        for index, value in zip(referring, ious, strict=True):
            per_query[index] = value
    return TaskScore(metrics, per_query, rules, counts)


def _grounding(queries: Sequence[Query], answers: Sequence[Any]) -> TaskScore:
    metrics, per_caption = localization.grounding_recall(answers, [query.truth for query in queries])
    rules = [
        "Recall@1, Flickr30k Entities 'any box' protocol: a phrase's top box at IoU >= 0.5 with any of its boxes"
    ]
    return TaskScore(dict(metrics), list(per_caption), rules)


def _segmentation(queries: Sequence[Query], answers: Sequence[Any]) -> TaskScore:
    metrics, ious = localization.segmentation_overlap(
        answers, [q.truth for q in queries], [q.image_size for q in queries]
    )
    found = localization.segmentation_found(answers, [q.truth for q in queries])
    where = f"mIoU {_mean_where(ious, found, True)} where found, {_mean_where(ious, found, False)} where not"
    rules = [
        "masks rasterized by pycocotools; mIoU = mean of per-query IoU, oIoU = total intersection / total union",
        f"found (the answer's bounds at box IoU >= 0.5 with the truth's): {where}",
    ]
    counts = {"found (bounds at box IoU >= 0.5)": sum(found)}
    return TaskScore(dict(metrics), list(ious), rules, counts)


def _mean_where(values: Sequence[float], flags: Sequence[bool], flag: bool) -> str:
    """The mean of `values` whose flag is `flag`, to 3 decimals; "-" where there are none."""
    chosen = [value for value, kept in zip(values, flags, strict=True) if kept == flag]
    return f"{sum(chosen) / len(chosen):.3f}" if chosen else "-"


def _reading(queries: Sequence[Query], answers: Sequence[Any]) -> TaskScore:
    rates, per_sample = ocr.error_rates(
        [_plain_text(answer) for answer in answers], [query.truth for query in queries]
    )
    rules = ["corpus CER and WER by jiwer, white space runs (line breaks too) as one space; lower is better"]
    return TaskScore(dict(rates), [1.0 - rate for rate in per_sample], rules)


def _reading_with_regions(queries: Sequence[Query], answers: Sequence[Any]) -> TaskScore:
    predicted = [
        list(zip((answer or {}).get("labels", []), (answer or {}).get("quad_boxes", []), strict=True))
        for answer in answers
    ]
    metrics, per_image = ocr.end_to_end_f1(
        predicted, [[(text, list(quad)) for text, quad in q.truth] for q in queries]
    )
    rule = f"end-to-end F1: quad IoU >= {ocr.QUAD_IOU_THRESHOLD} (shapely) and the same text"
    rules = [f"{rule}; precision {metrics['precision']:.4f}, recall {metrics['recall']:.4f}"]
    return TaskScore({"F1": metrics["F1"]}, list(per_image), rules)


def _category(queries: Sequence[Query], answers: Sequence[Any]) -> TaskScore:
    correct = [
        float(_plain_text(answer).lower() == query.truth.strip().lower())
        for query, answer in zip(queries, answers, strict=True)
    ]
    rules = [
        "accuracy: the answer, without its echoed location tokens, equals the category (case-insensitive)"
    ]
    return TaskScore({"accuracy": sum(correct) / len(correct)}, list(correct), rules)


def _questions(queries: Sequence[Query], answers: Sequence[Any]) -> TaskScore:
    accuracy, per_question = vqa.vqa_accuracy(
        [_plain_text(answer) for answer in answers], [q.truth for q in queries]
    )
    rules = [
        "VQAv2 accuracy with its answer normalization, min(1, matches / 3) over leave-one-out subsets; exact match for one answer"
    ]
    return TaskScore({"accuracy": accuracy}, list(per_question), rules)


TASK_METRICS: dict[str, TaskMetric] = {
    "<OCR>": _reading,
    "<OCR_WITH_REGION>": _reading_with_regions,
    "<CAPTION>": _captions,
    "<DETAILED_CAPTION>": _captions,
    "<MORE_DETAILED_CAPTION>": _captions,
    "<OD>": _detection,
    "<DENSE_REGION_CAPTION>": _detection,
    "<REGION_PROPOSAL>": _detection,
    "<CAPTION_TO_PHRASE_GROUNDING>": _grounding,
    "<REFERRING_EXPRESSION_SEGMENTATION>": _segmentation,
    "<REGION_TO_SEGMENTATION>": _segmentation,
    "<OPEN_VOCABULARY_DETECTION>": _open_vocabulary,
    "<REGION_TO_CATEGORY>": _category,
    "<REGION_TO_DESCRIPTION>": _captions,
    "<REGION_TO_OCR>": _reading,
    "<VQA>": _questions,
}

# The one number per task a training run tracks and a model card reports (the paper's choice per benchmark).
HEADLINE_METRICS: dict[str, str] = {
    "<CAPTION>": "CIDEr",
    "<DETAILED_CAPTION>": "CIDEr",
    "<MORE_DETAILED_CAPTION>": "CIDEr",
    "<OD>": "AP50",
    "<DENSE_REGION_CAPTION>": "AP50",
    "<REGION_PROPOSAL>": "AP50",
    "<CAPTION_TO_PHRASE_GROUNDING>": "Recall@1",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "mIoU",
    "<REGION_TO_SEGMENTATION>": "mIoU",
    "<OPEN_VOCABULARY_DETECTION>": "acc@0.5",
    "<REGION_TO_CATEGORY>": "accuracy",
    "<REGION_TO_DESCRIPTION>": "CIDEr",
    "<OCR>": "CER",
    "<OCR_WITH_REGION>": "F1",
    "<REGION_TO_OCR>": "CER",
    "<VQA>": "accuracy",
}


def headline_score(metrics: dict[str, dict[str, float | None]]) -> float:
    """One number to rank checkpoints by: the mean over tasks of each headline metric mapped to [0, 1].

    CIDEr (0..10) is divided by 10, an error rate becomes max(0, 1 - rate), a missing value counts 0.
    """
    values = []
    for task, task_metrics in metrics.items():
        name = HEADLINE_METRICS[task]
        value = task_metrics.get(name)
        if value is None:
            values.append(0.0)
        elif name in LOWER_IS_BETTER:
            values.append(max(0.0, 1.0 - value))
        elif name == "CIDEr":
            values.append(min(1.0, value / 10))
        else:
            values.append(value)
    return sum(values) / len(values) if values else 0.0
