"""The HTTP API against a live server: every task answers as `Predictor.run` does, and every kind of bad input
is a clear 4xx after which the server answers the next request correctly."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import pytest
from live_server import SHORT, png_bytes
from PIL import Image

from omnivis.predictor import Predictor
from omnivis.tasks import TASKS

# Each task's input on the 256 x 256 world scene.
INPUTS: dict[str, str | tuple[float, float, float, float] | None] = {
    token: {"none": None, "text": "the red circle", "region": (40.0, 30.0, 180.0, 200.0)}[task.input]
    for token, task in TASKS.items()
}
INPUTS["<VQA>"] = "How many shapes are there?"


def _form(task: str, given: str | tuple[float, ...] | None, **extra: str) -> dict[str, str]:
    form = {"task": task, **extra}
    if isinstance(given, tuple):
        form["region"] = ",".join(str(value) for value in given)
    elif given is not None:
        form["text"] = given
    return form


def _post(url: str, image: bytes, form: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/predict", files={"image": ("image.png", image, "image/png")}, data=form, timeout=60
    )


def _assert_still_serving(url: str, predictor: Predictor) -> None:
    image = png_bytes(colour="blue")
    response = _post(url, image, {"task": "<CAPTION>"})
    assert response.status_code == 200
    assert response.json()["result"] == predictor.run(image, "<CAPTION>", **SHORT)


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_answers_exactly_as_run(
    server: str, predictor: Predictor, scene_png: Path, task: str
) -> None:
    image = scene_png.read_bytes()
    response = _post(server, image, _form(task, INPUTS[task]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == predictor.run(image, task, INPUTS[task], **SHORT)
    assert (body["task"], body["width"], body["height"], body["drawing"]) == (task, 256, 256, None)


def test_the_drawing_is_the_answer_drawn_on_the_image(server: str, scene_png: Path) -> None:
    response = _post(server, scene_png.read_bytes(), {"task": "<OD>", "draw": "true"})
    drawn = Image.open(io.BytesIO(base64.b64decode(response.json()["drawing"])))
    assert drawn.format == "PNG" and drawn.size[0] == 256


def test_scores_and_decoding_settings_reach_the_model(
    server: str, predictor: Predictor, scene_png: Path
) -> None:
    image = scene_png.read_bytes()
    form = {"task": "<OD>", "scores": "true", "num_beams": "2", "max_new_tokens": "9"}
    response = _post(server, image, form)
    assert response.json()["result"] == predictor.run(
        image, "<OD>", num_beams=2, max_new_tokens=9, return_scores=True
    )


def test_a_batch_request_answers_each_image_in_order(
    server: str, predictor: Predictor, scene_png: Path
) -> None:
    images = [scene_png.read_bytes(), png_bytes(colour="green"), png_bytes((40, 70), "yellow")]
    questions = ["How many circles are there?", "What colour is it?", "Is there text?"]
    files = [("images", (f"{index}.png", image, "image/png")) for index, image in enumerate(images)]
    response = httpx.post(
        f"{server}/v1/predict/batch",
        files=files,
        data={"task": "<VQA>", "inputs": json.dumps(questions)},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    expected = [
        predictor.run(image, "<VQA>", question, **SHORT) for image, question in zip(images, questions)
    ]
    assert [item["prediction"]["result"] for item in items] == expected
    assert [item["prediction"]["width"] for item in items] == [256, 96, 40]


def test_a_batch_of_regions_takes_pixel_boxes(server: str, predictor: Predictor, scene_png: Path) -> None:
    image = scene_png.read_bytes()
    files = [("images", ("a.png", image, "image/png")), ("images", ("b.png", image, "image/png"))]
    regions = [[10, 10, 100, 120], [50, 60, 250, 250]]
    response = httpx.post(
        f"{server}/v1/predict/batch", files=files, timeout=60,
        data={"task": "<REGION_TO_CATEGORY>", "inputs": json.dumps(regions)},
    )  # fmt: skip
    expected = [
        predictor.run(image, "<REGION_TO_CATEGORY>", tuple(map(float, box)), **SHORT) for box in regions
    ]
    assert [item["prediction"]["result"] for item in response.json()["items"]] == expected


def test_tasks_health_readiness_and_the_page(server: str) -> None:
    tasks = httpx.get(f"{server}/v1/tasks").json()
    assert [(entry["task"], entry["input"]) for entry in tasks] == [
        (t.token, t.input) for t in TASKS.values()
    ]
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok", "model": "tiny-64"}
    assert httpx.get(f"{server}/readyz").json() == {"status": "ready", "model": "tiny-64"}
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "<title>omnivis</title>" in page.text
    assert httpx.get(f"{server}/static/app.js").status_code == 200
    assert "/v1/predict" in httpx.get(f"{server}/openapi.json").json()["paths"]
    assert httpx.get(f"{server}/docs").status_code == 200


def test_metrics_count_requests_batches_and_queue_depth(server: str, scene_png: Path) -> None:
    before = httpx.get(f"{server}/metrics").text
    _post(server, scene_png.read_bytes(), {"task": "<CAPTION>"})
    _post(server, b"not an image", {"task": "<CAPTION>"})
    text = httpx.get(f"{server}/metrics").text

    def value(line_start: str, page: str) -> float:
        lines = [line for line in page.splitlines() if line.startswith(line_start)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    ok, bad = (
        'omnivis_requests_total{route="/v1/predict",status="200"}',
        'omnivis_requests_total{route="/v1/predict",status="400"}',
    )
    assert value(ok, text) == value(ok, before) + 1 and value(bad, text) == value(bad, before) + 1
    assert value("omnivis_batch_size_count", text) >= value("omnivis_batch_size_count", before) + 1
    assert value("omnivis_queue_depth", text) == 0.0
    assert 'omnivis_request_seconds_bucket{le="0.005",route="/v1/predict"}' in text


BAD_REQUESTS = {
    "undecodable image": (
        b"GIF89a this is not really an image",
        {"task": "<OD>"},
        400,
        "not a readable image",
    ),
    "empty image": (b"", {"task": "<OD>"}, 400, "is empty"),
    "too many pixels": (png_bytes((1500, 1000), mode="L"), {"task": "<OD>"}, 400, "pixels"),
    "unknown task": (
        png_bytes(),
        {"task": "<SEGMENT_EVERYTHING>"},
        422,
        "task: Input should be '<OCR>', ",
    ),
    "missing text": (png_bytes(), {"task": "<VQA>"}, 422, "task <VQA> needs input text"),
    "missing region": (png_bytes(), {"task": "<REGION_TO_OCR>"}, 422, "needs a region"),
    "region outside": (png_bytes(), {"task": "<REGION_TO_OCR>", "region": "0,0,500,20"}, 422, "region"),
    "malformed region": (
        png_bytes(),
        {"task": "<REGION_TO_OCR>", "region": "1,2,three"},
        422,
        "four finite numbers",
    ),
    "text and region": (png_bytes(), {"task": "<VQA>", "text": "a", "region": "1,2,3,4"}, 422, "not both"),
    "input to a plain task": (png_bytes(), {"task": "<OD>", "text": "cats"}, 422, "takes no input"),
    "too many beams": (png_bytes(), {"task": "<OD>", "num_beams": "9"}, 422, "num_beams must be 1 to 2"),
    "too long answers": (
        png_bytes(),
        {"task": "<OD>", "max_new_tokens": "100"},
        422,
        "max_new_tokens must be",
    ),
    "no task": (png_bytes(), {}, 422, "task: Field required"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(
    server: str, predictor: Predictor, case: str
) -> None:
    image, form, status, message = BAD_REQUESTS[case]
    response = _post(server, image, form)
    assert response.status_code == status, response.text
    assert message in json.dumps(response.json()["detail"])
    _assert_still_serving(server, predictor)


def test_an_upload_over_the_limit_is_413(server: str, predictor: Predictor) -> None:
    response = _post(server, b"\x89PNG" + bytes(2**20), {"task": "<OD>"})
    assert response.status_code == 413
    assert "larger than the limit of 1048576 bytes" in response.json()["detail"]
    # Without a Content-Length (chunked), the limit holds while the body streams in.
    chunks = (bytes(64 * 1024) for _ in range(20))
    response = httpx.post(
        f"{server}/v1/predict", content=chunks, headers={"content-type": "multipart/form-data"}
    )
    assert response.status_code == 413
    _assert_still_serving(server, predictor)


def test_bad_batch_requests(server: str) -> None:
    image = ("a.png", png_bytes(), "image/png")
    cases = [
        ({"task": "<VQA>", "inputs": "[1, 2"}, [image], "inputs must be a JSON list"),
        ({"task": "<VQA>", "inputs": '["a", "b"]'}, [image], "one entry per image (1)"),
        ({"task": "<VQA>", "inputs": "[{}]"}, [image], "a string, a list of four numbers or null"),
        ({"task": "<OD>"}, [image] * 17, "send 1 to 16 images, got 17"),
    ]
    for form, images, message in cases:
        response = httpx.post(
            f"{server}/v1/predict/batch", files=[("images", item) for item in images], data=form, timeout=60
        )
        assert response.status_code == 422 and message in response.json()["detail"], response.text
