"""omnivis's tokenizer against transformers' BART tokenizer loaded from the same files (both layouts)."""

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle_tokenizer import (
    FLORENCE_TOKENS,
    LAYOUTS,
    add_florence_tokens_like_remote_code,
    load_reference_tokenizer,
    make_florence_tokenizer,
)
from transformers import AutoTokenizer

from omnivis.errors import CheckpointError, InputError
from omnivis.tokenizer import FLORENCE_TOKENS as RUNTIME_FLORENCE_TOKENS
from omnivis.tokenizer import Tokenizer

pytestmark = pytest.mark.oracle

SAMPLE_TEXTS = [
    "",
    " ",
    "   ",
    "What is the text in the image?",
    "Locate the phrases in the caption: a red car",
    "Locate  a  red  car  in the image.",
    "What is the region <loc_52><loc_332><loc_932><loc_774>?",
    "<s>Describe in detail what is shown in the image.</s>",
    "<image><image><s>What does the image describe?</s>",
    "car<loc_53><loc_334><loc_933><loc_775>door handle<loc_425><loc_504><loc_474><loc_516>",
    "<poly><loc_1><loc_2><sep><loc_3><loc_4></poly><and><od></od><ocr></ocr>",
    "<loc_0><loc_999><loc_1000><loc_-1><LOC_5><loc_05>",
    "<region_to_desciption> <grounding>x</grounding> <seg></seg>",
    "x <mask> y",
    "<mask>",
    " <mask> ",
    "a<mask>b",
    "<pad><unk></s><s>",
    "<s<s>>",
    "héllo wörld, café naïve résumé",
    "中文 日本語 한국어",
    "emoji 😀🚗🌳 and ½ ° € £",
    "tabs\tand\nnew\nlines\r\n  trailing  ",
    "0123456789 3.14 -7 +8 1,000,000",
    "'quotes' \"double\" (parens) [brackets] {braces} a/b a\\b",
    "ALL CAPS Title Case lower",
    "don't won't it's I'm you're we've",
]


@pytest.fixture(scope="module", params=LAYOUTS)
def layout_pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """(layout, directory, transformers tokenizer with Florence-2 tokens, omnivis tokenizer)."""
    directory = tmp_path_factory.mktemp(f"tokenizer-{request.param}")
    make_florence_tokenizer(directory, layout=request.param)
    reference = load_reference_tokenizer(directory, layout=request.param)
    return request.param, directory, reference, Tokenizer.from_directory(directory)


def test_florence_token_list_is_the_original_one() -> None:
    assert tuple(FLORENCE_TOKENS) == RUNTIME_FLORENCE_TOKENS
    assert len(RUNTIME_FLORENCE_TOKENS) == 1024  # 4 + 1000 locations + 20: 50265 + 1024 = 51289 with BART
    assert RUNTIME_FLORENCE_TOKENS[4] == "<loc_0>" and RUNTIME_FLORENCE_TOKENS[1003] == "<loc_999>"
    assert "<region_to_desciption>" in RUNTIME_FLORENCE_TOKENS  # the original's spelling


def test_vocabulary_and_ids_match(layout_pair: tuple) -> None:
    _, _, reference, ours = layout_pair
    assert ours.vocab_size == len(reference)
    for token in ["<s>", "<pad>", "</s>", "<unk>", "<mask>", *RUNTIME_FLORENCE_TOKENS]:
        assert ours.token_to_id(token) == reference.convert_tokens_to_ids(token), token
    assert (ours.bos_token_id, ours.pad_token_id, ours.eos_token_id, ours.unk_token_id) == (0, 1, 2, 3)
    assert ours.bos_token_id == reference.bos_token_id and ours.eos_token_id == reference.eos_token_id
    assert ours.pad_token_id == reference.pad_token_id and ours.unk_token_id == reference.unk_token_id
    first = reference.convert_tokens_to_ids("<od>")
    # The Florence-2 tokens follow the base vocabulary in the original order, in both layouts.
    assert [ours.token_to_id(token) for token in RUNTIME_FLORENCE_TOKENS] == list(range(first, first + 1024))
    assert [ours.location_token_id(k) for k in (0, 7, 999)] == [first + 4, first + 11, first + 1003]


def test_image_token(layout_pair: tuple) -> None:
    layout, _, reference, ours = layout_pair
    if layout == "native":
        assert ours.image_token_id == reference.image_token_id == ours.vocab_size - 1
    else:
        assert ours.image_token_id is None  # the original vocabulary has no <image>


