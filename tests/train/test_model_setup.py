"""Initial weights a run starts from: the ordinal location-token rows, the sinusoid image positions, and a
projector and text encoder taken from another checkpoint, checked against hand computations."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import safetensors.torch
import torch

import omnivis
from omnivis.errors import CheckpointError
from omnivis.loading import bundled_tokenizer
from omnivis.model.projector import sinusoid_table
from omnivis.train.config import ModelSettings
from omnivis.train.model_setup import build_predictor


def test_ordinal_locations_are_sinusoids_of_the_bin_and_tied_to_the_head() -> None:
    predictor = build_predictor(ModelSettings(preset="tiny", image_size=64, ordinal_locations=True), seed=0)
    tokenizer = bundled_tokenizer()
    table = predictor.model.language_model.shared.weight
    dimension = table.shape[1]
    scale = 0.02 * math.sqrt(2)
    for bin_index in (0, 1, 517, 999):
        row = table[tokenizer.location_token_id(bin_index)]
        # Dimension 2i is sin(bin / 10000^(2i/D)), dimension 2i+1 its cosine, times the scale (tolerance:
        # angles reach ~1,000 rad, computed in float32).
        for i in (0, 3, dimension // 2 - 1):
            angle = bin_index / 10000 ** (2 * i / dimension)
            assert abs(row[2 * i].item() - scale * math.sin(angle)) < 2e-6
            assert abs(row[2 * i + 1].item() - scale * math.cos(angle)) < 2e-6
    assert predictor.model.lm_head.weight.data_ptr() == table.data_ptr()  # still one table
    # Neighbouring bins start alike, far ones do not; the rows keep init's spread.
    rows = table[[tokenizer.location_token_id(k) for k in (100, 101, 900)]]
    near = torch.cosine_similarity(rows[0], rows[1], dim=0).item()
    far = torch.cosine_similarity(rows[0], rows[2], dim=0).item()
    assert near > 0.95 and far < 0.5
    assert abs(rows.pow(2).mean().sqrt().item() - 0.02) < 1e-3


def test_without_the_option_location_rows_are_random_as_the_rest() -> None:
    tokenizer = bundled_tokenizer()
    plain = build_predictor(ModelSettings(preset="tiny", image_size=64), seed=0).model
    ordered_settings = ModelSettings(preset="tiny", image_size=64, ordinal_locations=True)
    ordered = build_predictor(ordered_settings, seed=0).model
    location = tokenizer.location_token_id(5)
    word = tokenizer.encode("circle")[0]
    plain_table, ordered_table = plain.language_model.shared.weight, ordered.language_model.shared.weight
    assert torch.equal(plain_table[word], ordered_table[word])  # only the location rows change
    assert not torch.equal(plain_table[location], ordered_table[location])


def test_a_vision_init_projector_comes_with_its_positions_stretched_to_the_new_grid(tmp_path: Path) -> None:
    source = build_predictor(ModelSettings(preset="tiny", image_size=256), seed=1)  # an 8x8 grid
    omnivis.save(source, tmp_path / "source")
    settings = ModelSettings(preset="tiny", image_size=128, vision_init=str(tmp_path / "source"))
    tower_only = build_predictor(settings, seed=2)
    both = build_predictor(dataclasses.replace(settings, vision_init_projector=True), seed=2)
    trained, fresh, taken = (p.model.multi_modal_projector for p in (source, tower_only, both))
    assert torch.equal(taken.image_projection.weight, trained.image_projection.weight)
    assert not torch.equal(fresh.image_projection.weight, trained.image_projection.weight)
    # Rows 0..3 of the 4x4 grid mean the fractions 0, 1/3, 2/3, 1 of the image: rows 0, 7/3, 14/3, 7 of the 8x8.
    rows = trained.image_position_embed.row_embeddings.weight
    thirds = [rows[2] + (rows[3] - rows[2]) / 3, rows[4] + 2 * (rows[5] - rows[4]) / 3]
    expected = torch.stack([rows[0], *thirds, rows[7]])
    assert torch.allclose(taken.image_position_embed.row_embeddings.weight[:4], expected, atol=1e-6)
    assert torch.equal(both.model.vision_tower.state_dict()["convs.0.conv.weight"],
                       source.model.vision_tower.state_dict()["convs.0.conv.weight"])  # fmt: skip


def test_sinusoid_image_positions_replace_the_random_table_from_scratch() -> None:
    settings = ModelSettings(preset="tiny", image_size=64, sinusoid_image_positions=True)
    positions = build_predictor(settings, seed=0).model.multi_modal_projector.image_position_embed
    rows = positions.row_embeddings.weight
    assert torch.equal(rows, sinusoid_table(rows.shape[0], rows.shape[1]))
    plain = build_predictor(dataclasses.replace(settings, sinusoid_image_positions=False), seed=0)
    assert plain.model.multi_modal_projector.image_position_embed.row_embeddings.weight.std() < 0.05  # BART's


def test_a_shared_text_encoder_takes_the_layers_and_leaves_the_token_table(tmp_path: Path) -> None:
    source = build_predictor(ModelSettings(preset="tiny", image_size=64), seed=1)
    omnivis.save(source, tmp_path / "source")
    settings = ModelSettings(
        preset="tiny", image_size=64, vision_init=str(tmp_path / "source"), vision_init_projector=True,
        vision_init_text_encoder=True,
    )  # fmt: skip
    shared = build_predictor(settings, seed=2).model
    fresh = build_predictor(ModelSettings(preset="tiny"), seed=2).model
    taken = shared.language_model.encoder.state_dict()
    for name, tensor in source.model.language_model.encoder.state_dict().items():
        if name != "embed_tokens.weight":
            assert torch.equal(taken[name], tensor), name
    table = shared.language_model.shared.weight
    assert torch.equal(table, fresh.language_model.shared.weight)  # the seed's, not the source's
    assert not torch.equal(table, source.model.language_model.shared.weight)
    assert shared.language_model.encoder.embed_tokens.weight.data_ptr() == table.data_ptr()  # still tied
    assert shared.lm_head.weight.data_ptr() == table.data_ptr()
    decoder_weight = shared.language_model.decoder.layers[0].fc1.weight  # the seed's
    assert torch.equal(decoder_weight, fresh.language_model.decoder.layers[0].fc1.weight)


def test_a_shared_token_table_is_the_checkpoint_s_and_stays_tied(tmp_path: Path) -> None:
    source = build_predictor(ModelSettings(preset="tiny", image_size=64), seed=1)
    omnivis.save(source, tmp_path / "source")
    settings = ModelSettings(
        preset="tiny", image_size=64, vision_init=str(tmp_path / "source"), vision_init_projector=True,
        vision_init_text_encoder=True, vision_init_token_table=True,
    )  # fmt: skip
    model = build_predictor(settings, seed=2).model
    table = model.language_model.shared.weight
    assert torch.equal(table, source.model.language_model.shared.weight)
    text = model.language_model
    for alias in (model.lm_head, text.encoder.embed_tokens, text.decoder.embed_tokens):
        assert alias.weight is table
    fresh = build_predictor(ModelSettings(preset="tiny", image_size=64), seed=2).model
    decoder_weight = model.language_model.decoder.layers[0].fc1.weight  # the decoder's layers: the seed's
    assert torch.equal(decoder_weight, fresh.language_model.decoder.layers[0].fc1.weight)


def test_a_text_encoder_missing_a_tensor_is_refused_by_name(tmp_path: Path) -> None:
    source = build_predictor(ModelSettings(preset="tiny", image_size=64), seed=1)
    omnivis.save(source, tmp_path / "source")
    weights_path = tmp_path / "source" / "model.safetensors"
    weights = safetensors.torch.load_file(weights_path)
    del weights["language_model.encoder.layers.0.fc1.weight"]
    safetensors.torch.save_file(weights, weights_path)
    settings = ModelSettings(
        preset="tiny", image_size=64, vision_init=str(tmp_path / "source"), vision_init_projector=True,
        vision_init_text_encoder=True,
    )  # fmt: skip
    missing = r"language_model.encoder.*missing 1 tensor\(s\): layers.0.fc1.weight"
    with pytest.raises(CheckpointError, match=missing):
        build_predictor(settings, seed=2)


def test_freezing_a_text_stack_leaves_the_token_table_to_embeddings() -> None:
    def table_trains(*names: str) -> bool:
        model = build_predictor(ModelSettings(preset="tiny", image_size=64, freeze=names), seed=0).model
        assert model.lm_head.weight is model.language_model.shared.weight
        return model.language_model.shared.weight.requires_grad

    assert table_trains("text_encoder") and table_trains("text_decoder")
    assert not table_trains("embeddings")
    settings = ModelSettings(preset="tiny", image_size=64, freeze=("text_encoder",))
    frozen = build_predictor(settings, seed=0).model
    encoder = frozen.language_model.encoder
    assert not any(parameter.requires_grad for parameter in encoder.layers.parameters())
    assert all(parameter.requires_grad for parameter in frozen.language_model.decoder.layers.parameters())
