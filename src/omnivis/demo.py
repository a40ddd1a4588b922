"""The main job out of the box: one model, every task, on a bundled image, answers printed and drawn."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omnivis.draw import draw_result
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
    results: dict[str, Any] = {}
    for task in TASKS.values():
        given = example_input(task.input, *picture.size)
        started = time.perf_counter()
        answer = predictor.run(picture, task.token, given, num_beams=1, max_new_tokens=max_new_tokens, return_scores=True)
        seconds = time.perf_counter() - started
        draw_result(picture, task.token, answer).save(out / f"{task.token.strip('<>').lower()}.png")
        results[task.token] = {"input": given, "answer": answer[task.token], "seconds": round(seconds, 3)}
        print(f"{task.token:<36} {seconds:6.2f}s  {_summary(answer[task.token])}")
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str))
    print(f"drawings and results.json written to {out}/")
    return results


def _summary(answer: Any, width: int = 70) -> str:
    text = answer if isinstance(answer, str) else json.dumps(answer, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."
