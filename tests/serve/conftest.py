"""The serving tests' fixtures: a random `tiny` model with short answers, a live server over it, a scene."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import live_server, settings

from omnivis.predictor import Predictor
from omnivis.train.config import ModelSettings
from omnivis.train.model_setup import build_predictor


@pytest.fixture(scope="session")
def predictor() -> Predictor:
    """A random `tiny` model with 64 x 64 inputs (its answers are noise, but deterministic)."""
    predictor = build_predictor(ModelSettings(preset="tiny", image_size=64), seed=0)
    predictor.model.eval()  # built for training; answers come from eval mode, as `omnivis.load` gives
    return predictor


@pytest.fixture(scope="module")
def server(predictor: Predictor) -> Iterator[str]:
    """One live server per test module, with the default batching knobs."""
    with live_server(predictor, settings()) as url:
        yield url


@pytest.fixture(scope="session")
def scene_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A world scene as a PNG file (shapes and text on a background)."""
    from omnivis.world import VARIANTS, generate_record

    record = generate_record(index=2, seed=7, config=VARIANTS["default"])
    path = tmp_path_factory.mktemp("images") / "scene.png"
    path.write_bytes(record.image)
    return path
