"""Tests of omnivis.model.generation_config: reading Florence-2's files as transformers reads them (checked
against transformers' own `GenerationConfig`), and refusing what omnivis would not obey."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from transformers import GenerationConfig as ReferenceGenerationConfig

from omnivis.errors import CheckpointError, InputError
from omnivis.model.generation_config import GenerationConfig

FLORENCE_GENERATION_CONFIG = {
    "_from_model_config": True,
    "bos_token_id": 0,
    "decoder_start_token_id": 2,
    "early_stopping": True,
    "eos_token_id": 2,
    "forced_bos_token_id": 0,
    "forced_eos_token_id": 2,
    "no_repeat_ngram_size": 3,
    "num_beams": 3,
    "pad_token_id": 1,
    "transformers_version": "4.38.2",
}


def test_config_from_florence_generation_config(tmp_path: Path) -> None:
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps(FLORENCE_GENERATION_CONFIG))
    config = GenerationConfig.from_json(path)
    assert config == GenerationConfig(
        max_new_tokens=20,
        num_beams=3,
        early_stopping=True,
        no_repeat_ngram_size=3,
        decoder_start_token_id=2,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
    )
    assert (
        GenerationConfig.from_dict({**FLORENCE_GENERATION_CONFIG, "max_length": 1025}).max_new_tokens == 1024
    )
    both = GenerationConfig.from_dict({"max_length": 1025, "max_new_tokens": 7})
    assert both.max_new_tokens == 7  # max_new_tokens takes precedence, as in transformers
    fallback = GenerationConfig.from_dict(
        {"num_beams": 2}, fallback={"num_beams": 5, "no_repeat_ngram_size": 3}
    )
    assert (fallback.num_beams, fallback.no_repeat_ngram_size) == (2, 3)


@pytest.mark.oracle
def test_config_falls_back_to_the_text_config_like_transformers() -> None:
    model_config = {
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "model_type": "florence2",
        "text_config": {
            "d_model": 768,
            "decoder_start_token_id": 2,
            "early_stopping": True,
            "eos_token_id": 5,  # the top level wins
            "forced_bos_token_id": 0,
            "forced_eos_token_id": 2,
            "max_length": 20,
            "no_repeat_ngram_size": 3,
            "num_beams": 3,
            "repetition_penalty": 1.0,
        },
    }
    config = GenerationConfig.from_dict(model_config, fallback=model_config["text_config"])
    reference = ReferenceGenerationConfig.from_model_config(model_config)
    for name in (
        "num_beams",
        "early_stopping",
        "no_repeat_ngram_size",
        "decoder_start_token_id",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "forced_bos_token_id",
        "forced_eos_token_id",
    ):
        assert getattr(config, name) == getattr(reference, name), name
    assert config.max_new_tokens == reference.max_length - 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"do_sample": True}, "do_sample"),
        ({"num_beams": 0}, "num_beams"),
        ({"num_beams": 2.0}, "num_beams"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"early_stopping": "sometimes"}, "early_stopping"),
        ({"early_stopping": 1}, "early_stopping"),
        ({"length_penalty": float("nan")}, "length_penalty"),
        ({"length_penalty": "1.0"}, "length_penalty"),
        ({"eos_token_id": []}, "eos_token_id"),
        ({"eos_token_id": [2, -1]}, "eos_token_id"),
        ({"pad_token_id": -1}, "pad_token_id"),
        ({"forced_bos_token_id": "0"}, "forced_bos_token_id"),
    ],
)
def test_config_rejects_invalid_values(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        GenerationConfig(**options)
    with pytest.raises(InputError, match=message):
        GenerationConfig.from_dict(options)


def test_config_refuses_options_it_would_ignore() -> None:
    for options in (
        {"repetition_penalty": 1.2},
        {"num_return_sequences": 2},
        {"min_length": 5},
        {"bad_words_ids": [[7]]},
    ):
        with pytest.raises(InputError, match=next(iter(options))):
            GenerationConfig.from_dict(options)
    # Their neutral values, which old configs spell out, are fine; so are sampling-only options.
    neutral = {
        "repetition_penalty": 1.0,
        "num_return_sequences": 1,
        "min_length": 0,
        "temperature": 0.7,
        "top_k": 5,
    }
    assert GenerationConfig.from_dict(neutral) == GenerationConfig()


def test_config_normalises_lists_and_validates_replacements() -> None:
    config = GenerationConfig(eos_token_id=[2, 7], forced_eos_token_id=[2])
    assert config.eos_token_id == (2, 7) and config.forced_eos_token_id == (2,)
    assert config.eos_token_ids == (2, 7) and GenerationConfig().eos_token_ids == ()
    hash(config)
    with pytest.raises(InputError, match="num_beams"):
        replace(config, num_beams=-3)


def test_config_from_json_reports_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="missing.json"):
        GenerationConfig.from_json(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CheckpointError, match="broken.json"):
        GenerationConfig.from_json(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        GenerationConfig.from_json(listed)
