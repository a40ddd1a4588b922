"""`coco_detection_metrics` against COCO's own evaluator run directly on documents this test writes.

The oracle documents are built here from the samples, independently of omnivis's conversion: categories
are numbered in order of first appearance (not sorted) from 11 up, the truth is written to a JSON file and
read with `COCO(path)`, detections go through `loadRes`. Image ids keep the samples' order because COCOeval
breaks score ties between images by image id, and omnivis's position scores (1, 1/2, ...) tie on purpose.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from omnivis.eval.detection import DetectionSample, coco_detection_metrics
from omnivis.eval.queries import GroundTruthBox

# COCOeval.stats index of each metric omnivis reports.
STAT_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR100": 8}
LABELS = ("cat", "dog", "car", "tree")


def _truth(
    x0: float, y0: float, x1: float, y1: float, label: str = "cat", crowd: bool = False
) -> GroundTruthBox:
    """A true box whose area is its box's."""
    return GroundTruthBox((x0, y0, x1, y1), label, max(x1 - x0, 0.0) * max(y1 - y0, 0.0), crowd)


def _coco_documents(
    samples: Sequence[DetectionSample], use_categories: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The truth document and the results list of the samples, as COCO defines them (x, y, width, height)."""
    category_ids: dict[str, int] = {}
    for sample in samples:
        for item in sample.truth:
            category_ids.setdefault(item.label.strip(), 11 + 5 * len(category_ids))
    images = [
        {"id": 1 + index, "width": sample.image_size[0], "height": sample.image_size[1]}
        for index, sample in enumerate(samples)
    ]
    annotations, results = [], []
    for image_index, sample in enumerate(samples):
        for item in sample.truth:
            x0, y0, x1, y1 = item.box
            annotations.append({
                "id": 1 + len(annotations), "image_id": 1 + image_index,
                "category_id": category_ids[item.label.strip()], "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": item.area, "iscrowd": int(item.is_crowd),
            })  # fmt: skip
        assert sample.scores is not None, "the oracle is always given explicit scores"
        for box, label, score in zip(sample.boxes, sample.labels, sample.scores, strict=True):
            # Without categories COCOeval ignores a detection's category, but it must be one of the truth's.
            category = category_ids[label.strip()] if use_categories else next(iter(category_ids.values()))
            x0, y0, x1, y1 = (float(value) for value in box)
            results.append({
                "image_id": 1 + image_index, "category_id": category, "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": score,
            })  # fmt: skip
    categories = [{"id": index, "name": name} for name, index in category_ids.items()]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _oracle(
    samples: Sequence[DetectionSample], directory: Path, *, use_categories: bool = True, faster: bool = False
) -> np.ndarray:
    """COCOeval's stats (pycocotools', or faster_coco_eval's) for the samples."""
    truth_document, results = _coco_documents(samples, use_categories)
    path = directory / "truth.json"
    path.write_text(json.dumps(truth_document))
    if faster:
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster

        coco_class, evaluator_class = FasterCOCO, COCOeval_faster
    else:
        coco_class, evaluator_class = COCO, COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        truth = coco_class(str(path))
        evaluator = evaluator_class(truth, truth.loadRes(results), iouType="bbox")
        evaluator.params.useCats = int(use_categories)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats, dtype=np.float64)


def _assert_agrees(metrics: dict[str, float | None], stats: np.ndarray, tolerance: float = 1e-9) -> None:
    for name, index in STAT_INDEX.items():
        if stats[index] == -1:
            assert metrics[name] is None, f"{name}: COCOeval has no value, omnivis says {metrics[name]}"
        else:
            assert metrics[name] is not None, f"{name}: omnivis has no value, COCOeval says {stats[index]}"
            assert metrics[name] == pytest.approx(stats[index], abs=tolerance), name


def _position_scores(sample: DetectionSample) -> DetectionSample:
    """The sample with the scores omnivis ranks unscored boxes by, written out: 1 / (1 + position)."""
    return replace(sample, scores=[1.0 / (1 + position) for position in range(len(sample.boxes))])


