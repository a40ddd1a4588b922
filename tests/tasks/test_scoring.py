"""Mapping boxes back to the tokens that wrote them, and the score rule."""

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle_tokenizer import make_florence_tokenizer

from omnivis.errors import InputError
from omnivis.tasks.answers import answer_text
from omnivis.tasks.scoring import answer_positions, box_scores, token_spans
from omnivis.tokenizer import Tokenizer

# The stand-in tokenizer is built with transformers.
pytestmark = pytest.mark.oracle


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    directory: Path = tmp_path_factory.mktemp("scoring-tokenizer")
    make_florence_tokenizer(directory, layout="native")
    return Tokenizer.from_directory(directory)


def test_answer_positions_by_hand() -> None:
    text = "</s><s>ab<pad>c"
    assert answer_positions(text) == [7, 8, 14]


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="<>/spadx", max_size=30))
def test_answer_positions_follow_the_replace_chain(text: str) -> None:
    assert "".join(text[index] for index in answer_positions(text)) == answer_text(text)


def test_spans_of_whole_tokens(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("</s><s>a red car<loc_1><loc_2></s>")
    text = tokenizer.decode(ids)
    spans = token_spans(ids, tokenizer, text)
    assert [text[start:end] for start, end in spans] == [tokenizer.decode([token]) for token in ids]


def test_spans_when_a_character_is_split_over_tokens(tokenizer: Tokenizer) -> None:
    emoji = tokenizer.encode("😀")
    assert len(emoji) > 1  # byte-level pieces, none of which decodes to the emoji alone
    ids = [*emoji, tokenizer.location_token_id(1)]
    text = tokenizer.decode(ids)
    assert text == "😀<loc_1>"
    spans = token_spans(ids, tokenizer, text)
    # The token that completes the character owns it; the location token keeps its own text.
    assert spans[-2] == (0, 1) and all(start == end == 0 for start, end in spans[:-2])
    assert spans[-1] == (1, len(text))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_spans_tile_the_text(tokenizer: Tokenizer, data: st.DataObject) -> None:
    ids = data.draw(st.lists(st.integers(0, tokenizer.vocab_size - 1), max_size=12))
    text = tokenizer.decode(ids)
    spans = token_spans(ids, tokenizer, text)
    assert [start for start, _ in spans] == [0, *[end for _, end in spans]][: len(spans)]
    assert (spans[-1][1] if spans else 0) == len(text)
    for token_id, (start, end) in zip(ids, spans, strict=True):
        if tokenizer.is_special(tokenizer.convert_ids_to_tokens([token_id])[0]):
            assert text[start:end] == tokenizer.convert_ids_to_tokens([token_id])[0]


def test_box_score_is_exp_of_the_mean_log_probability(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("</s><s>car<loc_1><loc_2><loc_3><loc_4></s>")
    text = tokenizer.decode(ids)
    first = len(tokenizer.encode("</s><s>car"))
    scores = [-5.0] * len(ids)
    scores[first : first + 4] = [math.log(0.9), math.log(0.8), math.log(0.5), math.log(0.2)]
    span = (3, 3 + len("<loc_1><loc_2><loc_3><loc_4>"))  # in the answer text "car<loc_1>...<loc_4>"
    (score,) = box_scores([span], ids, scores, tokenizer, text)
    assert score == pytest.approx((0.9 * 0.8 * 0.5 * 0.2) ** 0.25)


def test_box_score_errors(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("car")
    with pytest.raises(InputError, match="token scores"):
        box_scores([], ids, [], tokenizer, "car")
    with pytest.raises(InputError, match="NaN"):
        box_scores([], ids, [math.inf] * len(ids), tokenizer, "car")
