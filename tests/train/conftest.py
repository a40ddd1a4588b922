"""Small world datasets shared by the training tests (made once per session)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from omnivis.data.build import make_world_dataset
from omnivis.data.parquet import write_dataset
from omnivis.world import VARIANTS, generate_record


@pytest.fixture(scope="session")
def world_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 world scenes in 3 shards (so ranks read across shard boundaries)."""
    directory = tmp_path_factory.mktemp("world") / "train"
    make_world_dataset(directory, 24, seed=1, records_per_shard=8, workers=1, progress=False)
    return directory


@pytest.fixture(scope="session")
def world_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("world") / "val"
    make_world_dataset(directory, 3, seed=2, workers=1, progress=False)
    return directory


@pytest.fixture(scope="session")
def captions_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """World scenes stripped down to their captions: a dataset that supports caption tasks alone."""
    records = [generate_record(index=i, seed=3, config=VARIANTS["default"]) for i in range(4)]
    stripped = [
        dataclasses.replace(r, regions=(), text_lines=(), groundings=(), referring=(), questions=())
        for r in records
    ]
    directory = tmp_path_factory.mktemp("captions") / "data"
    write_dataset(stripped, directory)
    return directory