# --- Crafted cases --------------------------------------------------------------------------------------

SIZE = (640, 480)
PERFECT = [
    DetectionSample(SIZE, [_truth(10, 10, 30, 25), _truth(100, 100, 180, 170, "dog")],
                    [(10, 10, 30, 25), (100, 100, 180, 170)], ["cat", "dog"], [0.9, 0.8]),
    DetectionSample(SIZE, [_truth(200, 50, 500, 400)], [(200, 50, 500, 400)], ["cat"], [0.7]),
]  # fmt: skip
ONE_MISS = [
    DetectionSample(SIZE, [_truth(10, 10, 60, 60), _truth(100, 100, 160, 160), _truth(300, 300, 360, 350)],
                    [(10, 10, 60, 60), (101, 99, 161, 158)], ["cat", "cat"], [0.9, 0.6]),
]  # fmt: skip
DUPLICATES = [
    DetectionSample(SIZE, [_truth(50, 50, 150, 150)], [(50, 50, 150, 150)] * 3, ["cat"] * 3, [0.9, 0.8, 0.7]),
]
# The second and third detections lie inside the crowd region: matched to it, they are neither hits nor
# false positives; the fourth lies outside everything and is a false positive.
CROWD = [
    DetectionSample(SIZE, [_truth(10, 10, 60, 60), _truth(200, 100, 600, 460, crowd=True)],
                    [(10, 10, 60, 60), (220, 120, 300, 200), (400, 300, 500, 400), (5, 300, 50, 350)],
                    ["cat"] * 4, [0.5, 0.9, 0.8, 0.7]),
]  # fmt: skip
# Zero-width truth and detections overlap nothing.
DEGENERATE = [
    DetectionSample(SIZE, [_truth(40, 40, 40, 90), _truth(100, 100, 150, 150)],
                    [(40, 40, 40, 90), (100, 100, 100, 150), (100, 100, 150, 150)], ["cat"] * 3,
                    [0.9, 0.8, 0.7]),
]  # fmt: skip
# Boxes that cross the image's edges are compared as they are (COCO clips nothing).
OUT_OF_IMAGE = [
    DetectionSample((200, 100), [_truth(-20, -10, 60, 50), _truth(150, 40, 260, 140)],
                    [(0, 0, 60, 50), (150, 40, 240, 130)], ["cat", "cat"], [0.8, 0.9]),
]  # fmt: skip
# Areas below 32^2 are small, up to 96^2 medium, above large; the second small box is missed, the large one
# found only loosely (IoU about 0.66) and a medium false positive outranks the medium hit.
AREAS = [
    DetectionSample(SIZE, [_truth(0, 0, 20, 20), _truth(50, 0, 70, 25), _truth(100, 100, 150, 160),
                           _truth(300, 100, 500, 300)],
                    [(0, 0, 20, 20), (100, 100, 150, 160), (300, 100, 470, 270), (400, 400, 450, 450)],
                    ["cat"] * 4, [0.9, 0.5, 0.7, 0.8]),
]  # fmt: skip
# A mask-derived area differs from the box's: the range is read from the given area.
MASK_AREA = [
    DetectionSample(SIZE, [GroundTruthBox((0, 0, 40, 40), "cat", 900.0),
                           GroundTruthBox((100, 0, 140, 40), "cat", 1600.0)],
                    [(0, 0, 40, 40), (100, 0, 140, 40)], ["cat", "cat"], [0.4, 0.8]),
]  # fmt: skip
CATEGORIES = [
    DetectionSample(SIZE, [_truth(10, 10, 60, 60, "cat"), _truth(100, 10, 160, 70, "dog"),
                           _truth(200, 10, 260, 70, "car")],
                    [(10, 10, 60, 60), (100, 10, 160, 70), (200, 10, 260, 70), (12, 12, 60, 60)],
                    [" cat ", "cat", "car", "dog"], [0.9, 0.8, 0.7, 0.6]),
    DetectionSample(SIZE, [_truth(0, 0, 100, 100, "dog"), _truth(300, 300, 400, 400, "dog")],
                    [(0, 0, 100, 100), (310, 300, 400, 410)], ["dog", "dog\n"], [0.3, 0.95]),
]  # fmt: skip
# An image with false positives only, and an image whose truth gets no detection.
EMPTY_IMAGES = [
    DetectionSample(SIZE, [], [(10, 10, 60, 60), (100, 100, 200, 200)], ["cat", "cat"], [0.95, 0.2]),
    DetectionSample(SIZE, [_truth(10, 10, 60, 60)], [(10, 10, 60, 60)], ["cat"], [0.5]),
    DetectionSample(SIZE, [_truth(10, 10, 60, 60)], [], [], []),
]  # fmt: skip
CRAFTED = {
    "perfect": PERFECT, "one_miss": ONE_MISS, "duplicates": DUPLICATES, "crowd": CROWD,
    "degenerate": DEGENERATE, "out_of_image": OUT_OF_IMAGE, "areas": AREAS, "mask_area": MASK_AREA,
    "categories": CATEGORIES, "empty_images": EMPTY_IMAGES,
}  # fmt: skip


