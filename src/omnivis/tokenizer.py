"""Florence-2's tokenizer: BART's byte-level BPE plus Florence-2's task and 1,000 location tokens.

Built on the `tokenizers` library alone. It reads a checkpoint's own files (nothing is downloaded) and gives
the same token ids and the same decoded text as the reference transformers tokenizer loaded from the same
directory (`BartTokenizer`, which rebuilds the BPE from its vocabulary and merges with a ByteLevel
pre-tokenizer and decoder whatever else tokenizer.json says).

Two layouts exist. The florence-community checkpoints ship the Florence-2 tokens (and `<image>`) in their
tokenizer files; microsoft/Florence-2-* ship a plain BART tokenizer whose remote-code processor added the
Florence-2 tokens when loaded. `Tokenizer.from_directory` adds them the same way when they are missing, so
both layouts get the same ids (with BART's 50,265-token vocabulary: 50,265 to 51,288).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as BackendTokenizer

from omnivis.errors import CheckpointError, InputError
from omnivis.io import atomic_write_json, atomic_write_text
from omnivis.tasks.locations import NUM_BINS, location_token

# The tokens microsoft's remote-code processor added, in its order (processing_florence2.py). The spelling
# "desciption" is theirs, and part of every released vocabulary.
FLORENCE_TOKENS: tuple[str, ...] = (
    ("<od>", "</od>", "<ocr>", "</ocr>")
    + tuple(location_token(index) for index in range(NUM_BINS))
    + ("<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>")
    + ("<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>")
    + ("<region_to_desciption>", "</region_to_desciption>", "<proposal>", "</proposal>")
    + ("<poly>", "</poly>", "<and>")
)
IMAGE_TOKEN = "<image>"

# transformers' named special tokens, in the order `all_special_tokens` lists them, with BART's values.
NAMED_SPECIAL_TOKENS: dict[str, str] = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>",
}
_ADDED_TOKEN_FIELDS = ("single_word", "lstrip", "rstrip", "normalized", "special")


class Tokenizer:
    """BART byte-level BPE with Florence-2's added tokens; load one with `Tokenizer.from_directory`.

    Special tokens follow transformers' `all_special_tokens`: the named ones (`<s>`, `</s>`, `<unk>`,
    `<pad>`, `<mask>`, plus model-specific ones such as `image_token`), then the extra special tokens
    (the Florence-2 tokens when the checkpoint declares them, or when they are added at load time).
    """

    def __init__(
        self, backend: BackendTokenizer, named_tokens: dict[str, AddedToken], extra_tokens: Sequence[str]
    ) -> None:
        """Wrap a backend whose vocabulary already holds every named and extra special token.

        Args:
            backend: The `tokenizers` tokenizer.
            named_tokens: Named special tokens by attribute name, e.g. {"bos_token": AddedToken("<s>")}.
            extra_tokens: The extra special tokens, in order.
        """
        self._backend = backend
        self._named_tokens = dict(named_tokens)
        self._extra_tokens = list(extra_tokens)
        self._special_tokens = list(dict.fromkeys([*map(str, named_tokens.values()), *extra_tokens]))
        self._special_set = frozenset(self._special_tokens)
        self._vocab_size = backend.get_vocab_size(with_added_tokens=True)
        for token in self._special_tokens:
            if backend.token_to_id(token) is None:
                raise CheckpointError(f"special token {token!r} is missing from the vocabulary")

    @classmethod
    def from_directory(cls, path: str | Path) -> Tokenizer:
        """Load the tokenizer of a checkpoint directory.

        Reads tokenizer.json, or else vocab.json + merges.txt, and for special and added tokens
        tokenizer_config.json, special_tokens_map.json and added_tokens.json when present. Florence-2
        tokens missing from the files are added as the original processor added them.

        Raises:
            CheckpointError: No tokenizer files, or a file that is unreadable or malformed (named).
        """
        directory = Path(path)
        if not directory.is_dir():
            raise CheckpointError(f"tokenizer directory {directory} does not exist")
        config = _read_optional_json(directory / "tokenizer_config.json")
        special_map = _read_optional_json(directory / "special_tokens_map.json")
        backend = _load_backend(directory, config)
        named_tokens = _named_tokens(config, special_map)
        extra_tokens = _extra_tokens(config, special_map)
        _add_missing_specials(backend, [*named_tokens.values(), *map(_special_token, extra_tokens)])
        missing = [token for token in FLORENCE_TOKENS if backend.token_to_id(token) is None]
        if missing:
            # What microsoft's remote-code processor did on every load: append the Florence-2 tokens.
            backend.add_special_tokens([_special_token(token) for token in missing])
            extra_tokens = list(dict.fromkeys([*extra_tokens, *FLORENCE_TOKENS]))
        tokenizer = cls(backend, named_tokens, extra_tokens)
        # BART's "<s> text </s>" framing, for whoever encodes through the backend with special tokens;
        # omnivis itself always adds <s> and </s> by hand, as the reference processor does.
        eos, bos = str(named_tokens["eos_token"]), str(named_tokens["bos_token"])
        backend.post_processor = processors.RobertaProcessing(
            (eos, tokenizer.eos_token_id), (bos, tokenizer.bos_token_id)
        )
        return tokenizer

    @property
    def bos_token_id(self) -> int:
        """Id of `<s>`, which starts every prompt and every answer."""
        return self._named_id("bos_token")

    @property
    def eos_token_id(self) -> int:
        """Id of `</s>`, which ends every prompt and answer, and starts the decoder."""
        return self._named_id("eos_token")

    @property
    def pad_token_id(self) -> int:
        """Id of `<pad>`."""
        return self._named_id("pad_token")

    @property
    def unk_token_id(self) -> int:
        """Id of `<unk>`."""
        return self._named_id("unk_token")

    @property
    def image_token_id(self) -> int | None:
        """Id of the image placeholder token (`<image>`), or None when the vocabulary has none."""
        image_token = self._named_tokens.get("image_token")
        return self._backend.token_to_id(IMAGE_TOKEN if image_token is None else str(image_token))

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included (transformers' `len(tokenizer)`)."""
        return self._vocab_size

    @property
    def special_tokens(self) -> list[str]:
        """The special tokens, as transformers' `all_special_tokens`: named ones, then extra ones."""
        return list(self._special_tokens)

    @property
    def special_token_ids(self) -> list[int]:
        """The ids of `special_tokens`, in the same order."""
        return [self._token_id(token) for token in self._special_tokens]

    def is_special(self, token: str) -> bool:
        """Whether a token string is one of `special_tokens`."""
        return token in self._special_set

    def location_token_id(self, bin_index: int) -> int:
        """Id of the location token `<loc_{bin_index}>`, for a bin in 0..999."""
        return self._token_id(location_token(bin_index))

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string, or None when it is not in the vocabulary."""
        return self._backend.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without adding `<s>`/`</s>`; special tokens written in the text are kept."""
        if not isinstance(text, str):
            raise InputError(f"can only encode a string, got {type(text).__name__}")
        return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """The text of a sequence of ids, as transformers' `decode(..., clean_up_tokenization_spaces=False)`.

        Ids past the vocabulary (a model whose output layer is padded beyond it may produce them) decode to
        nothing, as in transformers.

        Args:
            token_ids: Ids to decode.
            skip_special_tokens: Leave out special tokens (`<s>`, `</s>`, `<pad>`, `<loc_k>`, ...).
        """
        ids = self._checked_ids(token_ids, limit=None)
        return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, token_ids: Sequence[int]) -> list[str]:
        """The token strings of ids, in the vocabulary's byte-level alphabet (a space is "Ġ")."""
        tokens = []
        for token_id in self._checked_ids(token_ids, limit=self.vocab_size):
            token = self._backend.id_to_token(token_id)
            if token is None:  # a gap in the ids: only a malformed vocabulary has one
                raise InputError(f"token id {token_id} has no token in this vocabulary")
            tokens.append(token)
        return tokens

    def token_to_string(self, token: str) -> str:
        """The text one token string stands for (transformers' `convert_tokens_to_string([token])`)."""
        return str(self._backend.decoder.decode([token]))

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json and a small tokenizer_config.json to `directory`, each atomically.

        `Tokenizer.from_directory(directory)` then gives the same ids; transformers can load it too.
        """
        target = Path(directory)
        add_prefix_space = bool(getattr(self._backend.pre_tokenizer, "add_prefix_space", False))
        config: dict[str, Any] = {"tokenizer_class": "BartTokenizer", "add_prefix_space": add_prefix_space}
        config.update({name: str(token) for name, token in self._named_tokens.items()})
        config["extra_special_tokens"] = list(self._extra_tokens)
        atomic_write_text(target / "tokenizer.json", self._backend.to_str(pretty=True))
        atomic_write_json(target / "tokenizer_config.json", config)

    def _named_id(self, name: str) -> int:
        return self._token_id(str(self._named_tokens[name]))

    def _token_id(self, token: str) -> int:
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise InputError(f"token {token!r} is not in the vocabulary")
        return token_id

    def _checked_ids(self, token_ids: Sequence[int], limit: int | None) -> list[int]:
        """The ids as a list of non-negative ints, each below `limit` when one is given."""
        checked = []
        for token_id in token_ids:
            if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
                raise InputError(f"token id {token_id!r} is not a non-negative integer")
            if limit is not None and token_id >= limit:
                raise InputError(f"token id {token_id} is past the vocabulary of {limit} tokens")
            checked.append(token_id)
        return checked


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read tokenizer file {path}: {error}") from error


def _read_optional_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when the file does not exist."""
    if not path.exists():
        return {}
    content = _read_json(path)
    if not isinstance(content, dict):
        raise CheckpointError(f"tokenizer file {path} must hold a JSON object")
    return content


