"""Tagging pre-training of the vision tower: tags from records, a vocabulary, a short run that learns, and a
checkpoint the training loop's `model.vision_init` reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import omnivis
from omnivis.data.build import make_world_dataset
from omnivis.errors import ConfigError
from omnivis.pretrain import TaggingConfig, pretrain_tagging, record_tags, tag_vocabulary
from omnivis.pretrain.tagging import read_tags
from omnivis.train.config import ModelSettings
from omnivis.train.model_setup import build_predictor, load_vision_tower
from omnivis.world import VARIANTS, generate_record


def test_tags_are_categories_caption_words_and_text() -> None:
    record = generate_record(index=0, seed=2, config=VARIANTS["default"])  # the scene of world-default-2-0
    assert record_tags(record) == {
        "category:circle", "category:hexagon", "category:rectangle", "category:text",
        "word:two", "word:circles", "word:hexagons", "word:a", "word:rectangle", "word:the", "word:word",
        "word:mango", "word:and", "word:river", "word:on", "word:pale", "word:green", "word:background",
        "word:with", "word:faint", "word:waves", "has:text",
    }  # fmt: skip


def test_the_vocabulary_keeps_the_most_frequent_informative_tags() -> None:
    records = [generate_record(index=index, seed=3, config=VARIANTS["easy"]) for index in range(40)]
    tags = tag_vocabulary(records, max_tags=10)
    assert len(tags) == 10 and "word:background" not in tags  # every record has it: it tells nothing
    counts = [sum(tag in record_tags(record) for record in records) for tag in tags]
    assert counts == sorted(counts, reverse=True)


@pytest.fixture(scope="module")
def easy_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("easy") / "data"
    make_world_dataset(directory, 32, seed=1, variant="easy", workers=1, progress=False)
    return directory


def test_a_short_run_learns_and_its_tower_starts_training(easy_world: Path, tmp_path: Path) -> None:
    config = TaggingConfig(data=str(easy_world), out=str(tmp_path / "run"), image_size=64, steps=40,
                           batch_size=16, learning_rate=2e-3, warmup_steps=5)  # fmt: skip
    result = pretrain_tagging(config, progress=False)
    assert sum(result.losses[-5:]) / 5 < 0.7 * sum(result.losses[:5]) / 5
    assert read_tags(tmp_path / "run") == result.tags
    trained = omnivis.load(result.checkpoint).model.vision_tower.state_dict()
    fresh = build_predictor(ModelSettings(preset="tiny", image_size=64), seed=0).model
    assert any(
        not torch.equal(trained[name], tensor) for name, tensor in fresh.vision_tower.state_dict().items()
    )
    load_vision_tower(fresh, result.checkpoint)
    assert all(torch.equal(trained[name], tensor) for name, tensor in fresh.vision_tower.state_dict().items())


def test_bad_configs_are_named() -> None:
    with pytest.raises(ConfigError, match=r"steps must be >= 1, got 0; learning_rate must be > 0, got 0"):
        TaggingConfig(data="d", out="o", steps=0, learning_rate=0, warmup_steps=0)
