"""Reading quality: character and word error rates (jiwer), and end-to-end F1 of text lines with quads.

Error rates are corpus rates, as jiwer computes them over lists: all edits over all reference characters
(or words), not a mean of per-image rates. Before comparing, every run of white space, line breaks included,
becomes one space and the ends are stripped: lines are joined by "\\n" in omnivis's targets and by nothing
in official checkpoints' answers, and neither choice should count as a misread character. An empty
reference has no error rate: such images are never scored (they have no OCR query).

End-to-end F1 counts a predicted line as found when its quadrilateral overlaps a not yet matched true line's
by IoU >= 0.5 (shapely polygons) and its text equals that line's exactly after the same white-space
normalization; predictions are matched in answer order (Florence-2 gives lines no scores).
"""

from __future__ import annotations

from collections.abc import Sequence

import jiwer
import numpy as np

from omnivis.errors import InputError
from omnivis.eval.overlap import greedy_matches, quad_iou

QUAD_IOU_THRESHOLD = 0.5  # a line is found when its quad overlaps the true one by at least this much


def normalize_text(text: str) -> str:
    """Runs of white space as single spaces, ends stripped."""
    return " ".join(text.split())


def error_rates(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[dict[str, float], list[float]]:
    """Corpus CER and WER, and each sample's CER.

    Raises:
        InputError: No samples, lengths that differ, or a reference that is empty after normalization.
    """
    if len(hypotheses) != len(references):
        raise InputError(f"got {len(hypotheses)} readings for {len(references)} references")
    if not references:
        raise InputError("no readings to score")
    truth = [normalize_text(text) for text in references]
    predicted = [normalize_text(text) for text in hypotheses]
    if any(not text for text in truth):
        raise InputError("a reference text is empty: error rates are undefined for it")
    per_sample = [
        float(jiwer.cer(reference, hypothesis))
        for reference, hypothesis in zip(truth, predicted, strict=True)
    ]
    rates = {"CER": float(jiwer.cer(truth, predicted)), "WER": float(jiwer.wer(truth, predicted))}
    return rates, per_sample


def line_matches(
    predicted: Sequence[tuple[str, Sequence[float]]], truth: Sequence[tuple[str, Sequence[float]]]
) -> int:
    """How many predicted (text, quad) lines are found among the true ones (see the module docstring)."""
    if not predicted or not truth:
        return 0
    overlaps = quad_iou([quad for _, quad in predicted], [quad for _, quad in truth])
    same_text = np.array(
        [
            [normalize_text(text) == normalize_text(true_text) for true_text, _ in truth]
            for text, _ in predicted
        ]
    )
    return len(greedy_matches(overlaps, QUAD_IOU_THRESHOLD, allowed=same_text))


def end_to_end_f1(
    predicted: Sequence[Sequence[tuple[str, Sequence[float]]]],
    truth: Sequence[Sequence[tuple[str, Sequence[float]]]],
) -> tuple[dict[str, float], list[float]]:
    """Corpus end-to-end F1 (with precision and recall) of text lines over images, and each image's F1.

    F1 is 2 * matched / (predicted lines + true lines), summed over all images; an image without predicted
    or true lines scores 1 when both are empty.
    """
    if len(predicted) != len(truth):
        raise InputError(f"got {len(predicted)} predicted images for {len(truth)} true ones")
    if not truth:
        raise InputError("no text lines to score")
    matched = [line_matches(lines, true_lines) for lines, true_lines in zip(predicted, truth, strict=True)]
    per_image = [
        1.0 if not lines and not true_lines else 2 * hits / (len(lines) + len(true_lines))
        for hits, lines, true_lines in zip(matched, predicted, truth, strict=True)
    ]
    found, predicted_count, true_count = sum(matched), sum(map(len, predicted)), sum(map(len, truth))
    total = predicted_count + true_count
    metrics = {
        "F1": 2 * found / total if total else 1.0,
        "precision": found / predicted_count if predicted_count else 0.0,
        "recall": found / true_count if true_count else 0.0,
    }
    return metrics, per_image
