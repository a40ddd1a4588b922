"""Named model shapes: the two official Florence-2 sizes and a `tiny` one for CPU training and tests.

A preset is a plain function returning a `FlorenceConfig`; `PRESETS` maps names to them (the segment-anything
builder-dict pattern). The official numbers are those of the released checkpoints' config.json files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from omnivis.model.davit import DaViTConfig
from omnivis.model.florence import Florence2, FlorenceConfig
from omnivis.model.projector import ProjectorConfig
from omnivis.model.seq2seq import Seq2SeqConfig

OFFICIAL_VOCAB_SIZE = 51289  # BART's 50265 + Florence-2's 1024 added tokens (remote-code layout)


def florence2_base(vocab_size: int = OFFICIAL_VOCAB_SIZE) -> FlorenceConfig:
    """Florence-2-base, 0.23B parameters: DaViT (128..1024 wide) + 6/6-layer BART-base."""
    return FlorenceConfig(
        vision=DaViTConfig(
            embed_dims=(128, 256, 512, 1024), depths=(1, 1, 9, 1), num_heads=(4, 8, 16, 32), num_groups=(4, 8, 16, 32)
        ),
        projector=ProjectorConfig(vision_dim=1024, projection_dim=768),
        text=Seq2SeqConfig(
            vocab_size=vocab_size, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
            decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024,
        ),
    )  # fmt: skip


def florence2_large(vocab_size: int = OFFICIAL_VOCAB_SIZE) -> FlorenceConfig:
    """Florence-2-large, 0.77B parameters: DaViT (256..2048 wide) + 12/12-layer BART-large with 4096 positions."""
    return FlorenceConfig(
        vision=DaViTConfig(
            embed_dims=(256, 512, 1024, 2048), depths=(1, 1, 9, 1), num_heads=(8, 16, 32, 64), num_groups=(8, 16, 32, 64)
        ),
        projector=ProjectorConfig(vision_dim=2048, projection_dim=1024),
        text=Seq2SeqConfig(
            vocab_size=vocab_size, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
            decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=4096,
        ),
    )  # fmt: skip


def tiny(vocab_size: int = OFFICIAL_VOCAB_SIZE) -> FlorenceConfig:
    """About 9M parameters with a ~2k-token vocabulary: the same architecture, small enough to train on 2 CPU cores.

    384x384 inputs give a 12x12 grid (145 visual tokens), one window per image at the last stages.
    """
    return FlorenceConfig(
        vision=DaViTConfig(
            embed_dims=(32, 64, 128, 256), depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), num_groups=(1, 2, 4, 8),
            drop_path_rate=0.0,
        ),
        projector=ProjectorConfig(vision_dim=256, projection_dim=256, max_grid_positions=32),
        text=Seq2SeqConfig(
            vocab_size=vocab_size, d_model=256, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, max_position_embeddings=512,
        ),
        image_size=(384, 384),
    )  # fmt: skip


PRESETS: dict[str, Callable[..., FlorenceConfig]] = {
    "tiny": tiny,
    "florence2-base": florence2_base,
    "florence2-large": florence2_large,
}


def preset_config(name: str, **text_overrides: Any) -> FlorenceConfig:
    """The named preset's config; `text_overrides` replace `Seq2SeqConfig` fields (e.g. `vocab_size`)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    config = PRESETS[name]()
    allowed = {f.name for f in fields(Seq2SeqConfig)}
    unknown = set(text_overrides) - allowed
    if unknown:
        raise KeyError(f"unknown text config fields {sorted(unknown)}")
    config.text = replace(config.text, **text_overrides)
    return config


def create_model(name: str, **text_overrides: Any) -> Florence2:
    """A randomly initialised model of the named preset."""
    return Florence2(preset_config(name, **text_overrides))
