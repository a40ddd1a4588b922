"""`caption_metrics` against pycocoevalcap's scorers called directly; `caption_tokens` against hand-written
tokenizations and, where Java is installed, against pycocoevalcap's own PTB tokenizer step."""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Sequence

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from omnivis.errors import InputError
from omnivis.eval.captioning import caption_metrics, caption_tokens


def _oracle(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[float, float, list[float]]:
    """(CIDEr-D, BLEU-4, per-image CIDEr-D) of pycocoevalcap's scorers on the tokenized captions."""
    predicted = {f"image-{index}": [caption_tokens(text)] for index, text in enumerate(hypotheses)}
    truth = {
        f"image-{index}": [caption_tokens(text) for text in texts] for index, texts in enumerate(references)
    }
    cider, per_image = Cider().compute_score(truth, predicted)
    bleu, _ = Bleu(4).compute_score(truth, predicted, verbose=0)
    return float(cider), float(bleu[3]), [float(value) for value in per_image]


def _assert_agrees(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):
        metrics, per_image = caption_metrics(hypotheses, references)
        cider, bleu, oracle_per_image = _oracle(hypotheses, references)
    assert metrics["CIDEr"] == pytest.approx(cider, abs=1e-9)
    assert metrics["BLEU-4"] == pytest.approx(bleu, abs=1e-9)
    assert per_image == pytest.approx(oracle_per_image, abs=1e-9)
    return metrics


# Every caption has n-grams of each order 1..4 that no other image's references share, so every order has
# non-zero CIDEr weights.
DISTINCT = [
    "A small red circle to the left of a large blue star.",
    "Two green triangles stand above one yellow square.",
    "An orange hexagon rests near the bottom edge.",
]


def test_identical_captions_score_ten() -> None:
    metrics = _assert_agrees(DISTINCT, [[caption] for caption in DISTINCT])
    assert metrics["CIDEr"] == pytest.approx(10.0, abs=1e-9)
    # BLEU's smoothing constants (1e-15 and 1e-9 per order) keep it a hair below 1.
    assert metrics["BLEU-4"] == pytest.approx(1.0, abs=1e-6)


def test_single_image_has_zero_cider() -> None:
    """Over one image every n-gram occurs in all images' references: every document-frequency weight is 0."""
    metrics = _assert_agrees([DISTINCT[0]], [[DISTINCT[0]]])
    assert metrics["CIDEr"] == 0.0


@pytest.mark.parametrize("hypothesis", ["", "...", "!?"])
def test_empty_hypothesis(hypothesis: str) -> None:
    metrics = _assert_agrees([hypothesis, DISTINCT[1]], [[DISTINCT[0]], [DISTINCT[1]]])
    assert metrics["CIDEr"] == pytest.approx(5.0, abs=1e-9)  # 0 for the empty caption, 10 for the other


def test_unicode_captions() -> None:
    hypotheses = [
        "Un café près de la fenêtre.",
        "Ein grüner Würfel über dem Kreis.",
        "naïve façade, crème brûlée",
    ]
    references = [
        ["Un café près de la grande fenêtre.", "Une tasse de café."],
        ["Ein grüner Würfel liegt über dem roten Kreis."],
        ["A naïve façade of crème brûlée.", "Crème brûlée and a façade."],
    ]
    metrics = _assert_agrees(hypotheses, references)
    assert 0.0 < metrics["CIDEr"] < 10.0


def test_multiple_references() -> None:
    hypotheses = ["A red circle left of a blue star.", "Two green triangles.", "A yellow square at the top."]
    references = [
        [
            "A small red circle to the left of a blue star.",
            "A red circle beside a star.",
            "Red circle, blue star.",
        ],
        ["Two green triangles above a square.", "Green triangles, two of them."],
        ["A yellow square near the top edge.", "The square is yellow.", "Yellow square, top.", "A square."],
    ]
    metrics = _assert_agrees(hypotheses, references)
    assert 0.0 < metrics["CIDEr"] < 10.0
    assert 0.0 < metrics["BLEU-4"] < 1.0


VOCABULARY = (
    "a", "the", "red", "blue", "green", "small", "large", "circle", "star", "square", "left", "of", "above",
)  # fmt: skip


def _random_sentence(rng: np.random.Generator) -> str:
    words = [str(word) for word in rng.choice(VOCABULARY, size=int(rng.integers(3, 12)))]
    return " ".join(words).capitalize() + str(rng.choice([".", "", "!"]))


def _random_case(seed: int) -> tuple[list[str], list[list[str]]]:
    """Images with 1 to 5 random references each; a hypothesis is a reference with a few words changed or
    dropped, or an unrelated sentence."""
    rng = np.random.default_rng(seed)
    hypotheses, references = [], []
    for _ in range(int(rng.integers(2, 9))):
        texts = [_random_sentence(rng) for _ in range(int(rng.integers(1, 6)))]
        if rng.random() < 0.6:
            words = texts[0].split()
            kept = [
                word if rng.random() < 0.7 else str(rng.choice(VOCABULARY))
                for word in words
                if rng.random() < 0.9
            ]
            hypotheses.append(" ".join(kept))
        else:
            hypotheses.append(_random_sentence(rng))
        references.append(texts)
    return hypotheses, references


@pytest.mark.parametrize("seed", range(12))
def test_random_cases_agree_with_pycocoevalcap(seed: int) -> None:
    _assert_agrees(*_random_case(seed))


def test_errors() -> None:
    with pytest.raises(InputError, match="reference sets"):
        caption_metrics(["a cat"], [["a cat"], ["a dog"]])
    with pytest.raises(InputError, match="no captions"):
        caption_metrics([], [])
    with pytest.raises(InputError, match="at least one reference"):
        caption_metrics(["a cat", "a dog"], [["a cat"], []])


# Written out from what pycocoevalcap's PTB step (Stanford PTBTokenizer -lowerCase, then its punctuation
# filter) gives for each caption.
EXPECTED_TOKENS = {
    "There isn't a cat here.": "there is n't a cat here",
    "The cat's toy is under the dog's bed.": "the cat 's toy is under the dog 's bed",
    "Don't stop! Can't you see?": "do n't stop ca n't you see",
    "They're sure we'll go; I'd say I'm done.": "they 're sure we 'll go i 'd say i 'm done",
    "We've won, you'd see.": "we 've won you 'd see",
    "It weighs 3.5 kg and costs 1,000 yen.": "it weighs 3.5 kg and costs 1,000 yen",
    "A red-orange ball in a black-and-white room.": "a red-orange ball in a black-and-white room",
    "A ball (red) in [a box] {here}.": "a ball -lrb- red -rrb- in -lsb- a box -rsb- -lcb- here -rcb-",
    'He said "hello" and `left`.': "he said hello and left",
    "He said 'hello' to me.": "he said hello to me",
    "Hello, world: a test; really? Wait! -- yes...": "hello world a test really wait yes",
    "Café CRÈME über alles": "café crème über alles",
    "A CAT'S HAT ISN'T RED.": "a cat 's hat is n't red",
    "The dogs' bowls": "the dogs bowls",
    "A man's  \n  hat.": "a man 's hat",
    "  leading and trailing  ": "leading and trailing",
    "": "",
    "...": "",
}


@pytest.mark.parametrize(("text", "expected"), EXPECTED_TOKENS.items())
def test_caption_tokens_by_hand(text: str, expected: str) -> None:
    assert caption_tokens(text) == expected


# Ordinary English captions on which omnivis's tokenizer must give what Stanford's gives.
PTB_AGREES = [
    "A small red circle to the left of a large blue star.",
    "Two green triangles above a yellow square, near the bottom.",
    "A tiny purple hexagon is below the big orange circle.",
    "There isn't a cat here.",
    "The cat's toy is under the dog's bed.",
    "They're sure we'll go; I'd say I'm done.",
    "Don't stop! Can't you see? Won't you?",
    "couldn't shouldn't wouldn't ain't",
    "It costs $3.50 or 1,000 yen (about 3.5%).",
    "I've got 12,345.67 dollars, 100% sure.",
    "A red-orange ball in a black-and-white room.",
    "well-known, 3-D, x-ray, e-mail, a 3-year-old boy",
    'He said "hello" and `left`.',
    "He said 'hello' to me.",
    "it's 'quoted' here",
    "Mary's cats' toys.",
    "Café crème über alles, naïve façade.",
    "A [bracketed] {curly} (round) thing.",
    "Wait... what -- really?",
    "A 2x2 grid of 10/20 items, red/blue.",
    "A man's  \n  hat.",
    "  leading and trailing  ",
    "A photo: a dog; a cat.",
    "The 1990s, the 4th car, 50-50 chance, 1,2,3.",
    "A CAT'S HAT ISN'T RED.",
    "we'd've one's its'",
    "a dog.A cat",
    "",
    "...",
    "--double end.",
    "e.g. a dog, i.e. a pet.",
    "Mr. Smith at 5 p.m.",
    "It's 10 o'clock.",
    "5:30 pm",
    "It cannot move.",
    "it’s a dog’s life",
    "“quoted”",
    "a—b",
    "hello,world",
    "Really?!",
    "Yes!!!",
]
# Where the two still differ: PTB splits "'n'" off its neighbours. Rare in captions; kept as a known gap.
PTB_DIFFERS = [
    "rock'n'roll",
]


@pytest.fixture(scope="module")
def ptb_tokens() -> dict[str, str]:
    """Each caption as pycocoevalcap's PTB step gives it (one Java run for all of them)."""
    if shutil.which("java") is None:
        pytest.skip("pycocoevalcap's PTB tokenizer needs Java")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = PTB_AGREES + PTB_DIFFERS
    with contextlib.redirect_stdout(io.StringIO()):
        tokens = PTBTokenizer().tokenize({index: [{"caption": text}] for index, text in enumerate(captions)})
    return {text: tokens[index][0] for index, text in enumerate(captions)}


@pytest.mark.oracle
@pytest.mark.parametrize("text", PTB_AGREES)
def test_caption_tokens_match_ptb_tokenizer(text: str, ptb_tokens: dict[str, str]) -> None:
    assert caption_tokens(text) == ptb_tokens[text]


@pytest.mark.oracle
@pytest.mark.parametrize("text", PTB_DIFFERS)
@pytest.mark.xfail(strict=True, reason="known difference from Stanford's tokenizer outside ordinary captions")
def test_caption_tokens_known_differences(text: str, ptb_tokens: dict[str, str]) -> None:
    assert caption_tokens(text) == ptb_tokens[text]
