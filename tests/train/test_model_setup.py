"""Initial weights a run starts from: the ordinal location-token rows and a projector taken from another
checkpoint, checked against hand computations."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

import omnivis
from omnivis.loading import bundled_tokenizer
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
