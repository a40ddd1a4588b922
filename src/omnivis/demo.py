"""The main job out of the box: one model, every task, on a bundled image, answers printed and drawn."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omnivis.draw import draw_result, save_png
from omnivis.images import load_image
from omnivis.io import atomic_write_text
from omnivis.loading import load
from omnivis.tasks import TASKS

SAMPLE_IMAGE = Path(__file__).parent / "assets" / "sample.png"


def example_input(task_input: str, width: int, height: int) -> str | tuple[float, float, float, float] | None:
    """A plausible input for a task on the sample image: a phrase, or the central region."""
    if task_input == "text":
        return "a red circle"
    if task_input == "region":
        return (width * 0.25, height * 0.25, width * 0.75, height * 0.75)
    return None


def run_demo(
    out_dir: str | Path, model: str = "tiny", image: str | Path | None = None, max_new_tokens: int = 48
) -> dict[str, Any]:
    """Runs every task once, writes `<task>.png` drawings and `results.json` to `out_dir`, prints a summary.

    Until a trained checkpoint ships, the default `tiny` preset is randomly initialised: its answers are
    noise, but every step from image to drawn, structured answer runs for real.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictor = load(model)
    picture = load_image(image or SAMPLE_IMAGE)
    inputs = {task.token: example_input(task.input, *picture.size) for task in TASKS.values()}
    started = time.perf_counter()
    # One pass of the vision tower serves every task; the prompts decode as one batch.
    answers = predictor.run_tasks(picture, inputs, num_beams=1, max_new_tokens=max_new_tokens, return_scores=True)
    seconds = time.perf_counter() - started
    results: dict[str, Any] = {}
    for task, answer in answers.items():
        save_png(draw_result(picture, task, {task: answer}), out / f"{task.strip('<>').lower()}.png")
        results[task] = {"input": inputs[task], "answer": answer}
        print(f"{task:<36} {_summary(answer)}")
    print(f"{len(answers)} tasks answered in {seconds:.2f} s")
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str))
    print(f"drawings and results.json written to {out}/")
    return results


def _summary(answer: Any, width: int = 70) -> str:
    text = answer if isinstance(answer, str) else json.dumps(answer, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."
