"""A live omnivis server on 127.0.0.1 (uvicorn in a thread) for the serving tests and the page tests."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from PIL import Image

from omnivis.predictor import Predictor
from omnivis.serve import BatchSettings, ServeSettings, create_app

# Answers of at most 6 tokens from one beam: each request costs milliseconds on a CPU.
SHORT = {"num_beams": 1, "max_new_tokens": 6}


def settings(**batching: float) -> ServeSettings:
    """Server settings for the tests: short answers, and the batching knobs given."""
    return ServeSettings(
        batching=BatchSettings(**batching),  # type: ignore[arg-type]
        num_beams=SHORT["num_beams"],
        max_new_tokens=SHORT["max_new_tokens"],
        max_tokens_limit=12,
        max_beams=2,
        max_upload_bytes=2**20,
        max_pixels=2**20,
        read_timeout_s=2.0,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def live_server(predictor: Predictor, serve_settings: ServeSettings) -> Iterator[str]:
    """Serves `predictor` on a free port of 127.0.0.1 until the block ends; yields the base URL."""
    app = create_app(predictor, serve_settings, model_name="tiny-64")
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=free_port(), log_level="warning", timeout_graceful_shutdown=10
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def png_bytes(size: tuple[int, int] = (96, 80), colour: str = "red", mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()