@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_cases_agree_with_cocoeval(name: str, tmp_path: Path) -> None:
    samples = CRAFTED[name]
    result = coco_detection_metrics(samples)
    assert result.unknown_labels == 0
    _assert_agrees(result.metrics, _oracle(samples, tmp_path))


@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_cases_agree_without_categories(name: str, tmp_path: Path) -> None:
    samples = CRAFTED[name]
    metrics = coco_detection_metrics(samples, class_agnostic=True).metrics
    _assert_agrees(metrics, _oracle(samples, tmp_path, use_categories=False))


def test_perfect_and_hand_known_values() -> None:
    # COCOeval's means over its precision array land a rounding error below 1.
    assert coco_detection_metrics(PERFECT).metrics == pytest.approx(dict.fromkeys(STAT_INDEX, 1.0), abs=1e-12)
    # One of three boxes found, ranked first: precision 1 up to recall 1/3 -> 34 of COCO's 101 recall points.
    single = [DetectionSample(SIZE, ONE_MISS[0].truth, [(10, 10, 60, 60)], ["cat"], [0.9])]
    metrics = coco_detection_metrics(single).metrics
    assert metrics["AP50"] == pytest.approx(34 / 101, abs=1e-12)
    assert metrics["AR100"] == pytest.approx(1 / 3, abs=1e-12)
    # Duplicates of one found box: the first is the hit, the rest false positives ranked after it.
    assert coco_detection_metrics(DUPLICATES).metrics["AP"] == pytest.approx(1.0, abs=1e-12)


def test_class_agnostic_ignores_labels(tmp_path: Path) -> None:
    samples = [replace(sample, labels=["anything"] * len(sample.labels)) for sample in CATEGORIES]
    result = coco_detection_metrics(samples, class_agnostic=True)
    assert result.unknown_labels == 0
    _assert_agrees(result.metrics, _oracle(CATEGORIES, tmp_path, use_categories=False))
    # Labels counted as categories, the "car" box labelled "dog" is a false positive.
    assert coco_detection_metrics(CATEGORIES).metrics != result.metrics


def test_unknown_labels_are_counted_and_left_out(tmp_path: Path) -> None:
    sample = DetectionSample(SIZE, [_truth(10, 10, 60, 60), _truth(100, 100, 160, 160, "dog")],
                             [(10, 10, 60, 60), (100, 100, 160, 160), (100, 100, 160, 160)],
                             ["cat", "zebra", "dog"], [0.5, 0.9, 0.4])  # fmt: skip
    result = coco_detection_metrics([sample])
    assert result.unknown_labels == 1
    without_zebra = DetectionSample(
        SIZE, sample.truth, [(10, 10, 60, 60), (100, 100, 160, 160)], ["cat", "dog"], [0.5, 0.4]
    )
    _assert_agrees(result.metrics, _oracle([without_zebra], tmp_path))


