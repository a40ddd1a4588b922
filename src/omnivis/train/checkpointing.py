"""Training checkpoints: a servable model plus everything an exact resume needs, written atomically.

A checkpoint is `<run>/checkpoints/step-00001234/`: an ordinary omnivis checkpoint (`omnivis.load` and
`omnivis eval` read it as is) plus
- `optimizer.safetensors`: AdamW's moments, keyed `state/<parameter name>/<moment>`;
- `rng.safetensors`: every rank's RNG state (dropout draws from it), keyed `rank<r>/<device>`;
- `trainer_state.json`: the step, the optimizer's parameter groups, the scheduler, the data position (the next
  stream position), the world size and global batch it was made with, and the best evaluation so far;
- `train_config.json`: the resolved config of the run;
- `adapters.safetensors` (LoRA runs only): the adapter factors; `model.safetensors` then holds merged weights;
- `heads.safetensors`, `tags.json`, `classes.json` (runs keeping the tagging losses): the tagging heads and
  their vocabularies, as a tagging run writes them (`omnivis.train.tower_tagging`).
No pickle is written or read. The directory is built under a hidden staging name and renamed into place
only when complete, so a process killed mid-write leaves nothing `latest_checkpoint` would pick up.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from omnivis.errors import CheckpointError
from omnivis.io import atomic_directory, atomic_write_json
from omnivis.loading import write_checkpoint_files
from omnivis.predictor import Predictor
from omnivis.train.lora import ADAPTERS_FILE
from omnivis.train.tower_tagging import HeadsCheckpoint

CHECKPOINTS = "checkpoints"
BEST = "best"
_STEP_NAME = re.compile(r"^step-(\d{8})$")
TRAINER_STATE = "trainer_state.json"


@dataclass
class TrainerState:
    """The loop's own state at a checkpoint."""

    step: int  # optimizer steps done
    position: int  # the next training-stream position
    world_size: int
    global_batch: int  # images per optimizer step, all ranks
    scheduler: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)  # {"step", "metric", "value"} of the best evaluation
    truncated_targets: int = 0  # examples whose target or prompt was cut to its token budget, so far
    unwritable_annotations: int = 0  # annotations skipped because no target parses back to them, so far


@dataclass
class Snapshot:
    """What `save_checkpoint` writes: full (unsharded) model and optimizer state, gathered on rank 0."""

    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[
        str, Any
    ]  # torch.distributed.checkpoint's full optimizer state dict (names as keys)
    rng_states: list[dict[str, torch.Tensor]]
    trainer: TrainerState
    config: dict[str, Any]
    adapters: dict[str, torch.Tensor] | None = None  # LoRA factors; then model_state holds the merged weights
    heads: HeadsCheckpoint | None = None  # the tagging heads, when the run keeps them (`tower_tagging`)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:08d}"


def save_checkpoint(predictor: Predictor, snapshot: Snapshot, run_dir: Path) -> Path:
    """Writes `<run>/checkpoints/step-<step>/` atomically and returns its path."""
    path = checkpoint_path(run_dir, snapshot.trainer.step)
    optimizer_tensors, optimizer_meta = _flatten_optimizer(snapshot.optimizer_state)
    with atomic_directory(path) as staging:
        write_checkpoint_files(predictor, staging, snapshot.model_state)
        save_file(optimizer_tensors, str(staging / "optimizer.safetensors"))
        if snapshot.adapters is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in snapshot.adapters.items()},
                      str(staging / ADAPTERS_FILE))  # fmt: skip
        rng = {
            f"rank{rank}/{kind}": state
            for rank, states in enumerate(snapshot.rng_states)
            for kind, state in states.items()
        }
        save_file(rng, str(staging / "rng.safetensors"))
        if snapshot.heads is not None:
            snapshot.heads.write(staging)
        trainer = {**snapshot.trainer.__dict__, "param_groups": optimizer_meta}
        atomic_write_json(staging / TRAINER_STATE, trainer)
        atomic_write_json(staging / "train_config.json", snapshot.config)
    return path


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    tensors: dict[str, torch.Tensor] = {}
    for name, moments in state.get("state", {}).items():
        for key, value in moments.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"state/{name}/{key}"] = tensor.detach().cpu().contiguous()
    return tensors, [dict(group) for group in state.get("param_groups", [])]


def load_checkpoint(path: Path) -> Snapshot:
    """Reads a training checkpoint's state (the model weights as saved, the optimizer, RNG and trainer state).

    Raises:
        CheckpointError: A file is missing or unreadable: not a complete training checkpoint.
    """
    for name in (
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        TRAINER_STATE,
        "train_config.json",
    ):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} is not a complete training checkpoint: {name} is missing")
    try:
        trainer_values = json.loads((path / TRAINER_STATE).read_text())
        param_groups = trainer_values.pop("param_groups")
        trainer = TrainerState(**trainer_values)
        optimizer_state: dict[str, Any] = {"state": {}, "param_groups": param_groups}
        for key, tensor in load_file(str(path / "optimizer.safetensors")).items():
            _, name, moment = key.split("/", 2)
            optimizer_state["state"].setdefault(name, {})[moment] = tensor
        rng_states: dict[int, dict[str, torch.Tensor]] = {}
        for key, tensor in load_file(str(path / "rng.safetensors")).items():
            rank, kind = key.split("/", 1)
            rng_states.setdefault(int(rank.removeprefix("rank")), {})[kind] = tensor
        model_state = load_file(str(path / "model.safetensors"))
        adapters = load_file(str(path / ADAPTERS_FILE)) if (path / ADAPTERS_FILE).is_file() else None
        config = json.loads((path / "train_config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: unreadable training checkpoint ({error})") from error
    rngs = [rng_states[rank] for rank in sorted(rng_states)]
    return Snapshot(model_state, optimizer_state, rngs, trainer, config, adapters)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint of the highest step in a run, or None.

    Only fully renamed `step-<8 digits>` directories with a trainer state count: a staging directory left
    by a killed process has a hidden name and is never picked up.
    """
    directory = run_dir / CHECKPOINTS
    if not directory.is_dir():
        return None
    steps = sorted(
        (int(match.group(1)), entry)
        for entry in directory.iterdir()
        if (match := _STEP_NAME.match(entry.name)) and (entry / TRAINER_STATE).is_file()
    )
    return steps[-1][1] if steps else None


def remove_staging_leftovers(run_dir: Path) -> list[Path]:
    """Deletes hidden staging directories a killed writer left in the run's checkpoints; returns them."""
    directory = run_dir / CHECKPOINTS
    if not directory.is_dir():
        return []
    leftovers = [entry for entry in directory.iterdir() if entry.name.startswith(".omnivis-")]
    for entry in leftovers:
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    return leftovers


def keep_best(run_dir: Path, source: Path) -> Path:
    """Copies a checkpoint to `<run>/checkpoints/best`, atomically replacing the previous best."""
    best = run_dir / CHECKPOINTS / BEST
    with atomic_directory(best) as staging:
        for file in source.iterdir():
            shutil.copy2(file, staging / file.name)
    return best


def prune(run_dir: Path, keep_last: int) -> list[Path]:
    """Deletes all but the `keep_last` newest step checkpoints (the best is a copy and stays); returns them."""
    directory = run_dir / CHECKPOINTS
    steps = sorted(entry for entry in directory.iterdir() if _STEP_NAME.match(entry.name))
    removed = steps[: max(0, len(steps) - keep_last)]
    for entry in removed:
        shutil.rmtree(entry)
    return removed
