"""One process or many: the runtime torchrun describes, and the model wrapped for DDP or FSDP.

`torchrun --nproc-per-node N -m omnivis train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; `start` reads them
and joins the process group (NCCL on GPUs, gloo on CPUs). Without them the run is one process and nothing
is initialised. Multi-node runs add torchrun's rendezvous flags (`--nnodes`, `--node-rank`,
`--rdzv-endpoint`); nothing here changes.

DDP keeps a whole replica per rank and averages gradients; FSDP (PyTorch's `fully_shard`) shards parameters,
gradients and optimizer state, one unit per transformer layer and DaViT block, for models that do not fit.
Both average gradients over ranks, which the loss scaling in the loop accounts for.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import typing
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from omnivis.errors import ConfigError
from omnivis.model.florence import Florence2


@dataclass(frozen=True)
class Runtime:
    """Where this process stands: its rank among `world_size` and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start(device: str) -> Runtime:
    """Joins torchrun's process group when launched by it; picks the device.

    Args:
        device: "auto" (CUDA when present), "cpu" or "cuda".

    Raises:
        ConfigError: CUDA asked for but absent.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device is cuda, but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        # A long timeout: rank 0 evaluates and writes checkpoints while the others wait at a barrier.
        timeout = datetime.timedelta(minutes=60)
        dist.init_process_group("nccl" if use_cuda else "gloo", store=_attempt_store(timeout), rank=rank,
                                world_size=world_size, timeout=timeout)  # fmt: skip
    return Runtime(rank, world_size, local_rank, chosen)


def _attempt_store(timeout: datetime.timedelta) -> dist.Store:
    """torchrun's store, its keys under this attempt's own prefix.

    After `--max-restarts` restarts the workers, the agent's store still holds the keys of the attempt
    before it; without a prefix, a new rank can read a dead rank's address from them and fail to connect
    ("Connection refused", pytorch/pytorch#167288).
    """
    store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
    return dist.PrefixStore(f"omnivis/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def stop(runtime: Runtime) -> None:
    """Releases the run's process group; call after the wrapped model has gone out of scope."""
    if runtime.distributed and dist.is_initialized():
        # DDP's reducer, which holds the process group, sits in a reference cycle: collect it now, while the
        # interpreter is whole. Left to the collector at interpreter shutdown, gloo's worker threads can abort
        # the process ("terminate called without an active exception", SIGABRT) after a finished run.
        gc.collect()
        dist.destroy_process_group()


def wrap(model: Florence2, runtime: Runtime, strategy: str) -> nn.Module:
    """The model as the training step calls it: itself (one process), DDP, or FSDP-sharded in place."""
    if not runtime.distributed:
        return model
    if strategy == "ddp":
        device_ids = [runtime.local_rank] if runtime.device.type == "cuda" else None
        # The depthwise position convolutions' (C, 1, 3, 3) weights get gradients whose stride along the
        # size-1 axis differs from the weight's: the same memory order, so DDP's warning about it is noise.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        # Frozen parts and prompts that skip a module leave parameters without gradients in some steps.
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)
    from torch.distributed.fsdp import fully_shard

    for block in shard_units(model):
        fully_shard(block)
    fully_shard(model)  # the rest: embeddings (tied with the LM head), projector, norms
    return model


def shard_units(model: Florence2) -> list[nn.Module]:
    """The FSDP units: each DaViT block and each encoder and decoder layer."""
    stages = typing.cast(nn.ModuleList, model.vision_tower.blocks)
    units: list[nn.Module] = [block for stage in stages for block in typing.cast(nn.ModuleList, stage)]
    units += list(model.language_model.encoder.layers)
    units += list(model.language_model.decoder.layers)
    return units


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skips the gradient all-reduce of a micro-batch that is not the step's last (accumulation)."""
    if isinstance(model, DistributedDataParallel) and not enabled:
        with model.no_sync():
            yield
        return
    set_sync = getattr(model, "set_requires_gradient_sync", None)  # FSDP2
    if callable(set_sync):
        set_sync(enabled)
    yield


def all_reduce_sum(value: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """The sum of `value` over ranks (itself in one process)."""
    if runtime.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def broadcast_flag(flag: bool, runtime: Runtime) -> bool:
    """Rank 0's `flag` on every rank (e.g. "the time budget is spent"), so all ranks stop together."""
    if not runtime.distributed:
        return flag
    tensor = torch.tensor([int(flag)], device=runtime.device if runtime.device.type == "cuda" else "cpu")
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def gather_rng_states(runtime: Runtime) -> list[dict[str, torch.Tensor]]:
    """Every rank's RNG states (dropout draws from them), on rank 0; other ranks get []."""
    state = {"cpu": torch.get_rng_state()}
    if runtime.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(runtime.device)
    if not runtime.distributed:
        return [state]
    gathered: list[dict[str, torch.Tensor]] = [{} for _ in range(runtime.world_size)]
    dist.all_gather_object(gathered, state)
    return gathered if runtime.is_main else []
