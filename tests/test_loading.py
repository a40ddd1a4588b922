"""Decoding settings: read from an original checkpoint's config.json by transformers' precedence rule, and
omnivis's own defaults."""

from __future__ import annotations

import json
from pathlib import Path

from omnivis.demo import DEFAULT_CHECKPOINT
from omnivis.loading import _model_config_options, load, save
from omnivis.train.config import ModelSettings
from omnivis.train.model_setup import build_predictor


def test_nested_text_config_fills_what_the_top_level_leaves_at_default() -> None:
    config = {
        "model_type": "florence2",
        "num_beams": 1,  # the default: the nested 3 applies (transformers' from_model_config)
        "length_penalty": 2.0,  # not the default: it beats the nested value
        "text_config": {"num_beams": 3, "no_repeat_ngram_size": 3, "length_penalty": 1.5, "max_length": 1025},
        "vision_config": {"depths": [1, 1, 9, 1]},
    }
    options = _model_config_options(config)
    assert options["num_beams"] == 3
    assert options["no_repeat_ngram_size"] == 3
    assert options["length_penalty"] == 2.0
    assert options["max_length"] == 1025
    assert "text_config" not in options and "vision_config" not in options


def test_omnivis_models_decode_without_the_ngram_ban_and_checkpoints_keep_their_own(tmp_path: Path) -> None:
    """Presets, models trained from scratch and the committed checkpoint allow repeated 3-grams (grounded
    captions and coordinates repeat them); a checkpoint's own generation_config.json (the official ones: 3)
    still decides for it."""
    preset = load("tiny")
    scratch = build_predictor(ModelSettings(preset="tiny", init="scratch"), seed=0)
    assert preset.generation.no_repeat_ngram_size == scratch.generation.no_repeat_ngram_size == 0
    assert load(DEFAULT_CHECKPOINT).generation.no_repeat_ngram_size == 0
    save(preset, tmp_path / "saved")
    assert load(tmp_path / "saved").generation.no_repeat_ngram_size == 0
    path = tmp_path / "saved" / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "no_repeat_ngram_size": 3}))
    assert load(tmp_path / "saved").generation.no_repeat_ngram_size == 3