def _added_token(value: str | dict[str, Any], *, special: bool) -> AddedToken:
    """An AddedToken from a plain string or a serialized one ({"content": ..., "lstrip": ...})."""
    if isinstance(value, str):
        return AddedToken(value, special=special, normalized=not special)
    if not isinstance(value.get("content"), str):
        raise CheckpointError(f"an added token needs a string 'content', got {value!r}")
    flags = {name: bool(value[name]) for name in _ADDED_TOKEN_FIELDS if name in value}
    flags.setdefault("special", special)
    return AddedToken(value["content"], **flags)


def _special_token(content: str) -> AddedToken:
    """A special token as transformers adds one: matched verbatim, never stripped or normalized."""
    return AddedToken(content, special=True, normalized=False)


def _load_backend(directory: Path, config: dict[str, Any]) -> BackendTokenizer:
    """The BPE with BART's pre-tokenizer and decoder, and the files' added tokens at their ids."""
    tokenizer_file = directory / "tokenizer.json"
    if tokenizer_file.exists():
        vocab, merges, added = _read_tokenizer_json(tokenizer_file)
    elif (directory / "vocab.json").exists() and (directory / "merges.txt").exists():
        vocab, merges = _read_vocab_and_merges(directory / "vocab.json", directory / "merges.txt")
        added = _read_legacy_added_tokens(directory, config)
    else:
        raise CheckpointError(
            f"no tokenizer in {directory}: need tokenizer.json, or vocab.json and merges.txt"
        )
    model = models.BPE(
        vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix=""
    )
    backend = BackendTokenizer(model)
    # BartTokenizer always uses these, whatever tokenizer.json says; add_prefix_space comes from the config.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=bool(config.get("add_prefix_space", False))
    )
    backend.decoder = decoders.ByteLevel()
    for token_id, token in sorted(added, key=lambda item: item[0]):
        if token.special:
            backend.add_special_tokens([token])
        else:
            backend.add_tokens([token])
        if backend.token_to_id(token.content) != token_id:
            raise CheckpointError(f"added token {token.content!r} should have id {token_id} in {directory}")
    return backend


