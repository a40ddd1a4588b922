"""The HTTP API's settings and response shapes (pydantic models, so `/docs` and the OpenAPI spec show them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from omnivis.serve.batching import BatchSettings


@dataclass(frozen=True)
class ServeSettings:
    """Everything `omnivis serve` can be told, each with the reason for its default."""

    batching: BatchSettings = field(default_factory=BatchSettings)
    max_upload_bytes: int = 20 * 2**20  # a 20 MiB request body at most (413 beyond): photos, not archives
    max_pixels: int = 2**25  # ~33.5 M pixels at most (400 beyond): stops decompression bombs before decoding
    read_timeout_s: float = 30.0  # a client silent this long mid-upload gets 408 and frees its slot
    retry_after_s: int = 1  # what a 503 tells the client to wait
    num_beams: int = 3  # default beam width, as `Predictor.run` and the official examples
    max_new_tokens: int = 1024  # default answer length limit, as `Predictor.run`
    max_beams: int = 8  # a request may ask for at most this many beams
    max_tokens_limit: int = 4096  # ... and at most this many new tokens


class TaskInfo(BaseModel):
    task: str = Field(description="the task prompt, e.g. <OD>")
    input: str = Field(description="the input the task takes: none, text or region")
    description: str


class Prediction(BaseModel):
    """One image's answer: `result` is exactly what `omnivis predict` / `Predictor.run` gives."""

    task: str
    width: int = Field(description="the image's width in pixels; coordinates in the result are pixels")
    height: int
    result: dict[str, Any] = Field(description="{task: answer}, as Predictor.run returns it")
    drawing: str | None = Field(None, description="the answer drawn on the image, a base64 PNG, when asked")


class BatchItem(BaseModel):
    """One image of a batch request: its prediction, or why it has none."""

    prediction: Prediction | None = None
    error: str | None = Field(None, description="set when this image alone failed")
    status: int = Field(200, description="the HTTP status this image would have had alone")


class BatchPrediction(BaseModel):
    items: list[BatchItem]


class Health(BaseModel):
    status: str
    model: str | None = None


class ErrorBody(BaseModel):
    detail: str
