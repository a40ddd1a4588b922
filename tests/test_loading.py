"""Decoding settings read from an original checkpoint's config.json, by transformers' precedence rule."""

from __future__ import annotations

from omnivis.loading import _model_config_options


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
