"""torchrun with 2 CPU processes (gloo) trains exactly as 1 process with twice the batch: DDP and FSDP.

Each rank reads its own share of the stream (see `omnivis.train.data`); the loss of a step is the mean over
every target token of all ranks, so the gradients, and therefore the losses of 20 steps, agree to float
rounding. Only rank 0 writes.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from omnivis.train import RECIPES, apply_overrides, distributed, smoke
from omnivis.train.checkpointing import latest_checkpoint
from omnivis.train.monitor import read_events

# The acceptance length; the default test run checks DDP over a few steps, the slow one both over 20.
STEPS = 20
QUICK_STEPS = 4


def _write_config(world_train: Path, run: Path, *overrides: str) -> Path:
    config = apply_overrides(
        smoke(RECIPES["tiny-world-cpu"](), data=world_train, out=run),
        ["deterministic=true", "data.examples_per_image=2", "optim.warmup_steps=2", *overrides],
    )
    config_path = run.with_suffix(".json")
    config_path.write_text(config.to_json())
    return config_path


def _launch(world_train: Path, run: Path, *, processes: int, batch_size: int, strategy: str,
            steps: int, extra: tuple[str, ...] = ()) -> dict[int, float]:  # fmt: skip
    config_path = _write_config(world_train, run, f"steps={steps}", f"batch_size={batch_size}",
                                f"distributed={strategy}", "model.dropout=0.0", "checkpoint_every=100",
                                *extra)  # fmt: skip
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


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_ranks_match_one_process_with_the_towers_tagging_losses(strategy: str, world_train: Path,
                                                                    tmp_path: Path) -> None:  # fmt: skip
    """The tagging losses are per image, scaled by the step's images: 2 ranks add up to 1 process of 2B, in the
    token losses, the tagging losses and the heads' weights."""
    extra = ("tagging.weight=0.5", "tagging.word_weight=2.0")
    expected = _launch(world_train, tmp_path / "single", processes=1, batch_size=4, strategy="ddp",
                       steps=QUICK_STEPS, extra=extra)  # fmt: skip
    losses = _launch(world_train, tmp_path / "ranks", processes=2, batch_size=2, strategy=strategy,
                     steps=QUICK_STEPS, extra=extra)  # fmt: skip
    _compare(tmp_path / "ranks", losses, tmp_path / "single", expected, QUICK_STEPS)
    tagging, expected_tagging = (
        [event["tagging_loss"] for event in read_events(run) if event["kind"] == "train"]
        for run in (tmp_path / "ranks", tmp_path / "single")
    )
    assert len(tagging) == QUICK_STEPS and tagging == pytest.approx(expected_tagging, rel=1e-5)
    heads = load_file(str(tmp_path / "ranks" / "checkpoints" / f"step-{QUICK_STEPS:08d}" / "heads.safetensors"))
    reference = load_file(str(tmp_path / "single" / "checkpoints" / f"step-{QUICK_STEPS:08d}" / "heads.safetensors"))
    for name in heads:
        torch.testing.assert_close(heads[name], reference[name], rtol=1e-3, atol=1e-4, msg=name)


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


def _worker_pid(marker: str, rank: int) -> int | None:
    """The pid of the torchrun worker of `rank` whose environment carries `marker` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        try:
            variables = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"OMNIVIS_TEST_RUN={marker}".encode() in variables and f"RANK={rank}".encode() in variables:
            return int(entry.name)
    return None


def _trained_steps(run: Path) -> int:
    try:
        return max((event["step"] for event in read_events(run) if event["kind"] == "train"), default=0)
    except json.JSONDecodeError:  # a line being written
        return 0


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_torchrun_restarts_after_a_rank_is_killed_and_the_run_resumes_to_the_same_weights(
    strategy: str, world_train: Path, tmp_path: Path
) -> None:
    """torchrun --max-restarts 1 with --resume: SIGKILL rank 1 past a checkpoint; both ranks restart from the
    latest checkpoint and end with the uninterrupted run's losses and weights, bit for bit; rank 0 alone
    wrote the run directory."""
    overrides = ("steps=8", "batch_size=2", f"distributed={strategy}", "model.dropout=0.1", "checkpoint_every=2",
                 "keep_last=10")  # fmt: skip
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    runs: dict[str, Path] = {"uninterrupted": tmp_path / "uninterrupted", "killed": tmp_path / "killed"}
    config_paths = {name: _write_config(world_train, run, *overrides) for name, run in runs.items()}
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = ["-m", "omnivis", "train", "--no-progress", "--resume", "--config"]
    finished = subprocess.run([*launch, *command, str(config_paths["uninterrupted"])], env=environment,
                              capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]

    killed = runs["killed"]
    process = subprocess.Popen(
        [*launch, "--max-restarts=1", *command, str(config_paths["killed"])],
        env={**environment, "OMNIVIS_TEST_RUN": str(killed)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and _trained_steps(killed) < 3:
        time.sleep(0.05)
    pid = _worker_pid(str(killed), rank=1)
    assert pid is not None and latest_checkpoint(killed) is not None
    os.kill(pid, signal.SIGKILL)  # past the step-2 checkpoint, before the end
    _, errors = process.communicate(timeout=600)
    assert process.returncode == 0, errors.decode()[-3000:]

    expected = {e["step"]: e["loss"] for e in read_events(runs["uninterrupted"]) if e["kind"] == "train"}
    resumed_events = read_events(killed)
    assert any("resumed_from" in event for event in resumed_events)  # the restarted workers resumed
    losses = {event["step"]: event["loss"] for event in resumed_events if event["kind"] == "train"}
    assert losses == expected  # exact floats, every step
    name = "step-00000008"
    final = load_file(str(killed / "checkpoints" / name / "model.safetensors"))
    reference = load_file(str(runs["uninterrupted"] / "checkpoints" / name / "model.safetensors"))
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[tensor], reference[tensor]) for tensor in final)
    # One writer: the same files as the uninterrupted run, no staging leftovers.
    listing = lambda run: sorted(
        str(path.relative_to(run)) for path in run.rglob("*") if "tensorboard" not in str(path)
    )
    assert listing(killed) == listing(runs["uninterrupted"])


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
