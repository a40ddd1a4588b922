"""What a run reports as it goes: a progress bar, `metrics.jsonl`, and TensorBoard events (rank 0 only).

Each JSONL line is one event: `{"kind": "train", "step", "loss", "lr", "grad_norm", "samples_per_s",
"tokens_per_s", ...}` every `log_every` steps, `{"kind": "eval", "step", "<task>/<metric>": value, ...}` after
each evaluation, `{"kind": "note", ...}` for things a reader should know (truncated targets, a resume). On
resume, lines after the checkpoint's step are dropped first, so the log reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from omnivis.io import atomic_write_text

METRICS_FILE = "metrics.jsonl"


class RunLog:
    """Writes the run's metrics; every method is a no-op on ranks other than 0."""

    def __init__(
        self, run_dir: Path, *, enabled: bool, start_step: int, total_steps: int, progress: bool
    ) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.bar: tqdm[Any] | None = None
        self.writer: Any = None
        self.last_time = time.perf_counter()
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        _truncate_after(self.path, start_step)
        if progress:
            self.bar = tqdm(
                total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, desc="train"
            )
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional: the JSONL log holds everything
            self.writer = None
        else:
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step)

    def write(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(event, allow_nan=True) + "\n")
        if self.writer is not None and "step" in event:
            prefix = event["kind"]
            for key, value in event.items():
                if (
                    key not in ("kind", "step")
                    and isinstance(value, int | float)
                    and not isinstance(value, bool)
                ):
                    self.writer.add_scalar(f"{prefix}/{key}", value, event["step"])
            self.writer.flush()

    def advance(self, steps: int) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def postfix(self, values: dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every event of a run's `metrics.jsonl` (empty when there is none)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _truncate_after(path: Path, step: int) -> None:
    """Drops events logged after `step` (a resumed run logs them again), atomically."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in kept if json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))
