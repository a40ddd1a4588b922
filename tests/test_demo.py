"""`omnivis demo` (what `make demo` runs): every task answered, drawn and recorded."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from omnivis.demo import SAMPLE_IMAGE, run_demo
from omnivis.tasks import TASKS


def test_demo_answers_and_draws_every_task(tmp_path: Path, capsys) -> None:
    results = run_demo(tmp_path, max_new_tokens=6)
    assert list(results) == list(TASKS)
    recorded = json.loads((tmp_path / "results.json").read_text())
    assert list(recorded) == list(TASKS)
    size = Image.open(SAMPLE_IMAGE).size
    for task in TASKS:
        assert Image.open(tmp_path / f"{task.strip('<>').lower()}.png").size[0] == size[0]
    printed = capsys.readouterr().out
    assert all(task in printed for task in TASKS)
