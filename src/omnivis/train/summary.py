"""The end-of-run report: `<run>/summary.md` with the learning curve drawn to `<run>/curve.png`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from omnivis.io import atomic_write_bytes, atomic_write_text
from omnivis.train.checkpointing import TrainerState
from omnivis.train.config import TrainConfig
from omnivis.train.monitor import read_events

CURVE = "curve.png"


def write_summary(run_dir: Path, config: TrainConfig, state: TrainerState) -> Path:
    """Writes summary.md (and curve.png when there is a curve to draw); returns the summary's path."""
    events = read_events(run_dir)
    train = [event for event in events if event["kind"] == "train"]
    evals = [event for event in events if event["kind"] == "eval"]
    if train:
        atomic_write_bytes(run_dir / CURVE, plot_curve(train, evals))
    counts = (
        f"Steps: {state.step} of {config.steps}; {state.global_batch} images per step; {state.truncated_targets} "
        f"targets cut to the token budget; {state.unwritable_annotations} annotations skipped as unwritable."
    )
    lines = [f"# Training run `{run_dir.name}`", "", counts, ""]
    if train:
        last = train[-1]
        rates = [event["samples_per_s"] for event in train[1:]] or [last["samples_per_s"]]
        median_rate = sorted(rates)[len(rates) // 2]
        loss_line = f"Final loss {last['loss']:.4f} (first logged {train[0]['loss']:.4f}); median {median_rate:.1f} images/s."
        if "tagging_loss" in last:
            loss_line += f" Tagging loss {last['tagging_loss']:.4f} (first logged {train[0]['tagging_loss']:.4f})."
        lines += [loss_line, "", f"![learning curve]({CURVE})", ""]
    if evals:
        lines += _evaluation_table(evals[-1])
    if state.best:
        lines += [
            f"Best checkpoint: step {state.best['step']} (score {state.best['value']:.4f}), in checkpoints/best.",
            "",
        ]
    lines += ["## Config", "", "```json", config.to_json().rstrip(), "```", ""]
    path = run_dir / "summary.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _evaluation_table(event: dict[str, Any]) -> list[str]:
    rows = [(key.split("/", 1)[0], key.split("/", 1)[1], value) for key, value in event.items()
            if "/" in key and key.startswith("<")]  # fmt: skip
    lines = [f"## Evaluation at step {event['step']} (score {event.get('score', 0.0):.4f})", "",
             "| task | metric | value |", "|---|---|---|"]  # fmt: skip
    lines += [
        f"| `{task}` | {name} | {'n/a' if value is None else f'{value:.4f}'} |" for task, name, value in rows
    ]
    return [*lines, ""]


def plot_curve(train: list[dict[str, Any]], evals: list[dict[str, Any]]) -> bytes:
    """A PNG of the training loss (log scale; the tagging loss beside it when kept) and learning rate, with the
    eval score when there is one."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the figure only goes to a file
    from matplotlib import pyplot

    figure, (loss_axis, rate_axis) = pyplot.subplots(1, 2, figsize=(10, 3.6))
    steps = [event["step"] for event in train]
    loss_axis.plot(steps, [event["loss"] for event in train], label="train loss")
    if all("tagging_loss" in event for event in train):  # a run keeping the tower's tagging losses
        loss_axis.plot(steps, [event["tagging_loss"] for event in train], color="tab:purple", label="tagging loss")
        loss_axis.legend(loc="upper right")
    loss_axis.set_yscale("log")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    if evals:
        score_axis = loss_axis.twinx()
        score_axis.plot([e["step"] for e in evals], [e.get("score", 0.0) for e in evals], "o-", color="tab:green",
                        label="eval score")  # fmt: skip
        score_axis.set_ylabel("eval score")
    rate_axis.plot(steps, [event["lr"] for event in train], color="tab:orange")
    rate_axis.set_xlabel("step")
    rate_axis.set_ylabel("learning rate")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    return buffer.getvalue()
