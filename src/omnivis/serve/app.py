"""The HTTP API: FastAPI routes over one `Predictor`, with dynamic batching, limits and metrics.

    app = create_app(omnivis.load("models/omnivis-tiny-world"), ServeSettings())
    uvicorn.run(app, host="127.0.0.1", port=8000)      # or: omnivis serve --model models/omnivis-tiny-world

Routes: `POST /v1/predict` (one uploaded image, a task, its input), `POST /v1/predict/batch` (several images,
one task), `GET /v1/tasks`, `GET /healthz` (alive), `GET /readyz` (taking requests), `GET /metrics`
(Prometheus), `GET /` (the page), `/docs` (OpenAPI). Images come only as uploads: the server fetches nothing.
Bad input is always a 4xx naming the problem: 400 for an image that cannot be used, 413 for an upload over
the limit, 422 for a bad task or input; 503 (with Retry-After) when the queue is full; 504 on timeout. A 500
means the model itself failed on that one request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import io
import json
import math
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

import omnivis
from omnivis.draw import draw_result
from omnivis.errors import ImageError, InputError, OmnivisError
from omnivis.images import load_image
from omnivis.predictor import Predictor, Region
from omnivis.serve.batching import (
    DecodeOptions,
    DynamicBatcher,
    Job,
    ModelError,
    QueueFullError,
    RequestTimeoutError,
    ShuttingDownError,
)
from omnivis.serve.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from omnivis.serve.middleware import RequestMetrics, UploadLimit
from omnivis.serve.schemas import (
    BatchItem,
    BatchPrediction,
    ErrorBody,
    Health,
    Prediction,
    ServeSettings,
    TaskInfo,
)
from omnivis.tasks import TASKS, build_prompt

# The task prompts as an enum, so the OpenAPI spec (and /docs) lists the choices.
TaskName = enum.Enum("TaskName", {token: token for token in TASKS}, type=str)  # type: ignore[misc]
ROUTES = frozenset(
    {
        "/",
        "/v1/predict",
        "/v1/predict/batch",
        "/v1/tasks",
        "/healthz",
        "/readyz",
        "/metrics",
        "/docs",
        "/openapi.json",
    }
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "the image cannot be decoded, or has too many pixels"),
        (408, "the upload stalled"),
        (413, "the upload is larger than the limit"),
        (422, "an unknown task, or a missing or invalid input"),
        (500, "the model failed on this request"),
        (503, "the queue is full or the server is stopping; retry after Retry-After seconds"),
        (504, "no answer within the time limit"),
    )
}


def create_app(
    predictor: Predictor, settings: ServeSettings | None = None, *, model_name: str = ""
) -> FastAPI:
    """The ASGI app serving `predictor` (put in eval mode: a server never trains); its batcher starts and
    stops with the app's lifespan."""
    settings = settings or ServeSettings()
    predictor.model.eval()

    def run_batch(
        images: Sequence[Image.Image], task: str, texts: Sequence[Any], options: DecodeOptions
    ) -> Any:
        return predictor.run_batch(
            images, task, texts, options.num_beams, options.max_new_tokens, options.return_scores
        )

    metrics = ServerMetrics.create()
    batcher = DynamicBatcher(run_batch, settings.batching, on_batch=metrics.observe_batch)
    metrics.watch_queue(lambda: batcher.queue_depth)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()  # uvicorn has stopped accepting; every accepted request is answered first

    app = FastAPI(
        title="omnivis", version=omnivis.__version__, lifespan=lifespan,
        description="Prompt-driven vision: one model, every task. Upload an image, name a task, get its answer.",
    )  # fmt: skip
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings
    _add_error_handlers(app, settings)
    _add_info_routes(app, batcher, metrics, model_name)
    _add_predict_routes(app, batcher, settings)
    app.mount("/static", StaticFiles(directory=str(resources.files("omnivis.serve") / "page")), name="static")
    app.add_middleware(
        UploadLimit, max_bytes=settings.max_upload_bytes, read_timeout_s=settings.read_timeout_s
    )
    app.add_middleware(RequestMetrics, metrics=metrics, routes=ROUTES)
    return app


