"""Faults a live server must survive: a client that disconnects mid-upload, a slow client, a flood beyond the
queue bound, a model error on one request of a batch, a shutdown with requests in flight. After each, the
server answers the next request correctly."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import httpx
from live_server import SHORT, live_server, png_bytes, settings

from omnivis.predictor import Predictor

BROKEN_SIZE = (13, 13)  # an image of this size makes the model fail (fault injection)


class FaultyPredictor:
    """The real predictor behind a model call that takes `delay_s` longer and fails on 13 x 13 images."""

    def __init__(self, predictor: Predictor, delay_s: float = 0.0) -> None:
        self.predictor, self.model, self.delay_s = predictor, predictor.model, delay_s

    def run_batch(self, images: Sequence[Any], task: str, texts: Any, *options: Any) -> list[dict[str, Any]]:
        time.sleep(self.delay_s)
        if any(image.size == BROKEN_SIZE for image in images):
            raise RuntimeError("the model broke on a 13 x 13 image")
        return self.predictor.run_batch(images, task, texts, *options)


def _post(url: str, image: bytes, task: str = "<CAPTION>") -> httpx.Response:
    files = {"image": ("image.png", image, "image/png")}
    return httpx.post(f"{url}/v1/predict", files=files, data={"task": task}, timeout=60)


def _assert_still_serving(url: str, predictor: Predictor) -> None:
    image = png_bytes(colour="purple")
    response = _post(url, image)
    assert response.status_code == 200
    assert response.json()["result"] == predictor.run(image, "<CAPTION>", **SHORT)


def _multipart(image: bytes, task: str = "<CAPTION>") -> tuple[bytes, str]:
    request = httpx.Request(
        "POST", "http://x/", files={"image": ("a.png", image, "image/png")}, data={"task": task}
    )
    return request.read(), request.headers["content-type"]


def _raw_request(
    url: str, body: bytes, content_type: str, declared: int | None = None
) -> tuple[socket.socket, bytes]:
    address = urllib.parse.urlsplit(url)
    connection = socket.create_connection((address.hostname, address.port), timeout=30)
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {declared if declared is not None else len(body)}\r\n\r\n"
    )
    return connection, head.encode()


def _read_response(connection: socket.socket) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of one HTTP/1.1 response read off a raw connection."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        body += connection.recv(65536)
    return int(lines[0].split()[1]), json.loads(body)


def test_a_client_that_disconnects_mid_upload(server: str, predictor: Predictor) -> None:
    body, content_type = _multipart(png_bytes((200, 200), "orange"))
    for _ in range(3):
        connection, head = _raw_request(server, body, content_type)
        connection.sendall(head + body[: len(body) // 2])
        connection.close()
    _assert_still_serving(server, predictor)


def test_a_slow_client_is_answered_and_a_stalled_one_gets_408(server: str, predictor: Predictor) -> None:
    image = png_bytes((120, 90), "teal")
    body, content_type = _multipart(image)
    connection, head = _raw_request(server, body, content_type)
    connection.sendall(head)
    for start in range(0, len(body), 64):  # a trickle: 64 bytes every 10 ms
        connection.sendall(body[start : start + 64])
        time.sleep(0.01)
    status, answer = _read_response(connection)
    connection.close()
    assert (status, answer["result"]) == (200, predictor.run(image, "<CAPTION>", **SHORT))
    connection, head = _raw_request(server, body, content_type)
    connection.sendall(head + body[:100])  # ... then silence, beyond the 2 s read limit of the test server
    status, answer = _read_response(connection)
    connection.close()
    assert (status, answer) == (408, {"detail": "the upload stalled for 2 s"})
    _assert_still_serving(server, predictor)


def test_a_flood_beyond_the_queue_is_refused_with_503_and_none_is_lost(predictor: Predictor) -> None:
    slow = FaultyPredictor(predictor, delay_s=0.05)
    images = [png_bytes((30 + index, 40), "navy") for index in range(40)]
    with live_server(slow, settings(max_batch=2, max_queue=4, max_wait_ms=1)) as url:  # type: ignore[arg-type]
        with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
            responses = list(pool.map(lambda image: _post(url, image), images))
        statuses = [response.status_code for response in responses]
        assert set(statuses) == {200, 503}, statuses
        for image, response in zip(images, responses, strict=True):
            if response.status_code == 503:
                assert response.headers["retry-after"] == "1"
                assert "queue is full" in response.json()["detail"]
            else:
                assert response.json()["result"] == predictor.run(image, "<CAPTION>", **SHORT)
        _assert_still_serving(url, predictor)


def test_a_model_error_fails_only_its_own_request(predictor: Predictor) -> None:
    faulty = FaultyPredictor(predictor)
    images = [png_bytes((50, 40), "gray"), png_bytes(BROKEN_SIZE), png_bytes((60, 30), "pink")]
    with live_server(faulty, settings(max_batch=8, max_wait_ms=300)) as url:  # type: ignore[arg-type]
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            responses = list(pool.map(lambda image: _post(url, image), images))
        assert [response.status_code for response in responses] == [200, 500, 200]
        assert responses[1].json() == {
            "detail": "the model failed on this request: RuntimeError: the model broke on a 13 x 13 image"
        }
        for index in (0, 2):
            assert responses[index].json()["result"] == predictor.run(images[index], "<CAPTION>", **SHORT)
        _assert_still_serving(url, predictor)


def test_shutdown_answers_the_requests_in_flight(predictor: Predictor) -> None:
    slow = FaultyPredictor(predictor, delay_s=0.3)
    images = [png_bytes((40, 40 + index), "olive") for index in range(4)]
    responses: list[httpx.Response] = []
    with live_server(slow, settings(max_batch=2, max_wait_ms=1)) as url:  # type: ignore[arg-type]
        threads = [
            threading.Thread(target=lambda image=image: responses.append(_post(url, image)))
            for image in images
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.15)  # every request is accepted; the first batch is in the model
    # Leaving the block stopped the server; it waited for the requests in flight.
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(response.status_code for response in responses) == [200] * 4
