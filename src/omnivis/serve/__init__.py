"""Serving over HTTP: any checkpoint omnivis loads, behind FastAPI with dynamic batching and a web page.

    omnivis serve --model models/omnivis-tiny-world --port 8000     # then open http://127.0.0.1:8000/

Layout: `batching` (requests -> batches, bounded queue, timeouts), `app` (routes, limits, errors),
`middleware` (the upload limit, request metrics), `metrics` (Prometheus), `schemas` (settings and response
shapes), `page/` (the browser page, plain HTML and JavaScript).
"""

from __future__ import annotations

from pathlib import Path

from omnivis.serve.app import create_app
from omnivis.serve.batching import BatchSettings, DecodeOptions, DynamicBatcher, Job
from omnivis.serve.schemas import ServeSettings

__all__ = ["BatchSettings", "DecodeOptions", "DynamicBatcher", "Job", "ServeSettings", "create_app", "serve"]

# How long a stopping server waits for requests in flight before it closes their connections.
GRACEFUL_SHUTDOWN_S = 30


def serve(
    model: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    device: str = "cpu",
    dtype: str | None = None,
) -> None:
    """Loads `model` and serves it until interrupted; on SIGINT/SIGTERM every accepted request is answered
    before the process ends.

    Raises:
        CheckpointError: The model does not load.
    """
    import uvicorn

    from omnivis.loading import load

    predictor = load(model, device=device, dtype=dtype)
    app = create_app(predictor, settings, model_name=str(model))
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, log_level="info")