def _add_info_routes(app: FastAPI, batcher: DynamicBatcher, metrics: ServerMetrics, model_name: str) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(
            (resources.files("omnivis.serve") / "page" / "index.html").read_text(encoding="utf-8")
        )

    @app.get("/v1/tasks", response_model=list[TaskInfo])
    async def tasks() -> list[TaskInfo]:
        """Every task prompt, with the input it takes (none, text or region)."""
        return [TaskInfo(task=t.token, input=t.input, description=t.description) for t in TASKS.values()]

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """The process is alive."""
        return Health(status="ok", model=model_name or None)

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    async def readyz() -> Response:
        """The model is loaded and requests are taken (503 while starting or stopping)."""
        if batcher.accepting:
            return JSONResponse(Health(status="ready", model=model_name or None).model_dump())
        return JSONResponse(Health(status="not ready").model_dump(), status_code=503)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics_text() -> Response:
        """Request counts, latencies, batch sizes and queue depth, in Prometheus' text format."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _add_predict_routes(app: FastAPI, batcher: DynamicBatcher, settings: ServeSettings) -> None:
    @app.post("/v1/predict", response_model=Prediction, responses=_ERRORS)
    async def predict(
        image: Annotated[UploadFile, File(description="the image (PNG, JPEG, WebP, ...)")],
        task: Annotated[TaskName, Form(description="a task prompt from /v1/tasks, e.g. <OD>")],
        text: Annotated[str | None, Form(description="the phrase or question of a text task")] = None,
        region: Annotated[str | None, Form(description="x0,y0,x1,y1 in pixels, for region tasks")] = None,
        draw: Annotated[bool, Form(description="also return the answer drawn on the image")] = False,
        scores: Annotated[bool, Form(description="add per-box scores")] = False,
        num_beams: Annotated[int | None, Form(description="beam width (default: the server's)")] = None,
        max_new_tokens: Annotated[int | None, Form(description="longest answer in tokens")] = None,
    ) -> Prediction:
        """Answers one task on one uploaded image; `result` is exactly what `omnivis predict` gives."""
        options = _decode_options(settings, num_beams, max_new_tokens, scores)
        picture = await _read_image(image, settings)
        task_input = _task_input(task.value, text, region, picture.size)
        answer = await _answer(batcher, Job(picture, task.value, task_input, options))
        return await _prediction(picture, task.value, answer, draw)

    @app.post("/v1/predict/batch", response_model=BatchPrediction, responses=_ERRORS)
    async def predict_batch(
        images: Annotated[list[UploadFile], File(description="the images, one task for all")],
        task: Annotated[TaskName, Form(description="a task prompt from /v1/tasks")],
        inputs: Annotated[
            str | None, Form(description="a JSON list, one input per image: a string, [x0,y0,x1,y1] or null")
        ] = None,
        draw: Annotated[bool, Form()] = False,
        scores: Annotated[bool, Form()] = False,
        num_beams: Annotated[int | None, Form()] = None,
        max_new_tokens: Annotated[int | None, Form()] = None,
    ) -> BatchPrediction:
        """One task on several images; each image gets its answer, or its own error, in order."""
        options = _decode_options(settings, num_beams, max_new_tokens, scores)
        if not 1 <= len(images) <= settings.batching.max_batch:
            raise InputError(f"send 1 to {settings.batching.max_batch} images, got {len(images)}")
        given = _batch_inputs(inputs, len(images))
        pictures = [await _read_image(image, settings) for image in images]
        jobs = [
            Job(picture, task.value, _batch_input(task.value, item, picture.size), options)
            for picture, item in zip(pictures, given, strict=True)
        ]
        if batcher.queue_depth + len(jobs) > settings.batching.max_queue:
            raise QueueFullError(f"the queue cannot take {len(jobs)} more requests now; retry shortly")
        answers = await asyncio.gather(*(_answer(batcher, job) for job in jobs), return_exceptions=True)
        items = []
        for picture, answer in zip(pictures, answers, strict=True):
            if isinstance(answer, BaseException):
                items.append(BatchItem(error=str(answer), status=_status_of(answer)))
            else:
                items.append(
                    BatchItem(
                        prediction=await _prediction(picture, task.value, answer, draw),
                        error=None,
                        status=200,
                    )
                )
        return BatchPrediction(items=items)


def _decode_options(
    settings: ServeSettings, num_beams: int | None, max_new_tokens: int | None, scores: bool
) -> DecodeOptions:
    beams = settings.num_beams if num_beams is None else num_beams
    tokens = settings.max_new_tokens if max_new_tokens is None else max_new_tokens
    if not 1 <= beams <= settings.max_beams:
        raise InputError(f"num_beams must be 1 to {settings.max_beams}, got {beams}")
    if not 1 <= tokens <= settings.max_tokens_limit:
        raise InputError(f"max_new_tokens must be 1 to {settings.max_tokens_limit}, got {tokens}")
    return DecodeOptions(num_beams=beams, max_new_tokens=tokens, return_scores=scores)


async def _read_image(upload: UploadFile, settings: ServeSettings) -> Image.Image:
    data = await upload.read()
    if not data:
        raise ImageError(f"the uploaded image {upload.filename!r} is empty")
    return await run_in_threadpool(load_image, data, max_pixels=settings.max_pixels)


def _task_input(
    task: str, text: str | None, region: str | None, size: tuple[int, int]
) -> str | Region | None:
    """The task's input from the form, checked by building its prompt (InputError names the problem)."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    if text is not None and region is not None:
        raise InputError("give either text or region, not both")
    given: str | Region | None = _parse_region(region) if region is not None else text
    if TASKS[task].input == "none" and given == "":
        given = None  # an empty form field is no input
    build_prompt(task, given, image_size=size)
    return given


