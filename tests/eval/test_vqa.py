"""VQAv2 accuracy: the leave-one-out rule and the official script's answer normalization, by hand.

No installed package carries the official `vqaEval.py`, so every expected value here is worked out by hand
from the rule or from what the official regexes do to the string.
"""

from __future__ import annotations

import pytest

from omnivis.errors import InputError
from omnivis.eval.vqa import answer_accuracy, normalize_answer, vqa_accuracy


def _ten_humans(matching: int) -> list[str]:
    """Ten human answers, `matching` of them "2" and the rest "3"."""
    return ["2"] * matching + ["3"] * (10 - matching)


# With ten humans each subset leaves one out; a subset with k matches scores min(1, k / 3).
@pytest.mark.parametrize(
    ("matching", "expected"),
    [
        (0, 0.0),
        # The 9 subsets that keep the match score 1/3, the one that drops it 0.
        (1, (9 * (1 / 3) + 1 * 0) / 10),  # 0.3
        # Dropping either match leaves 1 (2 subsets); dropping a non-match leaves 2 (8 subsets).
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # 0.6
        # 3 subsets keep 2 matches, 7 keep all 3.
        (3, (3 * (2 / 3) + 7 * 1) / 10),  # 0.9
        # Every subset keeps at least 3 matches.
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_ten_references(matching: int, expected: float) -> None:
    assert answer_accuracy("2", _ten_humans(matching)) == pytest.approx(expected, abs=1e-12)


def test_ten_references_rounds_to_the_nearest_float() -> None:
    # 3 of 10 is 27/30: the score is one integer division, not a sum of thirds that drifts.
    assert answer_accuracy("2", _ten_humans(3)) == 0.9
    assert answer_accuracy("2", _ten_humans(1)) == 0.3
    assert answer_accuracy("2", _ten_humans(2)) == 0.6


def test_single_reference() -> None:
    assert answer_accuracy("yes", ["yes"]) == 1.0
    assert answer_accuracy("yes", ["no"]) == 0.0
    # Equality is after normalization.
    assert answer_accuracy("Two.", ["2"]) == 1.0


@pytest.mark.parametrize(
    ("references", "expected"),
    [
        # Two humans: each subset holds one answer, needing min(3, 1) = 1 match.
        (["yes", "no"], (0 + 1) / 2),  # dropping "yes" gives 0, dropping "no" gives 1
        (["yes", "yes"], 1.0),
        (["no", "no"], 0.0),
        # Three humans: subsets of two, needing min(3, 2) = 2 matches.
        (["yes", "no", "no"], (0 + 0.5 + 0.5) / 3),  # 1/3
        (["yes", "yes", "no"], (0.5 + 0.5 + 1) / 3),  # 2/3
        # Four humans: subsets of three, needing 3 matches.
        (["yes", "yes", "yes", "no"], (3 * (2 / 3) + 1) / 4),  # 0.75
        # Five humans: three matches, subsets of four need 3.
        (["yes", "yes", "yes", "no", "no"], (3 * (2 / 3) + 2 * 1) / 5),  # 0.8
    ],
)
def test_few_references(references: list[str], expected: float) -> None:
    assert answer_accuracy("yes", references) == pytest.approx(expected, abs=1e-12)


def test_matches_are_counted_after_normalizing_both_sides() -> None:
    # All ten humans wrote "Two": the official script leaves agreeing human answers untouched and scores
    # "2" at 0; omnivis normalizes both sides.
    assert answer_accuracy("2", ["Two"] * 10) == 1.0
    assert answer_accuracy("two", ["Two"] * 10) == 1.0
    # "2", "two", "Two." and "2!" all normalize to "2": 4 matches of 10.
    assert answer_accuracy("Two", ["2", "two", "Two.", "2!"] + ["3"] * 6) == 1.0


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Two", "2"),
        ("a dog.", "dog"),
        ("A Dog.", "dog"),
        ("the cat's", "cat's"),  # apostrophes are not in the official punctuation list
        ("dont", "don't"),
        ("don't", "don't"),
        ("3.5", "3.5"),
        ("3.", "3"),  # the period is not followed by a digit
        (".5", ".5"),  # the official "look-behind" is a look-ahead: only the following digit counts
        ("dog...", "dog"),
        ("a.b", "ab"),
        ("yes!", "yes"),
        ('"yes"', "yes"),
        ("1,000", "1000"),  # a digit-comma-digit deletes every punctuation mark, the comma included
        ("1,000 (about)", "1000 about"),
        ("t-shirt 1,000", "tshirt 1000"),
        ("t-shirt", "t shirt"),  # no space touches the hyphen: it becomes a space
        ("x-ray - maybe", "xray maybe"),  # one hyphen touches a space, so every hyphen is deleted
        ("red,blue", "red blue"),
        ("red, blue", "red blue"),
        ("red/blue", "red blue"),
        ("2:30", "2:30"),  # colons are not in the official list either
        ("None", "0"),
        ("zero", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),
        ("one dog", "1 dog"),
        ("someone", "someone"),  # number words and articles are whole words only
        ("theater", "theater"),
        ("an apple", "apple"),
        ("The", ""),
        ("  yes\n", "yes"),
        ("red\tcar", "red car"),
        ("red   car", "red car"),
        ("", ""),
        (" \n\t ", ""),
    ],
)
def test_normalize_answer(answer: str, expected: str) -> None:
    assert normalize_answer(answer) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("dont", "don't"),
        ("cant", "can't"),
        ("wont", "won't"),
        ("oclock", "o'clock"),
        ("maam", "ma'am"),
        ("twas", "'twas"),
        ("yall", "y'all"),
        ("couldnt've", "couldn't've"),
        ("couldn'tve", "couldn't've"),
        ("couldntve", "couldn't've"),
        ("yallll", "y'all'll"),
        ("y'allll", "y'all'll"),
        ("its", "its"),  # ordinary words whose contraction is not restored
        ("well", "well"),
        ("were", "were"),
        ("shed", "shed"),
        ("wed", "wed"),
        ("ill", "ill"),
        ("hell", "hell"),
        ("i dont know", "i don't know"),
        ("Dont", "don't"),  # lower-casing comes first
    ],
)
def test_contractions(answer: str, expected: str) -> None:
    assert normalize_answer(answer) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("café", "café"),
        ("Café", "café"),
        ("ÉCOLE", "école"),
        ("日本", "日本"),
        ("日本!", "日本"),
        ("日本！", "日本！"),  # the full-width mark is not in the official list
        ("straße", "straße"),
    ],
)
def test_unicode_answers_are_kept(answer: str, expected: str) -> None:
    assert normalize_answer(answer) == expected