def test_special_tokens_match_all_special_tokens(layout_pair: tuple) -> None:
    _, _, reference, ours = layout_pair
    assert ours.special_tokens == reference.all_special_tokens
    assert ours.special_token_ids == reference.all_special_ids
    assert ours.is_special("<loc_5>") and ours.is_special("</s>") and not ours.is_special("car")


@pytest.mark.parametrize("text", SAMPLE_TEXTS)
def test_encode_and_decode_match_on_samples(layout_pair: tuple, text: str) -> None:
    _, _, reference, ours = layout_pair
    ids = reference(text, add_special_tokens=False).input_ids
    assert ours.encode(text) == ids
    for skip in (False, True):
        expected = reference.batch_decode(
            [ids], skip_special_tokens=skip, clean_up_tokenization_spaces=False
        )[0]
        assert ours.decode(ids, skip_special_tokens=skip) == expected


_PIECES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["<s>", "</s>", "<pad>", "<mask>", "<loc_0>", "<loc_999>", "<sep>", "<poly>", " ", "\n"]),
)


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=8))
def test_encode_matches_on_random_text(layout_pair: tuple, pieces: list[str]) -> None:
    _, _, reference, ours = layout_pair
    text = "".join(pieces)
    assert ours.encode(text) == reference(text, add_special_tokens=False).input_ids


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_decode_and_tokens_match_on_random_ids(layout_pair: tuple, data: st.DataObject) -> None:
    _, _, reference, ours = layout_pair
    ids = data.draw(st.lists(st.integers(0, ours.vocab_size - 1), max_size=20))
    skip = data.draw(st.booleans())
    expected = reference.batch_decode([ids], skip_special_tokens=skip, clean_up_tokenization_spaces=False)[0]
    assert ours.decode(ids, skip_special_tokens=skip) == expected
    tokens = ours.convert_ids_to_tokens(ids)
    assert tokens == reference.convert_ids_to_tokens(ids)
    assert [ours.token_to_string(t) for t in tokens] == [
        reference.convert_tokens_to_string([t]) for t in tokens
    ]