def _parse_region(region: str) -> Region:
    try:
        values = json.loads(region) if region.strip().startswith("[") else region.split(",")
        numbers = [float(value) for value in values]
    except (ValueError, TypeError):
        numbers = []
    if len(numbers) != 4 or not all(math.isfinite(number) for number in numbers):
        raise InputError(f"region must be four finite numbers x0,y0,x1,y1 in pixels, got {region!r}")
    return (numbers[0], numbers[1], numbers[2], numbers[3])


def _batch_inputs(inputs: str | None, count: int) -> list[Any]:
    if inputs is None:
        return [None] * count
    try:
        given = json.loads(inputs)
    except json.JSONDecodeError as error:
        raise InputError(f"inputs must be a JSON list: {error}") from error
    if not isinstance(given, list) or len(given) != count:
        raise InputError(f"inputs must be a JSON list with one entry per image ({count}), got {inputs!r}")
    return given


def _batch_input(task: str, item: Any, size: tuple[int, int]) -> str | Region | None:
    if isinstance(item, list):
        return _task_input(task, None, json.dumps(item), size)
    if item is not None and not isinstance(item, str):
        raise InputError(f"each input must be a string, a list of four numbers or null, got {item!r}")
    return _task_input(task, item, None, size)


async def _answer(batcher: DynamicBatcher, job: Job) -> dict[str, Any]:
    """The job's answer; a failure of the model itself becomes a `ModelError` (HTTP 500, JSON)."""
    try:
        return await batcher.submit(job)
    except (OmnivisError, asyncio.CancelledError):
        raise
    except Exception as error:
        raise ModelError(f"{type(error).__name__}: {error}") from error


async def _prediction(picture: Image.Image, task: str, answer: dict[str, Any], draw: bool) -> Prediction:
    drawing = await run_in_threadpool(_png_base64, picture, task, answer) if draw else None
    width, height = picture.size
    return Prediction(task=task, width=width, height=height, result=answer, drawing=drawing)


def _png_base64(picture: Image.Image, task: str, answer: dict[str, Any]) -> str:
    buffer = io.BytesIO()
    draw_result(picture, task, answer).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _status_of(error: BaseException) -> int:
    if isinstance(error, ImageError):
        return 400
    if isinstance(error, InputError):
        return 422
    if isinstance(error, (QueueFullError, ShuttingDownError)):
        return 503
    if isinstance(error, RequestTimeoutError):
        return 504
    return 500


def _add_error_handlers(app: FastAPI, settings: ServeSettings) -> None:
    retry = {"Retry-After": str(settings.retry_after_s)}

    async def handle(_: Request, error: Exception) -> JSONResponse:
        status = _status_of(error)
        headers = retry if status == 503 else None
        detail = str(error) if status != 500 else f"the model failed on this request: {error}"
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    async def handle_invalid(_: Request, error: Exception) -> JSONResponse:
        # FastAPI's own form checks, as one readable sentence like every other error here.
        assert isinstance(error, RequestValidationError)
        problems = [
            f"{'.'.join(str(part) for part in e['loc'][1:]) or 'body'}: {e['msg']}" for e in error.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    for kind in (InputError, QueueFullError, ShuttingDownError, RequestTimeoutError, ModelError):
        app.add_exception_handler(kind, handle)
    app.add_exception_handler(RequestValidationError, handle_invalid)
