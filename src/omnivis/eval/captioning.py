"""Caption quality: CIDEr-D and BLEU-4 by pycocoevalcap's own scorers.

pycocoevalcap tokenizes with Stanford's PTB tokenizer, a Java program. omnivis needs no Java: `caption_tokens`
reproduces what that step gives for ordinary English (lower case; curly quotes read as straight ones; "n't"
and "'s"-style clitics split off, "cannot" as "can not"; words joined by hyphens, slashes, apostrophes or
periods and numbers such as "3.5", "1,000" or "5:30" kept whole; "e.g.", "p.m." and titles such as "mr."
keep their period; quotes and the punctuation marks pycocoevalcap drops removed; brackets written as PTB
names them, "-lrb-" and the like). `tests/eval/test_captioning.py` checks it against the Java tokenizer where
Java is installed. The scores are then computed by pycocoevalcap's `Cider` (CIDEr-D: clipped n-gram counts,
a Gaussian length penalty, sigma 6, times 10) and `Bleu(4)`.

CIDEr's n-gram weights come from the references of the whole evaluated set (document frequencies), so a
score is only comparable between runs over the same images; over a single image every weight is zero and
CIDEr is 0, which is pycocoevalcap's behaviour too.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from omnivis.errors import InputError

# The tokens pycocoevalcap removes after PTB tokenization (PTB writes quotes as `` and '').
_DROPPED_TOKENS = frozenset({"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", '"'})
# Dashes PTB writes as "--", which is dropped.
_DASHES = frozenset({"\u2014", "\u2013"})
# PTB writes brackets as -LRB- and the like; pycocoevalcap drops those names in upper case, but it asks for
# lower-cased output, so they stay in its token lists as "-lrb-" etc. Kept the same way here.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# PTB reads curly quotes as straight ones, and splits "cannot" in two.
_STRAIGHT_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})
_CANNOT = re.compile(r"\bcannot\b")
_NOT = re.compile(r"(?<=\w)n't\b")
_CLITIC = re.compile(r"(?<=\w)'(s|re|ve|ll|d|m)\b")
_TOKEN = re.compile(
    r"n't|'(?:s|re|ve|ll|d|m)\b"  # clitics, already split off their words
    r"|(?:[^\W\d_]\.){2,}"  # abbreviations with inner periods keep their last one: "e.g.", "p.m."
    r"|(?:mr|mrs|ms|dr|prof|st|jr|sr|vs)\.(?=\s|$)"  # titles keep their period
    r"|\d+(?:[.,:/]\d+)+"  # numbers with separators stay whole: "3.5", "1,000", "5:30", "1/2"
    r"|[^\W_]+(?:[-'/.][^\W_]+)*"  # words joined without space: "red-orange", "o'clock", "and/or", "dog.a"
    r"|\.{3}|--|[?!]{2,}"  # runs PTB keeps as one token ("..." and "--" are then dropped)
    r"|\S"  # any other single character
)


def caption_tokens(text: str) -> str:
    """A caption tokenized as pycocoevalcap's PTB step gives it: lower-case tokens joined by single spaces."""
    text = _CANNOT.sub("can not", text.replace("\n", " ").translate(_STRAIGHT_QUOTES).lower())
    text = _CLITIC.sub(r" '\1", _NOT.sub(" n't", text))
    tokens = _TOKEN.findall(text)
    kept = (token for token in tokens if token not in _DROPPED_TOKENS and token not in _DASHES)
    return " ".join(_BRACKETS.get(token, token) for token in kept)


def caption_metrics(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[dict[str, float], list[float]]:
    """Corpus CIDEr-D and BLEU-4 of captions against their references.

    Args:
        hypotheses: One predicted caption per image.
        references: The reference captions of each image (at least one each).

    Returns:
        ({"CIDEr": ..., "BLEU-4": ...}, the CIDEr-D of each image).

    Raises:
        InputError: No captions, lengths that differ, or an image without references.
    """
    if len(hypotheses) != len(references):
        raise InputError(f"got {len(hypotheses)} captions for {len(references)} reference sets")
    if not hypotheses:
        raise InputError("no captions to score")
    if any(len(image_references) == 0 for image_references in references):
        raise InputError("every image needs at least one reference caption")
    predicted = {index: [caption_tokens(text)] for index, text in enumerate(hypotheses)}
    truth = {index: [caption_tokens(text) for text in texts] for index, texts in enumerate(references)}
    cider, per_image = Cider().compute_score(truth, predicted)
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length ratios
        bleu, _ = Bleu(4).compute_score(truth, predicted)
    return {"CIDEr": float(cider), "BLEU-4": float(bleu[3])}, [float(value) for value in per_image]