def test_unicode_accuracy() -> None:
    assert answer_accuracy("Café", ["café"] * 4 + ["tea"] * 6) == 1.0  # 4 of 10: every subset keeps 3
    assert answer_accuracy("日本", ["日本"] + ["中国"] * 9) == pytest.approx(0.3, abs=1e-12)


def test_empty_prediction() -> None:
    assert answer_accuracy("", ["yes"] * 10) == 0.0
    # An answer that normalizes to nothing matches a human answer that does too.
    assert answer_accuracy("the", [""]) == 1.0


def test_vqa_accuracy_mean_and_per_question() -> None:
    mean, per_question = vqa_accuracy(
        ["yes", "2", "red"],
        [["yes"] * 10, _ten_humans(1), ["blue"] * 10],
    )
    assert per_question == pytest.approx([1.0, 0.3, 0.0], abs=1e-12)
    assert mean == pytest.approx((1.0 + 0.3 + 0.0) / 3, abs=1e-12)


def test_vqa_accuracy_accepts_tuples() -> None:
    mean, per_question = vqa_accuracy(("yes",), (("yes", "no"),))
    assert per_question == [0.5]
    assert mean == 0.5


@pytest.mark.parametrize(
    ("prediction", "references", "message"),
    [
        ("yes", [], "empty"),
        ("yes", (), "empty"),
        (None, ["yes"], "prediction"),
        (3, ["yes"], "prediction"),
        ("yes", "yes", "sequence"),  # a bare string is not a list of answers
        ("yes", ["yes", 3], r"references\[1\]"),
        ("yes", None, "sequence"),
    ],
)
def test_answer_accuracy_errors(prediction: object, references: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        answer_accuracy(prediction, references)  # type: ignore[arg-type]


def test_normalize_answer_rejects_non_strings() -> None:
    with pytest.raises(InputError, match="answer"):
        normalize_answer(None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="answer"):
        normalize_answer(b"yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([], [], "empty"),
        (["yes"], [], "differ in length"),
        (["yes", "no"], [["yes"]], "differ in length"),
        ("yes", [["yes"]] * 3, "predictions"),
        (["yes", 1], [["yes"], ["no"]], r"predictions\[1\]"),
        (["yes", "no"], [["yes"], []], r"references\[1\].*empty"),
        (["yes", "no"], [["yes"], "no"], r"references\[1\]"),
        (["yes"], [["yes", None]], r"references\[0\]\[1\]"),
    ],
)
def test_vqa_accuracy_errors(predictions: object, references: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        vqa_accuracy(predictions, references)  # type: ignore[arg-type]


def test_input_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        vqa_accuracy([], [])
