"""`GenerationConfig`: how to decode, read from a checkpoint's `generation_config.json` as transformers reads it.

Options transformers has and omnivis does not implement are refused unless they hold the value under which
they do nothing, so a checkpoint is never half-obeyed. `omnivis.model.generation` runs the search.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omnivis.errors import CheckpointError, InputError

# transformers generates 20 new tokens when neither max_length nor max_new_tokens is set.
_DEFAULT_MAX_NEW_TOKENS = 20

# transformers options that would change greedy / beam-search results but that omnivis does not implement,
# with the values under which they do nothing. A checkpoint setting another value is refused, not half-obeyed.
_INERT_OPTIONS: dict[str, tuple[Any, ...]] = {
    **dict.fromkeys(("num_return_sequences", "num_beam_groups", "repetition_penalty"), (None, 1)),
    **dict.fromkeys(("encoder_repetition_penalty", "guidance_scale"), (None, 1)),
    **dict.fromkeys(
        ("min_length", "min_new_tokens", "encoder_no_repeat_ngram_size", "diversity_penalty"), (None, 0)
    ),
    **dict.fromkeys(("renormalize_logits", "remove_invalid_values"), (None, False)),
    **dict.fromkeys(("bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "sequence_bias"), (None,)),
    **dict.fromkeys(("exponential_decay_length_penalty", "forced_decoder_ids", "stop_strings"), (None,)),
}


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode: greedy (`num_beams == 1`) or beam search; each field means what it does in transformers.

    Attributes:
        max_new_tokens: Most tokens generated after the decoder start token.
        num_beams: Beams kept per input; 1 means greedy search.
        do_sample: Must be False: sampling is not implemented.
        early_stopping: Beam search only. True stops a row once it has `num_beams` finished hypotheses; False
            stops when the best running beam, scored at its current length, cannot beat the worst finished
            one; "never" scores it at the longest possible length instead (when `length_penalty > 0`).
        length_penalty: Finished beams rank by sum of log-probabilities / generated_length ** length_penalty.
        no_repeat_ngram_size: If > 0, no n-gram of this size may occur twice (see the module docstring).
        decoder_start_token_id: First decoder token; falls back to `bos_token_id`.
        bos_token_id: Beginning-of-sequence token, only used as the fallback start token.
        eos_token_id: Token (or tuple of tokens) that ends a sequence.
        pad_token_id: Fills finished rows; falls back to the first EOS token.
        forced_bos_token_id: If set, the first generated token.
        forced_eos_token_id: If set, forced as the `max_new_tokens`-th generated token.
    """

    max_new_tokens: int = _DEFAULT_MAX_NEW_TOKENS
    num_beams: int = 1
    do_sample: bool = False
    early_stopping: bool | str = False
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    decoder_start_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("eos_token_id", "forced_eos_token_id"):
            if isinstance(getattr(self, name), list):  # JSON gives lists; a tuple keeps the config hashable
                object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Checks every field.

        Raises:
            InputError: A field has a value transformers would refuse, or one omnivis does not implement.
        """
        check_integer("max_new_tokens", self.max_new_tokens, minimum=1)
        check_integer("num_beams", self.num_beams, minimum=1)
        check_integer("no_repeat_ngram_size", self.no_repeat_ngram_size, minimum=0)
        if self.do_sample is not False:
            raise InputError(f"do_sample={self.do_sample!r} is not supported, only greedy and beam search")
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise InputError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        penalty = self.length_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not math.isfinite(penalty):
            raise InputError(f"length_penalty must be a finite number, got {penalty!r}")
        for name in ("decoder_start_token_id", "bos_token_id", "pad_token_id", "forced_bos_token_id"):
            if getattr(self, name) is not None:
                check_integer(name, getattr(self, name), minimum=0)
        for name in ("eos_token_id", "forced_eos_token_id"):
            token_ids = getattr(self, name)
            if token_ids == ():
                raise InputError(f"{name} must not be an empty list")
            for token_id in as_token_tuple(token_ids):
                check_integer(name, token_id, minimum=0)

    @classmethod
    def from_dict(
        cls, values: Mapping[str, Any], fallback: Mapping[str, Any] | None = None
    ) -> GenerationConfig:
        """Reads the options of a `generation_config.json`; absent or null ones keep transformers' defaults.

        `max_length` (start token included) becomes `max_new_tokens = max_length - 1`, unless `max_new_tokens`
        is given too: transformers gives it precedence. `fallback` supplies the options `values` lacks, as
        transformers takes them from the `text_config` of an old checkpoint's config.json (where Florence-2
        keeps `num_beams`, the forced tokens...) when it has no generation_config.json.

        Raises:
            InputError: A value is invalid, or an option omnivis does not implement is set to an active value.
        """
        merged = {name: value for name, value in (fallback or {}).items() if value is not None}
        merged.update((name, value) for name, value in values.items() if value is not None)
        for name, inert_values in _INERT_OPTIONS.items():
            if name in merged and merged[name] not in inert_values:
                raise InputError(f"generation option {name}={merged[name]!r} is not supported by omnivis")
        options = {field.name: merged[field.name] for field in fields(cls) if field.name in merged}
        if "max_new_tokens" not in options and "max_length" in merged:
            check_integer("max_length", merged["max_length"], minimum=2)
            options["max_new_tokens"] = merged["max_length"] - 1
        return cls(**options)

    @classmethod
    def from_json(cls, path: str | Path) -> GenerationConfig:
        """Reads a `generation_config.json` file.

        Raises:
            CheckpointError: The file is missing or does not hold a JSON object.
        """
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"cannot read generation config {path}: {error}") from None
        if not isinstance(values, dict):
            raise CheckpointError(f"{path} must hold a JSON object, not {type(values).__name__}")
        return cls.from_dict(values)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The EOS tokens as a tuple, empty when none is set."""
        return as_token_tuple(self.eos_token_id)


def as_token_tuple(token_ids: int | tuple[int, ...] | None) -> tuple[int, ...]:
    """One token id, a list or tuple of them, or None, as a tuple."""
    if token_ids is None:
        return ()
    return tuple(token_ids) if isinstance(token_ids, (tuple, list)) else (token_ids,)


def check_integer(name: str, value: object, minimum: int) -> None:
    """Raises InputError naming `name` unless `value` is an integer (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
