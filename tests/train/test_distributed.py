"""torchrun with 2 CPU processes (gloo) trains exactly as 1 process with twice the batch: DDP and FSDP.

Each rank reads its own share of the stream (see `omnivis.train.data`); the loss of a step is the mean over
every target token of all ranks, so the gradients, and therefore the losses of 20 steps, agree to float
rounding. Only rank 0 writes.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from omnivis.train import RECIPES, apply_overrides, distributed, smoke
from omnivis.train.monitor import read_events

# The acceptance length; the default test run checks DDP over a few steps, the slow one both over 20.
STEPS = 20
QUICK_STEPS = 4


def _launch(world_train: Path, run: Path, *, processes: int, batch_size: int, strategy: str,
            steps: int) -> dict[int, float]:  # fmt: skip
    config = apply_overrides(
        smoke(RECIPES["tiny-world-cpu"](), data=world_train, out=run),
        [f"steps={steps}", f"batch_size={batch_size}", f"distributed={strategy}", "model.dropout=0.0",
         "deterministic=true", "checkpoint_every=100", "data.examples_per_image=2", "optim.warmup_steps=2"],
    )  # fmt: skip
    config_path = run.with_suffix(".json")
    config_path.write_text(config.to_json())
    command = [sys.executable, "-m", "omnivis", "train", "--config", str(config_path), "--no-progress"]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   "-m", "omnivis", "train", "--config", str(config_path), "--no-progress"]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=600, check=False
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return {event["step"]: event["loss"] for event in read_events(run) if event["kind"] == "train"}


def _compare(
    run: Path, losses: dict[int, float], single_run: Path, expected: dict[int, float], steps: int
) -> None:
    assert sorted(losses) == sorted(expected) == list(range(1, steps + 1))
    for step, loss in losses.items():
        assert loss == pytest.approx(expected[step], rel=1e-5), f"step {step}"
    assert expected[steps] < expected[1]  # it trained
    # One writer: one checkpoint, whose weights agree with the single process's.
    name = f"step-{steps:08d}"
    assert [p.name for p in (run / "checkpoints").iterdir()] == [name]
    weights = load_file(str(run / "checkpoints" / name / "model.safetensors"))
    reference = load_file(str(single_run / "checkpoints" / name / "model.safetensors"))
    assert weights.keys() == reference.keys()
    for tensor in weights:
        torch.testing.assert_close(weights[tensor], reference[tensor], rtol=1e-3, atol=1e-4, msg=tensor)


def test_ddp_matches_one_process_over_a_few_steps(world_train: Path, tmp_path: Path) -> None:
    expected = _launch(
        world_train, tmp_path / "single", processes=1, batch_size=4, strategy="ddp", steps=QUICK_STEPS
    )
    losses = _launch(
        world_train, tmp_path / "ddp", processes=2, batch_size=2, strategy="ddp", steps=QUICK_STEPS
    )
    _compare(tmp_path / "ddp", losses, tmp_path / "single", expected, QUICK_STEPS)


@pytest.fixture(scope="module")
def single(world_train: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, float]]:
    run = tmp_path_factory.mktemp("single") / "run"
    return run, _launch(world_train, run, processes=1, batch_size=4, strategy="ddp", steps=STEPS)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_of_batch_b_match_one_process_of_batch_2b(strategy: str, single, world_train: Path,
                                                           tmp_path: Path) -> None:  # fmt: skip
    single_run, expected = single
    losses = _launch(world_train, tmp_path / "run", processes=2, batch_size=2, strategy=strategy, steps=STEPS)
    _compare(tmp_path / "run", losses, single_run, expected, STEPS)


def test_stop_frees_a_wrapped_model_left_in_a_reference_cycle() -> None:
    # Freed only at interpreter shutdown, DDP's process group can abort a finished rank (gloo, SIGABRT).
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    collecting = gc.isenabled()
    gc.disable()  # keep the cycle until `stop` collects it
    try:
        model = DistributedDataParallel(torch.nn.Linear(2, 2))
        cycle: list[object] = [model]
        cycle.append(cycle)
        alive = weakref.ref(model)
        del model, cycle
        assert alive() is not None
        distributed.stop(distributed.Runtime(rank=0, world_size=2, local_rank=0, device=torch.device("cpu")))
        assert alive() is None
        assert not torch.distributed.is_initialized()
    finally:
        if collecting:
            gc.enable()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
