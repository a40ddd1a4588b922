"""Offline stand-ins for the Florence-2 tokenizer, built with `tokenizers` and wrapped by transformers.

No BART vocabulary can be downloaded in the tests, so this module trains a small byte-level BPE with the
same pieces as BART/RoBERTa (ByteLevel pre-tokenizer and decoder, RoBERTa post-processor, `<s>`=0, `<pad>`=1,
`</s>`=2, `<unk>`=3, `<mask>` last of the base vocabulary, stored in vocab.json as BART does) and saves it
in one of the two layouts that Florence-2 checkpoints come in:

- ``"remote"``: as microsoft/Florence-2-* ship it, a plain BART tokenizer (tokenizer.json, vocab.json,
  merges.txt) without any Florence-2 token; their remote-code processor added those at run time.
- ``"native"``: as the florence-community checkpoints ship it, the Florence-2 tokens already added, plus
  `<image>` (the next id) declared as the tokenizer's named `image_token`, which transformers' conversion
  script does with ``extra_special_tokens = {"image_token": "<image>"}``; `Florence2Processor` reads
  `tokenizer.image_token` / `tokenizer.image_token_id`.

Test-only: this module imports transformers, which omnivis itself never does.
"""

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AddedToken as TransformersAddedToken
from transformers import AutoTokenizer, BartTokenizerFast

LAYOUTS = ("native", "remote")
# An upper bound: the small corpus below runs out of merges at about 1,140 tokens.
MAX_BASE_VOCAB_SIZE = 1200
IMAGE_TOKEN = "<image>"

# The tokens microsoft's remote-code processor added (processing_florence2.py, `tokens_to_add`), in its order.
# Note the misspelling "desciption": it is part of the vocabulary of every released checkpoint.
FLORENCE_TOKENS = (
    ["<od>", "</od>", "<ocr>", "</ocr>"]
    + [f"<loc_{index}>" for index in range(1000)]
    + ["<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>"]
    + ["<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>"]
    + ["<region_to_desciption>", "</region_to_desciption>", "<proposal>", "</proposal>"]
    + ["<poly>", "</poly>", "<and>"]
)

# The full post_processor_config that transformers' conversion script writes for Florence-2 checkpoints.
BANNED_GROUNDING_PHRASES = [
    "it", "I", "me", "mine", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "they", "them",
    "their", "theirs", "one", "oneself", "we", "us", "our", "ours", "its", "myself", "yourself", "himself",
    "herself", "itself", "ourselves", "yourselves", "themselves", "this", "that", "these", "those", "who",
    "whom", "whose", "which", "what", "all", "another", "any", "anybody", "anyone", "anything", "each",
    "everybody", "everyone", "everything", "few", "many", "nobody", "none", "several", "some", "somebody",
    "someone", "something", "each other", "one another", "the image", "image", "images", "the", "a", "an",
    "a group", "other objects", "lots", "a set",
]  # fmt: skip
POST_PROCESSOR_CONFIG: dict[str, Any] = {
    "ocr": {
        "pattern": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>"
        r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
        "area_threshold": 0.0,
    },
    "phrase_grounding": {"banned_grounding_tokens": BANNED_GROUNDING_PHRASES},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}

_PROMPTS = [
    "What is the text in the image?",
    "What is the text in the image, with regions?",
    "What does the image describe?",
    "Describe in detail what is shown in the image.",
    "Describe with a paragraph what is shown in the image.",
    "Locate the objects with category name in the image.",
    "Locate the objects in the image, with their descriptions.",
    "Locate the region proposals in the image.",
    "Locate the phrases in the caption: a red car parked next to a green tree",
    "Locate a person riding a bicycle in the image with mask",
    "What is the polygon mask of region",
    "Locate cats and dogs in the image.",
    "What is the region? What does the region describe? What text is in the region?",
    "Answer the question: how many people are standing near the bus stop?",
]
_WORDS = (
    "a an the and or but of in on at to from with without over under above below between near far "
    "left right top bottom middle center person people man woman child boy girl dog cat bird horse "
    "cow sheep car truck bus bicycle motorcycle airplane train boat traffic light sign stop street "
    "road building house window door roof wall floor table chair sofa bed lamp book cup bottle glass "
    "plate fork knife spoon bowl banana apple orange pizza cake sandwich tree grass flower sky cloud "
    "sun water river lake sea beach mountain snow rain red green blue yellow black white gray brown "
    "pink purple small large big tall short old young new standing sitting walking running riding "
    "holding wearing looking eating drinking playing parked open closed camera wooden photo picture "
    "image text sentence word letter number phrase region object objects category name description "
    "caption detail paragraph polygon mask proposal question answer shown describe"
).split()
_EXTRAS = [
    "0 1 2 3 4 5 6 7 8 9 10 42 100 256 1000 2024 3.14 -7 +8 1,000,000 12:30",
    "Hello, world! (parentheses) [brackets] {braces} <angles> 'quotes' \"double\" a/b a\\b a|b a_b a-b a~b",
    "#hash @at $dollar %percent ^caret &amp *star =equals ;semicolon :colon ?question !bang `tick",
    "café naïve résumé façade jalapeño Ærø Straße Ελληνικά русский текст",
    "中文字符 日本語 한국어 😀🚗🌳 ½ ° € £",
    "  leading spaces, trailing spaces   \ttabs\tand\nnew\nlines\r\n",
]


