"""Per-box confidence scores from the log-probabilities of the generated tokens.

The rule is the one of microsoft's original remote code (`Florence2PostProcesser`, score mode
"avg_loc_scores"): a box's score is exp of the mean log-probability of the tokens whose text overlaps the
box's four `<loc_k>` tokens, i.e. the geometric mean of their probabilities. For a well-formed answer those
are exactly the box's four location tokens.

Two things differ from the original, neither for well-formed answers: the original scored only
`<OD>`/`<DENSE_REGION_CAPTION>` boxes (omnivis scores every box a task returns), and it located boxes by
adding up the lengths of the labelled runs it had parsed, which drifts when text it skipped sits between
them; omnivis maps each box back to its tokens exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from omnivis.errors import InputError, ParseError
from omnivis.tasks.answers import SEQUENCE_MARKERS

if TYPE_CHECKING:
    from omnivis.tokenizer import Tokenizer


def token_spans(token_ids: Sequence[int], tokenizer: Tokenizer, text: str) -> list[tuple[int, int]]:
    """Where each token's text lies in `text`, the decoding of all of `token_ids`.

    Token by token decoding usually adds up to `text`. When it does not (a character whose bytes are split
    over several tokens decodes differently alone), each token's span is instead where the decoded prefix
    stops matching `text` before and after the token: the bytes of a split character then belong to the
    token that completes it.

    Returns:
        One (start, end) character span per token, covering `text` without gaps or overlaps.
    """
    pieces = [tokenizer.decode([token_id]) for token_id in token_ids]
    if "".join(pieces) == text:
        ends = list(itertools.accumulate(len(piece) for piece in pieces))
    else:
        prefix_ends = (
            _common_prefix_length(tokenizer.decode(token_ids[: index + 1]), text)
            for index in range(len(pieces))
        )
        ends = list(itertools.accumulate(prefix_ends, max))  # a prefix may match less than a shorter one
    starts = [0, *ends][: len(ends)]
    return list(zip(starts, ends, strict=True))


def _common_prefix_length(first: str, second: str) -> int:
    length = 0
    for first_char, second_char in zip(first, second, strict=False):
        if first_char != second_char:
            break
        length += 1
    return length


def answer_positions(text: str) -> list[int]:
    """For each character of the answer text (see `answers.answer_text`), its index in `text`.

    The markers are removed one kind after another, left to right and without overlaps, exactly like
    the chain of `str.replace` calls that builds the answer text.
    """
    positions = list(range(len(text)))
    for marker in SEQUENCE_MARKERS:
        kept_text, kept_positions = [], []
        index = 0
        while index < len(text):
            if text.startswith(marker, index):
                index += len(marker)
                continue
            kept_text.append(text[index])
            kept_positions.append(positions[index])
            index += 1
        text, positions = "".join(kept_text), kept_positions
    return positions


def box_scores(
    box_spans: Sequence[tuple[int, int]],
    token_ids: Sequence[int],
    token_scores: Sequence[float],
    tokenizer: Tokenizer,
    text: str,
) -> list[float]:
    """The score of each box: exp(mean log-probability of the tokens that wrote it).

    Args:
        box_spans: Each box's character span in the answer text.
        token_ids: The generated ids that decode to `text`.
        token_scores: One log-probability per id.
        tokenizer: The tokenizer that decodes the ids.
        text: The decoded text (with its `<s>`, `</s>`, `<pad>` markers).

    Raises:
        InputError: `token_scores` is not one finite-or-minus-infinity number per token.
    """
    if len(token_scores) != len(token_ids):
        raise InputError(f"got {len(token_scores)} token scores for {len(token_ids)} tokens")
    if any(math.isnan(score) or score == math.inf for score in token_scores):
        raise InputError("token scores must be log-probabilities, not NaN or +inf")
    spans = token_spans(token_ids, tokenizer, text)
    owner = [0] * len(text)  # the token that wrote each character of `text`
    for token_index, (start, end) in enumerate(spans):
        owner[start:end] = [token_index] * (end - start)
    positions = answer_positions(text)
    scores = []
    for start, end in box_spans:
        tokens = sorted({owner[positions[index]] for index in range(start, end)})
        if not tokens:
            raise ParseError(f"no token wrote the box at characters {start}..{end} of the answer")
        scores.append(math.exp(sum(token_scores[token] for token in tokens) / len(tokens)))
    return scores
