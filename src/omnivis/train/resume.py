"""Saving and restoring a run's whole state: weights, optimizer, schedule, RNG and data position.

`save` gathers the full state from every rank (a collective under FSDP) and rank 0 writes it through
`checkpointing` (atomic: staged, then renamed); `restore` loads it back into the wrapped model and optimizer
with shapes checked, so `--resume` continues bit-identically.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from omnivis.errors import CheckpointError, ConfigError
from omnivis.io import atomic_write_text
from omnivis.model.checkpoint import TIED_ALIASES, check_state, expected_tensors, untie
from omnivis.predictor import Predictor
from omnivis.train import checkpointing, distributed
from omnivis.train.checkpointing import Snapshot, TrainerState
from omnivis.train.config import TrainConfig
from omnivis.train.distributed import Runtime
from omnivis.train.lora import adapter_state, is_adapter, merged_state
from omnivis.train.monitor import RunLog
from omnivis.train.tower_tagging import HEADS_MODULE, TowerTagging, read_heads, split_heads


def resume_point(run_dir: Path, resume: bool | str) -> Path | None:
    """The checkpoint a run continues from: None for a fresh run (refused where checkpoints exist already),
    the run's latest for True (None when there is none yet), or the directory given."""
    if resume is False:
        if checkpointing.latest_checkpoint(run_dir) is not None:
            raise ConfigError(
                f"{run_dir} already holds checkpoints; resume it (--resume) or choose another out"
            )
        return None
    if resume is True:
        return checkpointing.latest_checkpoint(run_dir)  # None: nothing saved yet, start fresh
    path = Path(resume)
    if not path.is_dir():
        raise ConfigError(f"resume: {path} is not a checkpoint directory")
    return path


def start_run_directory(run_dir: Path, config: TrainConfig) -> None:
    """Creates a fresh run's directory with its resolved `config.json`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", config.to_json())


def save(predictor: Predictor, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainerState,
         config: TrainConfig, runtime: Runtime, log: RunLog,
         tagging: TowerTagging | None = None) -> Path:  # fmt: skip
    """Gathers the full state (a collective under FSDP) and writes a checkpoint from rank 0; the tagging heads,
    when kept, go beside the model's weights, not among them."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    gathered, optimizer_state = get_state_dict(model, optimizer, options=options)
    model_state, heads_state = split_heads(typing.cast(dict[str, torch.Tensor], gathered))
    rng_states = distributed.gather_rng_states(runtime)
    run_dir = Path(config.out)
    path = checkpointing.checkpoint_path(run_dir, state.step)
    adapters = None
    if config.model.lora_rank > 0:  # serve merged weights; keep the factors to resume from
        adapters = adapter_state(model_state)
        model_state = merged_state(model_state, config.model.lora_alpha / config.model.lora_rank)
    if runtime.is_main:
        snapshot = Snapshot(
            model_state,
            optimizer_state,
            rng_states,
            state,
            config.to_dict(),
            adapters,
            None if tagging is None else tagging.checkpoint(heads_state),
        )
        checkpointing.save_checkpoint(predictor, snapshot, run_dir)
        if state.best.get("step") == state.step:
            checkpointing.keep_best(run_dir, path)
        checkpointing.prune(run_dir, config.keep_last)
        log.write({"kind": "checkpoint", "step": state.step, "path": str(path)})
    distributed.barrier(runtime)
    return path


def restore(path: Path, predictor: Predictor, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, runtime: Runtime, config: TrainConfig) -> TrainerState:  # fmt: skip
    """Loads a training checkpoint into the (wrapped) model, optimizer and schedule, and this rank's RNG."""
    snapshot = checkpointing.load_checkpoint(path)
    trainer = snapshot.trainer
    global_batch = runtime.world_size * config.batch_size * config.accumulation
    if trainer.global_batch != global_batch:
        raise ConfigError(
            f"{path} was made with {trainer.global_batch} images per step, this run takes {global_batch}: "
            "the data position would not carry over; keep world size x batch_size x accumulation"
        )
    weights = _resume_weights(snapshot, predictor, path)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=typing.cast(dict[str, Any], weights),
        optim_state_dict=snapshot.optimizer_state,
        # Not strict only about the tied aliases `_resume_weights` leaves out; it checked every other tensor.
        options=StateDictOptions(full_state_dict=True, strict=False),
    )
    scheduler.load_state_dict(trainer.scheduler)
    if trainer.world_size == runtime.world_size:
        rng = snapshot.rng_states[runtime.rank]
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and runtime.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], runtime.device)
    if runtime.is_main:
        checkpointing.remove_staging_leftovers(Path(config.out))
    return trainer


def _resume_weights(snapshot: Snapshot, predictor: Predictor, path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the model's state dict but the tied aliases, from the checkpoint, checked against the
    model's shapes.

    The aliases (the embeddings and the LM head, one tensor with `language_model.shared.weight`) load with
    it. Given by their own names, DDP would refuse them: torch maps state-dict names onto the wrapper's
    (`module.`) only for each parameter's first name. The tagging heads, kept beside the weights, must be there
    exactly when the run keeps them.
    """
    current = {
        name: tensor for name, tensor in predictor.model.state_dict().items() if name not in TIED_ALIASES
    }
    heads = read_heads(path)  # {} for a checkpoint without tagging heads
    heads_in_run = HEADS_MODULE in dict(predictor.model.named_children())
    _check_heads_kept(path, heads_in_checkpoint=bool(heads), heads_in_run=heads_in_run)
    # LoRA: the base weights are the init's, unchanged; the factors carry over.
    if snapshot.adapters is not None:
        wanted = {name for name in current if is_adapter(name)}
        same_names = set(snapshot.adapters) == wanted
        if not same_names or any(snapshot.adapters[name].shape != current[name].shape for name in wanted):
            raise CheckpointError(
                f"{path}: its LoRA adapters do not match this run's (model.lora_targets/rank)"
            )
        return current | snapshot.adapters | heads
    weights = untie(snapshot.model_state) | heads
    check_state(weights, expected_tensors(predictor.model), str(path / "model.safetensors"))
    return {name: weights[name] for name in current}


def _check_heads_kept(path: Path, heads_in_checkpoint: bool, heads_in_run: bool) -> None:
    """A run resumes with the tagging heads exactly when its checkpoint was made with them."""
    if heads_in_checkpoint and not heads_in_run:
        raise CheckpointError(
            f"{path} was made keeping the tagging losses (it holds heads.safetensors) and this run keeps none "
            "(tagging.weight=0): resume it with the tagging settings it was made with, or start a new run "
            "from it with --init"
        )
    if heads_in_run and not heads_in_checkpoint:
        raise CheckpointError(
            f"{path} holds no tagging heads (heads.safetensors) and this run keeps them (tagging.weight > 0): "
            "resume it with tagging.weight=0, or start a new run from it with --init"
        )