def _training_corpus() -> list[str]:
    """A fixed English-ish corpus so the merges, and thus every token id, are the same on each run."""
    sentences = list(_PROMPTS) + list(_EXTRAS)
    for start in range(0, len(_WORDS), 7):
        sentences.append(" ".join(_WORDS[start : start + 7]))
        sentences.append(" ".join(word.capitalize() for word in _WORDS[start : start + 7]) + ".")
    return sentences * 3


def _train_base_tokenizer() -> Tokenizer:
    """Train a BART-shaped byte-level BPE: specials 0..3, learned tokens, then `<mask>` inside the vocab."""
    trained = Tokenizer(models.BPE(dropout=None, continuing_subword_prefix="", end_of_word_suffix=""))
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=MAX_BASE_VOCAB_SIZE - 1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trained.train_from_iterator(_training_corpus(), trainer)
    model_json = json.loads(trained.to_str())["model"]
    vocab: dict[str, int] = dict(model_json["vocab"])
    # BART's vocab.json holds <mask> as its last entry (50264); reproduce that instead of an added-only token.
    vocab["<mask>"] = len(vocab)
    merges = [
        tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model_json["merges"]
    ]
    bart_like = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="")
    )
    bart_like.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bart_like.decoder = decoders.ByteLevel()
    bart_like.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    bart_like.add_special_tokens(
        [AddedToken(token, special=True) for token in ["<s>", "<pad>", "</s>", "<unk>"]]
    )
    bart_like.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    return bart_like


def add_florence_tokens_like_remote_code(tokenizer: Any) -> None:
    """Add the Florence-2 tokens to a transformers tokenizer as microsoft's remote-code processor did.

    The original called ``add_special_tokens({"additional_special_tokens": existing + tokens})``;
    transformers 5 renamed that list to ``extra_special_tokens``.
    """
    existing = [str(token) for token in tokenizer.extra_special_tokens]
    tokenizer.add_special_tokens({"extra_special_tokens": existing + FLORENCE_TOKENS})


def _save_remote_layout(base: Tokenizer, directory: Path) -> None:
    base.save(str(directory / "tokenizer.json"))
    # vocab.json + merges.txt in the format of BART's files, for loaders that do without tokenizer.json.
    base.model.save(str(directory))
    config = {"model_max_length": 1024, "tokenizer_class": "BartTokenizer"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def _save_native_layout(base: Tokenizer, directory: Path) -> None:
    tokenizer = BartTokenizerFast(tokenizer_object=base, model_max_length=1024)
    add_florence_tokens_like_remote_code(tokenizer)
    # As transformers' convert_florence2_original_pytorch_to_hf.py adds the image token: after the
    # Florence-2 tokens, so it takes the next free id, and declared as the tokenizer's named "image_token".
    tokenizer.add_tokens(
        TransformersAddedToken(IMAGE_TOKEN, special=True, normalized=False), special_tokens=True
    )
    with tempfile.TemporaryDirectory() as staging:
        tokenizer.save_pretrained(staging)
        # transformers 5 only accepts a named extra token at construction time, hence the reload.
        declared = AutoTokenizer.from_pretrained(staging, image_token=IMAGE_TOKEN)
    declared.save_pretrained(directory)


def make_florence_tokenizer(directory: Path, *, layout: str) -> Any:
    """Train the stand-in tokenizer, save it to `directory` in `layout`, and load it back with transformers.

    Args:
        directory: An existing directory; the tokenizer files are copied into it.
        layout: "native" (Florence-2 tokens and `<image>` included) or "remote" (plain BART files).

    Returns:
        `AutoTokenizer.from_pretrained(directory)`; for "remote" it holds no Florence-2 token.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    directory = Path(directory)
    for source in _cached_layout_directory(layout).iterdir():
        shutil.copy2(source, directory / source.name)
    return AutoTokenizer.from_pretrained(directory)


@functools.cache
def _cached_layout_directory(layout: str) -> Path:
    """Build each layout once per test session; later calls copy its files."""
    directory = Path(tempfile.mkdtemp(prefix=f"omnivis-tokenizer-{layout}-"))
    atexit.register(shutil.rmtree, directory, True)
    base = _train_base_tokenizer()
    if layout == "remote":
        _save_remote_layout(base, directory)
    else:
        _save_native_layout(base, directory)
    return directory


def load_reference_tokenizer(directory: Path, *, layout: str) -> Any:
    """Load a saved stand-in with transformers, adding the Florence-2 tokens at run time for "remote"."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if layout == "remote":
        add_florence_tokens_like_remote_code(tokenizer)
    return tokenizer


def make_reference_processor(tokenizer: Any, config: dict[str, Any] | None = None) -> Any:
    """A transformers `Florence2Processor` around a native-layout stand-in tokenizer.

    Args:
        tokenizer: A tokenizer that defines `image_token` (the native layout).
        config: The post_processor_config; defaults to the one real checkpoints ship. The reference refuses
            to parse any answer type missing from it ("Unsupported parse task").
    """
    # Imported here: the image side of transformers is slow to import and only processor tests need it.
    from transformers import CLIPImageProcessor, Florence2Processor

    image_processor = CLIPImageProcessor(
        size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}
    )
    image_processor.image_seq_length = 4
    post_processor_config = POST_PROCESSOR_CONFIG if config is None else config
    return Florence2Processor(
        image_processor=image_processor, tokenizer=tokenizer, post_processor_config=post_processor_config
    )
