"""VQAv2 accuracy (Antol et al. 2015; Goyal et al. 2017) with the answer normalization of the official VQA
evaluation script (GT-Vision-Lab's `vqaEval.py`: `processPunctuation`, then `processDigitArticle`).

An answer is right in proportion to how many humans gave it: against ten human answers the score is
min(1, #matching humans / 3), averaged over the ten leave-one-out subsets of nine.

Normalization follows the official script, including its regexes as they actually behave:

- Each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted if it touches a space somewhere in the
  answer, or if the answer holds a digit-comma-digit anywhere ("1,000" -> "1000"); otherwise it becomes a
  space ("t-shirt" -> "t shirt"). Apostrophes and colons are not in the list, so "cat's" and "2:30" stay.
- A period is deleted unless a digit follows it ("dog." -> "dog", "3.5" and ".5" stay). The official pattern
  ``(?!<=\\d)`` was meant as a look-behind but is a look-ahead that always succeeds, so "3." -> "3" too.
- Lower-case; "none" and "zero".."ten" become digits; the articles a/an/the are dropped; contractions
  written without apostrophes are restored ("dont" -> "don't"); words are joined by one space.

Deliberate differences from the official script:

- The official script normalizes only the prediction fully. The human answers get the punctuation step
  alone, and only when the humans disagree: if all ten wrote "Two", a prediction of "2" (or "two", which
  becomes "2") scores 0. omnivis normalizes both sides the same way, so those match.
- The official contraction table is typed out by hand, with a few dead entries ("Im" is never looked up
  after lower-casing, "let's" maps to itself, "somebody'd" maps to "somebodyd"). omnivis derives every
  apostrophe-less spelling from the contractions themselves, so "im" -> "i'm" and "lets" -> "let's" too.
- The official script passes ``re.UNICODE`` where `re.sub` expects a count, so it strips at most 32
  periods; omnivis strips them all.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Sequence

from omnivis.errors import InputError

# Deleted when touching a space (or when the answer is a comma-grouped number), else replaced by a space.
_PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})

# The contractions the official table restores. Ones whose apostrophe-less spelling is an ordinary word
# (we'd/wed, it's/its, we'll/well, she'll/shell, i'll/ill) are absent there and here, so those words survive.
_CONTRACTIONS_WITH_APOSTROPHES = (
    "ain't", "aren't", "can't", "could've", "couldn't", "couldn't've", "didn't", "doesn't", "don't",
    "hadn't", "hadn't've", "hasn't", "haven't", "he'd", "he'd've", "he's", "how'd", "how'll", "how's",
    "i'd've", "i'm", "i've", "isn't", "it'd", "it'd've", "it'll", "let's", "ma'am", "mightn't",
    "mightn't've", "might've", "mustn't", "must've", "needn't", "not've", "o'clock", "oughtn't", "'ow's'at",
    "shan't", "she'd've", "she's", "should've", "shouldn't", "shouldn't've", "somebody'd", "somebody'd've",
    "somebody'll", "somebody's", "someone'd", "someone'd've", "someone'll", "someone's", "something'd",
    "something'd've", "something'll", "that's", "there'd", "there'd've", "there're", "there's", "they'd",
    "they'd've", "they'll", "they're", "they've", "'twas", "wasn't", "we'd've", "we've", "weren't",
    "what'll", "what're", "what's", "what've", "when's", "where'd", "where's", "where've", "who'd",
    "who'd've", "who'll", "who's", "who've", "why'll", "why're", "why's", "won't", "would've", "wouldn't",
    "wouldn't've", "y'all", "y'all'll", "y'all'd've", "you'd", "you'd've", "you'll", "you're", "you've",
)  # fmt: skip

# Humans agree on few distinct answers ("yes", "no", "2"), so a benchmark normalizes the same strings
# millions of times; caching makes that a lookup.
_NORMALIZATION_CACHE_SIZE = 1 << 16

# VQAv2 counts an answer fully right once three humans gave it.
_HUMANS_FOR_FULL_CREDIT = 3


def _apostrophe_free_spellings(contraction: str) -> list[str]:
    """Every spelling of `contraction` with one or more of its apostrophes left out.

    "couldn't've" gives "couldnt've", "couldn'tve" and "couldntve".
    """
    first, *rest = contraction.split("'")
    spellings = []
    for kept in itertools.product(("", "'"), repeat=len(rest)):
        spelling = first + "".join(apostrophe + piece for apostrophe, piece in zip(kept, rest, strict=True))
        if spelling != contraction:
            spellings.append(spelling)
    return spellings


_CONTRACTIONS = {
    spelling: contraction
    for contraction in _CONTRACTIONS_WITH_APOSTROPHES
    for spelling in _apostrophe_free_spellings(contraction)
}


def _process_punctuation(text: str) -> str:
    # Both tests look at the text as given, not as rewritten so far, as the official script does.
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    result = text
    for mark in _PUNCTUATION:
        touches_space = mark + " " in text or " " + mark in text
        result = result.replace(mark, "" if delete_all or touches_space else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", result)


def _process_digits_and_articles(text: str) -> str:
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES]
    return " ".join(words)


@functools.lru_cache(maxsize=_NORMALIZATION_CACHE_SIZE)
def _normalize(answer: str) -> str:
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digits_and_articles(_process_punctuation(text))


def normalize_answer(answer: str) -> str:
    """Normalize an answer as the official VQA evaluation script does (see the module docstring).

    Args:
        answer: A predicted or human answer in any script; letters outside ASCII are kept (lower-cased).

    Returns:
        The normalized answer: lower-case words joined by single spaces ("A dog." -> "dog",
        "Two" -> "2", "dont" -> "don't"); "" when nothing is left.

    Raises:
        InputError: `answer` is not a string.
    """
    _check_text(answer, "answer")
    return _normalize(answer)


def answer_accuracy(prediction: str, references: Sequence[str]) -> float:
    """Accuracy of one predicted answer against the human answers of one question.

    With n >= 2 references it is the mean over the n leave-one-out subsets of
    min(1, matches / min(3, n - 1)), where matches counts the subset's answers equal to the prediction after
    normalization; for n = 10 this is exactly VQAv2's rule. With one reference it is 1.0 on a match, else 0.0.

    Args:
        prediction: The model's answer.
        references: The human answers, at least one.

    Returns:
        The accuracy in [0, 1].

    Raises:
        InputError: `prediction` is not a string, or `references` is empty, a single string, or holds a
            non-string.
    """
    _check_text(prediction, "prediction")
    _check_references(references, "references")
    return _accuracy(prediction, references)


def _accuracy(prediction: str, references: Sequence[str]) -> float:
    predicted = _normalize(prediction)
    matched = [_normalize(reference) == predicted for reference in references]
    count = len(matched)
    if count == 1:
        return float(matched[0])
    needed = min(_HUMANS_FOR_FULL_CREDIT, count - 1)
    total = sum(matched)
    # Leaving answer i out lowers the subset's matches by one only when answer i matched. Summing the
    # integer numerators min(needed, matches) and dividing once keeps 3 of 10 at exactly 0.9.
    credit = sum(min(needed, total - left_out) for left_out in matched)
    return credit / (needed * count)


def vqa_accuracy(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[float, list[float]]:
    """VQA accuracy of a set of questions: the mean over questions and each question's accuracy.

    Args:
        predictions: One predicted answer per question.
        references: The human answers of each question, in the same order.

    Returns:
        (mean accuracy, per-question accuracies), each in [0, 1].

    Raises:
        InputError: The two sequences differ in length or are empty, or an entry is invalid (see
            `answer_accuracy`).
    """
    for name, value in (("predictions", predictions), ("references", references)):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise InputError(f"{name} must be a sequence, one entry per question, not {type(value).__name__}")
    if len(predictions) != len(references):
        raise InputError(
            f"predictions and references differ in length: {len(predictions)} vs {len(references)} questions"
        )
    if not predictions:
        raise InputError("predictions and references are empty: the accuracy of no questions is undefined")
    scores = []
    for index, (prediction, answers) in enumerate(zip(predictions, references, strict=True)):
        _check_text(prediction, f"predictions[{index}]")
        _check_references(answers, f"references[{index}]")
        scores.append(_accuracy(prediction, answers))
    return math.fsum(scores) / len(scores), scores


def _check_text(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {type(value).__name__}")


def _check_references(references: object, name: str) -> None:
    # A bare string is a sequence of characters; taking its letters for ten answers would score silently.
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise InputError(f"{name} must be a sequence of answer strings, got {type(references).__name__}")
    if not references:
        raise InputError(f"{name} is empty: a question needs at least one human answer")
    for index, reference in enumerate(references):
        _check_text(reference, f"{name}[{index}]")