def _read_tokenizer_json(
    path: Path,
) -> tuple[dict[str, int], list[tuple[str, str]], list[tuple[int, AddedToken]]]:
    content = _read_json(path)
    model = content.get("model") if isinstance(content, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise CheckpointError(f"tokenizer file {path} does not hold a byte-level BPE model")
    try:
        merges = [_merge_pair(merge) for merge in model.get("merges", [])]
        added = [
            (int(entry["id"]), _added_token(entry, special=False))
            for entry in content.get("added_tokens", [])
        ]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"tokenizer file {path} is malformed: {error!r}") from error
    return model["vocab"], merges, added


def _merge_pair(merge: str | Sequence[str]) -> tuple[str, str]:
    """One merge rule, stored as "a b" (older files) or ["a", "b"] (newer ones)."""
    parts = merge.split(" ") if isinstance(merge, str) else list(merge)
    if len(parts) != 2 or not all(isinstance(part, str) for part in parts):
        raise ValueError(f"bad merge rule {merge!r}")
    return parts[0], parts[1]


def _read_vocab_and_merges(
    vocab_path: Path, merges_path: Path
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = _read_json(vocab_path)
    if not isinstance(vocab, dict) or not all(isinstance(index, int) for index in vocab.values()):
        raise CheckpointError(f"tokenizer file {vocab_path} must map tokens to integer ids")
    try:
        lines = merges_path.read_text(encoding="utf-8").splitlines()
        # The first line of a merges.txt is a "#version: ..." header.
        merges = [_merge_pair(line) for line in lines if line and not line.startswith("#version")]
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(f"cannot read tokenizer file {merges_path}: {error}") from error
    return vocab, merges


def _read_legacy_added_tokens(directory: Path, config: dict[str, Any]) -> list[tuple[int, AddedToken]]:
    """Added tokens when there is no tokenizer.json: the config's added_tokens_decoder, added_tokens.json."""
    added: dict[int, AddedToken] = {}
    try:
        for token_id, entry in (config.get("added_tokens_decoder") or {}).items():
            added[int(token_id)] = _added_token(entry, special=False)
        for content, token_id in _read_optional_json(directory / "added_tokens.json").items():
            added.setdefault(int(token_id), _added_token(content, special=False))
    except (AttributeError, TypeError, ValueError) as error:
        raise CheckpointError(f"malformed added tokens in {directory}: {error!r}") from error
    return list(added.items())


def _named_tokens(config: dict[str, Any], special_map: dict[str, Any]) -> dict[str, AddedToken]:
    """Named special tokens: BART's defaults, overridden by the files, plus model-specific ones (image)."""
    named: dict[str, Any] = dict(NAMED_SPECIAL_TOKENS)
    for source in (special_map, config):
        for name in NAMED_SPECIAL_TOKENS:
            if source.get(name) is not None:
                named[name] = source[name]
    # transformers treats any other "*_token" string, and a dict of them, as a model-specific named token.
    extra = config.get("extra_special_tokens")
    model_specific = dict(extra) if isinstance(extra, dict) else {}
    model_specific.update(config.get("model_specific_special_tokens") or {})
    model_specific.update(
        {key: value for key, value in config.items() if key.endswith("_token") and key not in named}
    )
    named.update({key: value for key, value in model_specific.items() if isinstance(value, (str, dict))})
    return {name: _added_token(value, special=True) for name, value in named.items()}


def _extra_tokens(config: dict[str, Any], special_map: dict[str, Any]) -> list[str]:
    """The extra special tokens declared by the files (v5 `extra_special_tokens`, v4 `additional_...`)."""
    for source in (config, special_map):
        for key in ("extra_special_tokens", "additional_special_tokens"):
            value = source.get(key)
            if isinstance(value, list) and value:
                return [str(_added_token(token, special=True)) for token in value]
    return []


def _add_missing_specials(backend: BackendTokenizer, tokens: Sequence[AddedToken]) -> None:
    """Make every special token an added special token, as transformers does; existing ones are kept."""
    added = {str(token) for token in backend.get_added_tokens_decoder().values()}
    for token in tokens:
        if str(token) not in added:
            backend.add_special_tokens([AddedToken(str(token), special=True, normalized=False)])
            added.add(str(token))


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A BART-shaped byte-level BPE learned from `texts`, with Florence-2's task and location tokens.

    For models trained from scratch: ids 0..3 are `<s>`, `<pad>`, `</s>`, `<unk>` as in BART, `<mask>` closes
    the learned vocabulary, and the 1,024 Florence-2 tokens follow, in the original order.

    Args:
        texts: the training corpus.
        vocab_size: size of the learned vocabulary, special tokens included (the Florence-2 tokens come on top).
    """
    if vocab_size < 260:
        raise InputError(f"vocab_size must hold the 256 byte symbols and 5 specials, got {vocab_size}")
    learner = BackendTokenizer(models.BPE(dropout=None, continuing_subword_prefix="", end_of_word_suffix=""))
    learner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # <mask> is appended after learning, as BART's vocab.json has it last
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    learner.train_from_iterator(texts, trainer)
    learned = json.loads(learner.to_str())["model"]
    vocab = dict(learned["vocab"])
    vocab["<mask>"] = len(vocab)
    merges = [_merge_pair(merge) for merge in learned["merges"]]
    with tempfile.TemporaryDirectory() as staging:
        atomic_write_json(Path(staging) / "vocab.json", vocab)
        lines = ["#version: 0.2", *(f"{first} {second}" for first, second in merges)]
        atomic_write_text(Path(staging) / "merges.txt", "\n".join(lines) + "\n")
        # Loading the plain BPE adds the Florence-2 tokens exactly as for an original checkpoint.
        return Tokenizer.from_directory(staging)
