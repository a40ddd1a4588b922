"""Training in several local processes from inside a program: torchrun as a child process.

On a CPU one process gains little from a second thread (~13% on 2 cores, bench/RESULTS.md), while two
single-threaded DDP processes nearly double the samples a second. `train_local` lets a program (the demo)
take that without asking its user to type a torchrun command; with one process it simply calls `train`.

    last = train_local(config, processes=2)   # the run's last checkpoint
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omnivis.errors import TrainingError
from omnivis.io import atomic_write_json
from omnivis.train.checkpointing import latest_checkpoint
from omnivis.train.config import TrainConfig, validate
from omnivis.train.loop import train

# The config file a multi-process run is launched with, beside (not in) its run directory: the run directory
# must not exist before a fresh run starts.
LAUNCH_CONFIG_SUFFIX = ".launch.json"


def train_local(config: TrainConfig, *, processes: int = 1, progress: bool = True) -> Path:
    """Runs `config` in `processes` local processes (DDP over gloo when more than one); returns the last
    checkpoint.

    `config.batch_size` is per process, as under torchrun: the global batch is `processes` times it. Each
    child is held to one thread, so the processes share the cores instead of fighting over them.

    Raises:
        ConfigError: An invalid config (checked here, before any process starts).
        TrainingError: A child process failed, or the run wrote no checkpoint.
    """
    validate(config)
    if processes < 1:
        raise TrainingError(f"processes must be >= 1, got {processes}")
    if processes == 1:
        result = train(config, progress=progress)
        if result.last_checkpoint is None:
            raise TrainingError(f"the training run in {config.out} wrote no checkpoint")
        return result.last_checkpoint
    run_dir = Path(config.out)
    config_file = run_dir.with_name(run_dir.name + LAUNCH_CONFIG_SUFFIX)
    atomic_write_json(config_file, config.to_dict())
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
        "-m", "omnivis", "train", "--config", str(config_file), *([] if progress else ["--no-progress"]),
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, env=environment, check=False)
    if finished.returncode != 0:
        raise TrainingError(
            f"the {processes}-process training run in {run_dir} failed (exit status {finished.returncode}); "
            "its error is printed above"
        )
    last = latest_checkpoint(run_dir)
    if last is None:
        raise TrainingError(f"the training run in {run_dir} wrote no checkpoint")
    return last
