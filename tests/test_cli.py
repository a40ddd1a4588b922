"""The `omnivis` command: answers as JSON, drawings, and one-line errors that leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnivis.cli import main


@pytest.fixture(scope="module")
def image_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
    return path


def test_predict_writes_json_and_a_drawing(image_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_json, out_png = tmp_path / "answer.json", tmp_path / "answer.png"
    code = main(["predict", str(image_path), "--model", "tiny", "--task", "<OD>", "--num-beams", "1",
                 "--max-new-tokens", "8", "--json", str(out_json), "--draw", str(out_png)])  # fmt: skip
    assert code == 0
    records = json.loads(out_json.read_text())
    assert records[0]["image"] == str(image_path) and "<OD>" in records[0]
    assert json.loads(capsys.readouterr().out) == records
    assert Image.open(out_png).size == (80, 60)


def test_region_flag(image_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["predict", str(image_path), "--model", "tiny", "--task", "<REGION_TO_CATEGORY>", "--region",
                 "5,5,40,30", "--num-beams", "1", "--max-new-tokens", "4"])  # fmt: skip
    assert code == 0
    assert "<REGION_TO_CATEGORY>" in json.loads(capsys.readouterr().out)[0]


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--task", "<NOPE>"], "unknown task"),
        (["--task", "<OD>", "--text", "cat"], "takes no input"),
        (["--task", "<REGION_TO_CATEGORY>", "--region", "0,0,9999,10"], "outside"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    image_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture, arguments: list[str], message: str
) -> None:
    out_json = tmp_path / "answer.json"
    code = main(["predict", str(image_path), "--model", "tiny", "--json", str(out_json), *arguments])
    error = capsys.readouterr().err
    assert code == 2 and message in error and error.count("\n") == 1 and "Traceback" not in error
    assert not out_json.exists()


def test_unreadable_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    assert main(["predict", str(broken), "--model", "tiny"]) == 2
    assert "broken.jpg" in capsys.readouterr().err


def test_tasks_lists_all_sixteen(capsys: pytest.CaptureFixture) -> None:
    assert main(["tasks"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 16