def test_unknown_label_keeps_the_positions_of_unscored_boxes(tmp_path: Path) -> None:
    sample = DetectionSample(SIZE, CATEGORIES[0].truth, CATEGORIES[0].boxes, ["zebra", "cat", "car", "dog"])
    result = coco_detection_metrics([sample])
    assert result.unknown_labels == 1
    # The zebra box held position 0: the others keep the scores of positions 1, 2 and 3.
    oracle_sample = DetectionSample(
        SIZE, sample.truth, sample.boxes[1:], ["cat", "car", "dog"], [1 / 2, 1 / 3, 1 / 4]
    )
    _assert_agrees(result.metrics, _oracle([oracle_sample], tmp_path))


@pytest.mark.parametrize("name", ["categories", "crowd", "areas", "empty_images"])
def test_missing_scores_rank_by_position(name: str, tmp_path: Path) -> None:
    unscored = [replace(sample, scores=None) for sample in CRAFTED[name]]
    oracle_samples = [_position_scores(sample) for sample in unscored]
    _assert_agrees(coco_detection_metrics(unscored).metrics, _oracle(oracle_samples, tmp_path))
    _assert_agrees(
        coco_detection_metrics(unscored, class_agnostic=True).metrics,
        _oracle(oracle_samples, tmp_path, use_categories=False),
    )


def test_more_than_one_hundred_detections(tmp_path: Path) -> None:
    """AR@100 and AP read only an image's 100 best detections: the hits ranked 101st and later are lost."""
    truth = [
        _truth(10 * column, 10 * row, 10 * column + 8, 10 * row + 8)
        for row in range(12)
        for column in range(12)
    ]
    scores = [1.0 - position / 1000 for position in range(len(truth))]
    sample = DetectionSample((200, 200), truth, [item.box for item in truth], ["cat"] * len(truth), scores)
    metrics = coco_detection_metrics([sample]).metrics
    assert metrics["AR100"] == pytest.approx(100 / 144, abs=1e-12)
    _assert_agrees(metrics, _oracle([sample], tmp_path))


def test_no_predictions_scores_zero() -> None:
    """pycocotools' `loadRes` refuses an empty list, so the expected values are written out: every present
    quantity is 0, APs is undefined (no small truth)."""
    truth = [_truth(0, 0, 50, 50), _truth(100, 100, 300, 300, "dog")]
    expected = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APs": None, "APm": 0.0, "APl": 0.0, "AR100": 0.0}
    assert coco_detection_metrics([DetectionSample(SIZE, truth, [], [], None)]).metrics == expected
    agnostic = coco_detection_metrics([DetectionSample(SIZE, truth, [], [], [])], class_agnostic=True)
    assert agnostic.metrics == expected
    # Boxes whose labels are no category are left out, which leaves no predictions.
    result = coco_detection_metrics([DetectionSample(SIZE, truth, [(0, 0, 50, 50)], ["zebra"], [0.9])])
    assert (result.metrics, result.unknown_labels) == (expected, 1)


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_no_ground_truth_leaves_every_metric_undefined(class_agnostic: bool) -> None:
    unanswered = DetectionSample(SIZE, [], [(0, 0, 50, 50)], ["cat"], [0.9])
    for samples in ([], [unanswered], [unanswered, DetectionSample(SIZE, [], [], [], None)]):
        metrics = coco_detection_metrics(samples, class_agnostic=class_agnostic).metrics
        assert metrics == dict.fromkeys(STAT_INDEX)


# --- Random cases ---------------------------------------------------------------------------------------