def test_ids_past_the_vocabulary_decode_to_nothing(layout_pair: tuple) -> None:
    """A padded output layer can produce ids the tokenizer lacks; transformers drops them when decoding."""
    _, _, reference, ours = layout_pair
    ids = [*ours.encode("a red car"), ours.vocab_size, ours.vocab_size + 63, *ours.encode("<loc_1>")]
    expected = reference.batch_decode([ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert ours.decode(ids) == expected[0] == "a red car<loc_1>"


def test_vocab_and_merges_without_tokenizer_json(tmp_path: Path) -> None:
    """The original layout read from vocab.json + merges.txt alone, as old transformers versions wrote it."""
    make_florence_tokenizer(tmp_path, layout="remote")
    (tmp_path / "tokenizer.json").unlink()
    reference = load_reference_tokenizer(tmp_path, layout="remote")
    ours = Tokenizer.from_directory(tmp_path)
    assert ours.vocab_size == len(reference)
    assert ours.special_tokens == reference.all_special_tokens
    for text in SAMPLE_TEXTS:
        ids = reference(text, add_special_tokens=False).input_ids
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == reference.decode(ids, clean_up_tokenization_spaces=False)


def test_transformers_4_style_config(tmp_path: Path) -> None:
    """A native config in transformers 4's style: `additional_special_tokens` plus an image-token dict."""
    make_florence_tokenizer(tmp_path, layout="native")
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["additional_special_tokens"] = config.pop("extra_special_tokens")
    config["extra_special_tokens"] = {"image_token": config.pop("image_token")}
    config.pop("model_specific_special_tokens", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    reference = AutoTokenizer.from_pretrained(tmp_path)
    ours = Tokenizer.from_directory(tmp_path)
    assert ours.special_tokens == reference.all_special_tokens
    assert ours.image_token_id == reference.image_token_id
    assert ours.encode(SAMPLE_TEXTS[8]) == reference(SAMPLE_TEXTS[8], add_special_tokens=False).input_ids


def test_save_round_trip_is_atomic_and_loadable(layout_pair: tuple, tmp_path: Path) -> None:
    _, _, reference, ours = layout_pair
    target = tmp_path / "saved"
    ours.save(target)
    assert sorted(path.name for path in target.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    again = Tokenizer.from_directory(target)
    assert again.vocab_size == ours.vocab_size
    assert again.special_tokens == ours.special_tokens
    assert again.image_token_id == ours.image_token_id
    reloaded = AutoTokenizer.from_pretrained(target)
    for text in SAMPLE_TEXTS:
        expected = reference(text, add_special_tokens=False).input_ids
        assert again.encode(text) == expected
        assert reloaded(text, add_special_tokens=False).input_ids == expected
    ours.save(target)  # overwriting leaves no staging files behind
    assert sorted(path.name for path in target.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]


def test_missing_files_raise_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        Tokenizer.from_directory(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        Tokenizer.from_directory(tmp_path / "absent")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("tokenizer.json", "{not json", "tokenizer.json"),
        ("tokenizer.json", '{"model": {"type": "WordPiece", "vocab": {}}}', "byte-level BPE"),
        ("tokenizer.json", '{"model": {"type": "BPE", "vocab": {}, "merges": ["a b c"]}}', "malformed"),
        ("tokenizer_config.json", "[1, 2]", "tokenizer_config.json"),
    ],
)
def test_malformed_files_raise_checkpoint_error(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    make_florence_tokenizer(tmp_path, layout="remote")
    (tmp_path / name).write_text(content)
    with pytest.raises(CheckpointError, match=message):
        Tokenizer.from_directory(tmp_path)


def test_malformed_vocab_json_raises_checkpoint_error(tmp_path: Path) -> None:
    make_florence_tokenizer(tmp_path, layout="remote")
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "vocab.json").write_text('{"a": "not an id"}')
    with pytest.raises(CheckpointError, match="vocab.json"):
        Tokenizer.from_directory(tmp_path)


def test_user_errors_raise_input_error(layout_pair: tuple) -> None:
    _, _, _, ours = layout_pair
    with pytest.raises(InputError, match="outside"):
        ours.location_token_id(1000)
    with pytest.raises(InputError, match="non-negative"):
        ours.decode([-1])
    with pytest.raises(InputError, match="past the vocabulary"):
        ours.convert_ids_to_tokens([ours.vocab_size])
    with pytest.raises(InputError, match="string"):
        ours.encode(b"bytes")  # type: ignore[arg-type]


def test_copied_directory_loads_the_same(layout_pair: tuple, tmp_path: Path) -> None:
    """Loading does not depend on where the files are."""
    _, directory, _, ours = layout_pair
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    assert Tokenizer.from_directory(copy).encode(SAMPLE_TEXTS[9]) == ours.encode(SAMPLE_TEXTS[9])


def test_remote_code_addition_is_idempotent_in_the_reference(tmp_path: Path) -> None:
    """Adding the tokens twice (the original did it on every load) changes nothing, as in omnivis."""
    reference = make_florence_tokenizer(tmp_path, layout="native")
    size = len(reference)
    add_florence_tokens_like_remote_code(reference)
    assert len(reference) == size == Tokenizer.from_directory(tmp_path).vocab_size


def test_add_prefix_space_from_the_config_survives_a_save(tmp_path: Path) -> None:
    make_florence_tokenizer(tmp_path, layout="remote")
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "add_prefix_space": True}))
    reference = load_reference_tokenizer(tmp_path, layout="remote")
    ours = Tokenizer.from_directory(tmp_path)
    ours.save(tmp_path / "saved")
    again = Tokenizer.from_directory(tmp_path / "saved")
    for text in SAMPLE_TEXTS[:10]:
        expected = reference(text, add_special_tokens=False).input_ids
        assert ours.encode(text) == again.encode(text) == expected
    assert ours.encode("car")[0] == ours.encode(" car")[0]  # the prefix space is really on


@pytest.mark.oracle
def test_bundled_tokenizer_is_learned_from_the_world_and_reads_like_an_official_one(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from omnivis.loading import bundled_tokenizer
    from omnivis.world import VARIANTS, generate

    tokenizer = bundled_tokenizer()
    texts = [text for record in generate(20, 123, VARIANTS["hard"]) for text in record.texts() if text]
    words = sum(len(text.split()) for text in texts)
    tokens = sum(len(tokenizer.encode(text)) for text in texts)
    # A BPE learned elsewhere spends about two tokens per world word; this one was learned on the world.
    assert tokens / words < 1.3
    assert all(tokenizer.decode(tokenizer.encode(text)) == text for text in texts)
    tokenizer.save(tmp_path)
    reference = AutoTokenizer.from_pretrained(tmp_path)
    for text in texts[:300]:
        assert reference(text, add_special_tokens=False).input_ids == tokenizer.encode(text)
    locations = [f"<loc_{index}>" for index in (0, 500, 999)]
    assert reference.convert_tokens_to_ids(locations) == tokenizer.encode("".join(locations))
