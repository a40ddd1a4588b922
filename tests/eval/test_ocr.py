"""Reading metrics: `error_rates` against jiwer called directly and against edit counts worked out by hand;
`end_to_end_f1`, `line_matches` and `quad_iou` against overlaps and matches worked out by hand."""

from __future__ import annotations

import re

import jiwer
import numpy as np
import pytest

from omnivis.errors import InputError
from omnivis.eval.ocr import end_to_end_f1, error_rates, line_matches
from omnivis.eval.overlap import quad_iou


def _square(x0: float, y0: float, x1: float, y1: float) -> tuple[float, ...]:
    """An axis-aligned rectangle as a quad, clockwise from the top left (y grows downwards)."""
    return (x0, y0, x1, y0, x1, y1, x0, y1)


def _spaces(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _assert_agrees_with_jiwer(hypotheses: list[str], references: list[str]) -> None:
    rates, per_sample = error_rates(hypotheses, references)
    truth, predicted = [_spaces(text) for text in references], [_spaces(text) for text in hypotheses]
    assert rates["CER"] == pytest.approx(jiwer.cer(truth, predicted), abs=1e-9)
    assert rates["WER"] == pytest.approx(jiwer.wer(truth, predicted), abs=1e-9)
    expected = [
        jiwer.cer(reference, hypothesis) for reference, hypothesis in zip(truth, predicted, strict=True)
    ]
    assert per_sample == pytest.approx(expected, abs=1e-9)


# --- Error rates ---------------------------------------------------------------------------------------------


def test_error_rates_by_hand() -> None:
    # kitten -> sitting: two substitutions and one insertion over 6 reference characters.
    rates, per_sample = error_rates(["sitting"], ["kitten"])
    assert rates["CER"] == pytest.approx(3 / 6, abs=1e-12)
    assert rates["WER"] == 1.0
    assert per_sample == pytest.approx([3 / 6], abs=1e-12)
    # "world" -> "word" deletes one of 11 characters and changes one of 2 words.
    rates, _ = error_rates(["hello word"], ["hello world"])
    assert (rates["CER"], rates["WER"]) == pytest.approx((1 / 11, 1 / 2), abs=1e-12)
    # A corpus rate is all edits over all reference characters: 1 edit over 2 + 4 characters.
    rates, per_sample = error_rates(["ab", "abxd"], ["ab", "abcd"])
    assert rates["CER"] == pytest.approx(1 / 6, abs=1e-12)
    assert per_sample == pytest.approx([0.0, 1 / 4], abs=1e-12)


def test_white_space_and_line_breaks_are_not_errors() -> None:
    rates, _ = error_rates(["LINE ONE LINE TWO"], ["LINE  ONE\nLINE TWO\n"])
    assert rates == {"CER": 0.0, "WER": 0.0}
    # Lines joined by nothing lose the space between them: one deletion over 17 characters.
    rates, _ = error_rates(["LINE ONELINE TWO"], ["LINE ONE\nLINE TWO"])
    assert rates["CER"] == pytest.approx(1 / 17, abs=1e-12)


CRAFTED = {
    "perfect": (["HELLO WORLD"], ["HELLO WORLD"]),
    "empty_hypothesis": (["", "abc"], ["abc", "abd"]),
    "white_space_hypothesis": ([" \n\t "], ["abc def"]),
    "unicode": (["Straße naïve 東京 café", "Ωμέγα"], ["Strasse naive 東京都 café", "Ωμέγα!"]),
    "multi_line": (["first line\nsecond  line", "one two"], ["first line\nsecond line\nthird", "one\ntwo"]),
    "longer_hypothesis": (["abcabcabc def"], ["abc"]),
    "case_matters": (["hello"], ["HELLO"]),
}


@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_cases_agree_with_jiwer(name: str) -> None:
    _assert_agrees_with_jiwer(*CRAFTED[name])


ALPHABET = list("abcdeXYZ 0123.,ñé東京") + ["\n", "  "]


def _random_text(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(ALPHABET, size=length))


def _misread(rng: np.random.Generator, text: str) -> str:
    """The text with random substitutions, deletions and insertions."""
    characters = []
    for character in text:
        draw = rng.random()
        if draw < 0.08:
            continue
        characters.append(str(rng.choice(ALPHABET)) if draw < 0.16 else character)
        if rng.random() < 0.05:
            characters.append(str(rng.choice(ALPHABET)))
    return "".join(characters)


@pytest.mark.parametrize("seed", range(15))
def test_random_cases_agree_with_jiwer(seed: int) -> None:
    rng = np.random.default_rng(seed)
    count, references = int(rng.integers(1, 8)), []
    while len(references) < count:
        text = _random_text(rng, int(rng.integers(1, 40)))
        if text.strip():  # an empty reference has no error rate (tested below)
            references.append(text)
    hypotheses = [_misread(rng, text) if rng.random() < 0.85 else "" for text in references]
    _assert_agrees_with_jiwer(hypotheses, references)


def test_error_rate_errors() -> None:
    with pytest.raises(InputError, match="empty"):
        error_rates(["abc"], [""])
    with pytest.raises(InputError, match="empty"):
        error_rates(["abc", "x"], ["abc", " \n "])
    with pytest.raises(InputError, match="references"):
        error_rates(["abc"], ["abc", "def"])
    with pytest.raises(InputError, match="no readings"):
        error_rates([], [])


# --- Quadrilateral overlap -----------------------------------------------------------------------------------

DIAMOND = (5.0, 0.0, 10.0, 5.0, 5.0, 10.0, 0.0, 5.0)  # the square [0, 10]^2 turned 45 degrees: area 50
BOW_TIE = (0.0, 0.0, 10.0, 10.0, 10.0, 0.0, 0.0, 10.0)  # crosses itself at (5, 5)


def test_quad_iou_by_hand() -> None:
    # [0,10]^2 and [5,15]^2 share 5 x 5 = 25 of 100 + 100 - 25 = 175.
    overlap = quad_iou([_square(0, 0, 10, 10)], [_square(5, 5, 15, 15)])[0, 0]
    assert overlap == pytest.approx(25 / 175, abs=1e-12)
    # The diamond fills half of its bounding square; starting at another vertex changes nothing.
    assert quad_iou([DIAMOND], [_square(0, 0, 10, 10)])[0, 0] == pytest.approx(0.5, abs=1e-12)
    assert quad_iou([DIAMOND], [DIAMOND[4:] + DIAMOND[:4]])[0, 0] == pytest.approx(1.0, abs=1e-12)
    # The diamond moved right by 1 overlaps it in a diamond of half-diagonal 4.5 (area 40.5), union 59.5.
    shifted = tuple(value + 1 if index % 2 == 0 else value for index, value in enumerate(DIAMOND))
    assert quad_iou([DIAMOND], [shifted])[0, 0] == pytest.approx(40.5 / 59.5, abs=1e-12)


def test_quad_iou_shape_and_degenerate_quads() -> None:
    overlaps = quad_iou([_square(0, 0, 10, 10), _square(20, 20, 30, 30)], [_square(0, 0, 10, 10)] * 3)
    assert overlaps.shape == (2, 3)
    np.testing.assert_allclose(overlaps, [[1, 1, 1], [0, 0, 0]], atol=1e-12)
    flat = (0.0, 0.0, 5.0, 5.0, 10.0, 10.0, 0.0, 0.0)  # all four corners on one line: no area
    assert quad_iou([flat], [flat, _square(0, 0, 10, 10)]).tolist() == [[0.0, 0.0]]
    assert quad_iou([], [_square(0, 0, 1, 1)]).shape == (0, 1)


def test_bow_tie_quad_is_repaired() -> None:
    """Repaired, the bow tie is its two triangles (left and right of the crossing), 25 each: half the square."""
    overlap = quad_iou([BOW_TIE], [_square(0, 0, 10, 10)])[0, 0]
    assert np.isfinite(overlap)
    assert overlap == pytest.approx(0.5, abs=1e-12)


# --- End-to-end F1 -------------------------------------------------------------------------------------------

HELLO = ("HELLO", _square(0, 0, 50, 10))
WORLD = ("WORLD", _square(60, 0, 110, 10))


def test_perfect_reading() -> None:
    assert line_matches([HELLO, WORLD], [HELLO, WORLD]) == 2
    metrics, per_image = end_to_end_f1([[WORLD, HELLO]], [[HELLO, WORLD]])
    assert metrics == {"F1": 1.0, "precision": 1.0, "recall": 1.0}
    assert per_image == [1.0]


def test_text_must_match_exactly_up_to_white_space() -> None:
    assert line_matches([("HELL0", HELLO[1])], [HELLO]) == 0
    assert line_matches([("hello", HELLO[1])], [HELLO]) == 0
    assert line_matches([(" HELLO\n", HELLO[1])], [HELLO]) == 1
    assert line_matches([("NEW  YORK", DIAMOND)], [("NEW\nYORK", DIAMOND)]) == 1


def test_quads_must_overlap_by_half() -> None:
    assert line_matches([("A", _square(0, 0, 10, 10))], [("A", _square(5, 5, 15, 15))]) == 0  # IoU 1/7
    assert line_matches([("A", _square(0, 0, 10, 5))], [("A", _square(0, 0, 10, 10))]) == 1  # IoU exactly 0.5
    assert line_matches([("A", DIAMOND)], [("A", _square(0, 0, 10, 10))]) == 1  # rotated, IoU exactly 0.5
    assert line_matches([("A", DIAMOND)], [("A", _square(0, 0, 10, 10.5))]) == 0  # IoU 50/105


def test_rotated_lines() -> None:
    shifted = tuple(value + 1 if index % 2 == 0 else value for index, value in enumerate(DIAMOND))
    assert line_matches([("TILTED", shifted)], [("TILTED", DIAMOND)]) == 1  # IoU 40.5 / 59.5


def test_duplicates_match_once() -> None:
    assert line_matches([HELLO, HELLO, HELLO], [HELLO]) == 1
    metrics, per_image = end_to_end_f1([[HELLO, HELLO]], [[HELLO]])
    # One of two predictions found, the one true line found: F1 = 2 * 1 / (2 + 1).
    assert metrics == pytest.approx({"F1": 2 / 3, "precision": 1 / 2, "recall": 1.0}, abs=1e-12)
    assert per_image == pytest.approx([2 / 3], abs=1e-12)


def test_bow_tie_line_does_not_crash() -> None:
    assert line_matches([("X", BOW_TIE)], [("X", _square(0, 0, 10, 10))]) == 1
    assert line_matches([("X", _square(0, 0, 10, 10))], [("X", BOW_TIE), ("X", BOW_TIE)]) == 1


def test_empty_sides() -> None:
    assert line_matches([], [HELLO]) == 0
    assert line_matches([HELLO], []) == 0
    metrics, per_image = end_to_end_f1([[]], [[HELLO, WORLD]])
    assert (metrics["F1"], metrics["recall"], per_image) == (0.0, 0.0, [0.0])
    metrics, per_image = end_to_end_f1([[HELLO]], [[]])
    assert (metrics["F1"], metrics["precision"], per_image) == (0.0, 0.0, [0.0])
    metrics, per_image = end_to_end_f1([[], []], [[], []])
    assert (metrics["F1"], per_image) == (1.0, [1.0, 1.0])


def test_corpus_f1_sums_over_images() -> None:
    """Image 1: 2 of 2 found; image 2: 1 of 3 predictions found among 2 true lines; image 3: nothing on
    either side. Corpus F1 = 2 * 3 / (5 + 4), not the mean of the images' F1."""
    wrong = ("W0RLD", WORLD[1])
    stray = ("HELLO", _square(200, 200, 250, 210))
    metrics, per_image = end_to_end_f1(
        [[HELLO, WORLD], [HELLO, wrong, stray], []], [[HELLO, WORLD], [HELLO, WORLD], []]
    )
    assert metrics == pytest.approx({"F1": 6 / 9, "precision": 3 / 5, "recall": 3 / 4}, abs=1e-12)
    assert per_image == pytest.approx([1.0, 2 * 1 / (3 + 2), 1.0], abs=1e-12)


def test_end_to_end_errors() -> None:
    with pytest.raises(InputError, match="predicted images"):
        end_to_end_f1([[HELLO]], [[HELLO], [WORLD]])
    with pytest.raises(InputError, match="no text lines"):
        end_to_end_f1([], [])