def _random_box(rng: np.random.Generator, width: int, height: int) -> tuple[float, float, float, float]:
    """A box whose sides span small to large (4 to 300 pixels, log-uniform), anywhere in the image."""
    box_width, box_height = np.exp(rng.uniform(np.log(4), np.log(300), size=2))
    x0, y0 = rng.uniform(0, width - 2), rng.uniform(0, height - 2)
    return float(x0), float(y0), float(x0 + box_width), float(y0 + box_height)


def _jittered(rng: np.random.Generator, box: Sequence[float]) -> tuple[float, float, float, float]:
    """The box with each corner moved by up to about a tenth of its size (some will no longer match)."""
    x0, y0, x1, y1 = box
    scale = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
    moved = np.asarray(box) + rng.normal(0.0, 0.08, size=4) * scale
    return tuple(float(value) for value in moved)  # type: ignore[return-value]


def _random_case(seed: int) -> list[DetectionSample]:
    """Images with random truth (categories, sizes, crowd flags, mask-like areas) and detections: the
    truth jittered and sometimes mislabelled, plus false positives, with random scores (or none, every fourth
    case)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(int(rng.integers(1, 6))):
        width, height = int(rng.integers(100, 641)), int(rng.integers(100, 481))
        truth = []
        for _ in range(int(rng.integers(0, 9))):
            x0, y0, x1, y1 = _random_box(rng, width, height)
            area = (x1 - x0) * (y1 - y0) * float(rng.uniform(0.6, 1.0))
            crowd = bool(rng.random() < 0.1)
            truth.append(GroundTruthBox((x0, y0, x1, y1), str(rng.choice(LABELS)), area, crowd))
        images.append((width, height, truth))
    present = sorted({item.label for _, _, truth in images for item in truth}) or ["cat"]
    samples = []
    for width, height, truth in images:
        boxes, labels = [], []
        for item in truth:
            if rng.random() < 0.8:
                boxes.append(_jittered(rng, item.box))
                labels.append(item.label if rng.random() < 0.85 else str(rng.choice(present)))
        for _ in range(int(rng.integers(0, 5))):
            boxes.append(_random_box(rng, width, height))
            labels.append(str(rng.choice(present)))
        order = rng.permutation(len(boxes))
        scores = None if seed % 4 == 3 else [float(value) for value in rng.random(len(boxes))]
        boxes, labels = [boxes[index] for index in order], [labels[index] for index in order]
        samples.append(DetectionSample((width, height), truth, boxes, labels, scores))
    return samples


RANDOM_SEEDS = range(20)


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_cases_agree_with_cocoeval(seed: int, tmp_path: Path) -> None:
    samples = _random_case(seed)
    oracle_samples = [sample if sample.scores is not None else _position_scores(sample) for sample in samples]
    if not any(sample.truth for sample in samples) or not any(sample.boxes for sample in samples):
        pytest.skip("a case without truth or detections is covered by its own tests")
    _assert_agrees(coco_detection_metrics(samples).metrics, _oracle(oracle_samples, tmp_path))
    _assert_agrees(
        coco_detection_metrics(samples, class_agnostic=True).metrics,
        _oracle(oracle_samples, tmp_path, use_categories=False),
    )


@pytest.mark.oracle
@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_cases_agree_with_faster_coco_eval(seed: int, tmp_path: Path) -> None:
    """A second, independent implementation of COCO's evaluation (C++), to within float summation order."""
    pytest.importorskip("faster_coco_eval")
    samples = _random_case(seed)
    oracle_samples = [sample if sample.scores is not None else _position_scores(sample) for sample in samples]
    if not any(sample.truth for sample in samples) or not any(sample.boxes for sample in samples):
        pytest.skip("a case without truth or detections is covered by its own tests")
    metrics = coco_detection_metrics(samples).metrics
    _assert_agrees(metrics, _oracle(oracle_samples, tmp_path, faster=True), 1e-6)
    _assert_agrees(
        coco_detection_metrics(samples, class_agnostic=True).metrics,
        _oracle(oracle_samples, tmp_path, use_categories=False, faster=True),
        1e-6,
    )
