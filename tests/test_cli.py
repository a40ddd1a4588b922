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


def test_predict_writes_json_and_a_drawing(
    image_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
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


def test_data_commands_make_inspect_export_and_import(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    world = tmp_path / "world"
    assert main(["data", "make-world", str(world), "--n", "6", "--seed", "2", "--variant", "hard"]) == 0
    assert "6 scenes in 1 shards" in capsys.readouterr().out
    assert main(["data", "stats", str(world), "--samples", "1"]) == 0
    printed = capsys.readouterr().out
    assert "<REFERRING_EXPRESSION_SEGMENTATION>" in printed and "6 records" in printed
    assert (tmp_path / "world-stats" / "stats.json").is_file()
    coco_json = tmp_path / "coco.json"
    assert main(["data", "export-coco", str(world), "--out", str(coco_json)]) == 0
    capsys.readouterr()
    again = tmp_path / "again"
    images = tmp_path / "coco_images"
    assert main(["data", "import-coco", str(coco_json), "--images", str(images), "--out", str(again)]) == 0
    assert "6 records written" in capsys.readouterr().out


def _corrupt_world(tmp_path: Path) -> Path:
    world = tmp_path / "corrupt"
    assert main(["data", "make-world", str(world), "--n", "2"]) == 0
    shard = world / "shard-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    return world


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["make-world", "{tmp}/w", "--n", "2", "--variant", "medium"], "unknown world variant 'medium'"),
        (["stats", "{tmp}/missing"], "missing"),
        (["stats", "{corrupt}"], "shard-00000.parquet"),
        (["import-coco", "{tmp}/nothing.json", "--images", "{tmp}", "--out", "{tmp}/d"], "nothing.json"),
        (["export-coco", "{corrupt}", "--out", "{tmp}/c.json"], "shard-00000.parquet"),
    ],
)
def test_data_errors_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, arguments: list[str], message: str
) -> None:
    corrupt = _corrupt_world(tmp_path) if "{corrupt}" in arguments else None
    before = sorted(tmp_path.rglob("*"))
    filled = [argument.format(tmp=tmp_path, corrupt=corrupt) for argument in arguments]
    capsys.readouterr()
    assert main(["data", *filled]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and "Traceback" not in error
    assert sorted(tmp_path.rglob("*")) == before


def test_skip_bad_reads_past_a_corrupt_shard_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    world = tmp_path / "world"
    assert main(["data", "make-world", str(world), "--n", "4", "--shard-size", "2", "--workers", "1"]) == 0
    shard = world / "shard-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    capsys.readouterr()
    assert main(["data", "stats", str(world), "--skip-bad", "--out", str(tmp_path / "stats")]) == 0
    printed = capsys.readouterr().out
    assert "2 records" in printed and printed.count("skipped: ") == 2 and "shard-00001.parquet" in printed
    assert main(["data", "export-coco", str(world), "--out", str(tmp_path / "c.json"), "--skip-bad"]) == 0
    assert "(2 records skipped)" in capsys.readouterr().out


def test_eval_scores_a_predictions_file_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from omnivis.eval.evaluation import collect_queries
    from omnivis.eval.predictions import Prediction
    from omnivis.world import generate

    assert (
        main(["data", "make-world", str(tmp_path / "world"), "--n", "3", "--seed", "5", "--workers", "1"])
        == 0
    )
    records = list(generate(3, 5))
    queries = collect_queries(records, ["<OD>", "<VQA>"]).queries
    lines = [
        Prediction(q.image_id, q.task, q.input, q.answer).to_json() for task in queries.values() for q in task
    ]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    capsys.readouterr()
    code = main(
        [
            "eval",
            "--predictions",
            str(predictions),
            "--data",
            str(tmp_path / "world"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "<OD>" in printed and "<VQA>" in printed and "accuracy" in printed
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["<VQA>"]["accuracy"] == 1.0 and metrics["<OD>"]["AP50"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "report.html").is_file()


def test_eval_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(["data", "make-world", str(tmp_path / "world"), "--n", "2", "--seed", "5", "--workers", "1"])
        == 0
    )
    capsys.readouterr()
    code = main(["eval", "--predictions", str(tmp_path / "none.jsonl"), "--data", str(tmp_path / "world"),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "none.jsonl" in error
    assert not (tmp_path / "out").exists()


def test_serve_answers_over_http_and_stops_cleanly_on_sigterm(image_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "omnivis",
        "serve",
        "--model",
        "tiny",
        "--port",
        str(port),
        "--max-batch",
        "4",
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        files = {"image": ("scene.png", image_path.read_bytes(), "image/png")}
        form = {"task": "<CAPTION>", "num_beams": "1", "max_new_tokens": "4"}
        response = httpx.post(f"{url}/v1/predict", files=files, data=form, timeout=60)
        assert response.status_code == 200 and (response.json()["width"], response.json()["height"]) == (
            80,
            60,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    # uvicorn finishes its shutdown, then ends by the signal it caught, as an unhandled SIGTERM would.
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output and "Finished server process" in output


def test_serve_refuses_bad_settings_in_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", "--model", "tiny", "--max-batch", "0", "--max-queue", "0"]) == 2
    error = capsys.readouterr().err
    assert error == (
        "omnivis: error: batch settings: max_batch must be an integer >= 1, got 0; "
        "max_queue must be an integer >= 1, got 0\n"
    )
