"""`train_local`: a training run in several local processes (torchrun as a child) from inside a program."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnivis.errors import ConfigError, TrainingError
from omnivis.train import RECIPES, config_from_dict, smoke, train, train_local
from omnivis.train.launch import LAUNCH_CONFIG_SUFFIX
from omnivis.train.monitor import read_events


def _losses(run_dir: Path) -> list[float]:
    return [row["loss"] for row in read_events(run_dir) if row["kind"] == "train"]


def test_two_processes_train_as_one_process_with_twice_the_batch(world_train: Path, tmp_path: Path) -> None:
    config = smoke(RECIPES["demo-cpu"](), data=world_train, out=tmp_path / "two")
    last = train_local(config, processes=2, progress=False)
    assert last == tmp_path / "two" / "checkpoints" / "step-00000003"
    launched = json.loads((tmp_path / f"two{LAUNCH_CONFIG_SUFFIX}").read_text(encoding="utf-8"))
    assert config_from_dict(launched) == config
    alone = smoke(RECIPES["demo-cpu"](), data=world_train, out=tmp_path / "one")
    alone = type(alone)(**{**vars(alone), "batch_size": 2 * config.batch_size})
    train(alone, progress=False)
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5)


def test_one_process_runs_in_this_process(world_train: Path, tmp_path: Path) -> None:
    config = smoke(RECIPES["demo-cpu"](), data=world_train, out=tmp_path / "run")
    assert (
        train_local(config, processes=1, progress=False) == tmp_path / "run" / "checkpoints" / "step-00000003"
    )
    assert not (tmp_path / f"run{LAUNCH_CONFIG_SUFFIX}").exists()


def test_a_failing_child_is_a_clear_error(captions_only: Path, tmp_path: Path) -> None:
    # The mixture asks for detection, which a captions-only dataset cannot give: each child stops on it.
    config = smoke(RECIPES["demo-cpu"](), data=captions_only, out=tmp_path / "run")
    with pytest.raises(TrainingError, match=r"2-process training run in .*run failed \(exit status 1\)"):
        train_local(config, processes=2, progress=False)


def test_bad_settings_fail_before_any_process_starts(world_train: Path, tmp_path: Path) -> None:
    config = smoke(RECIPES["demo-cpu"](), data=world_train, out=tmp_path / "run")
    with pytest.raises(TrainingError, match="processes must be >= 1, got 0"):
        train_local(config, processes=0)
    with pytest.raises(ConfigError, match="batch_size"):
        train_local(type(config)(**{**vars(config), "batch_size": 0}), processes=2)
    assert not tmp_path.joinpath(f"run{LAUNCH_CONFIG_SUFFIX}").exists()
