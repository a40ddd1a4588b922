"""The dynamic batcher over the real model: batches form by task up to max_batch, the queue is bounded, a
request that breaks the model fails alone, and stopping answers every accepted request first."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from live_server import SHORT
from PIL import Image

from omnivis.errors import InputError
from omnivis.predictor import Predictor
from omnivis.serve.batching import (
    BatchSettings,
    DecodeOptions,
    DynamicBatcher,
    Job,
    QueueFullError,
    RequestTimeoutError,
    ShuttingDownError,
)

OPTIONS = DecodeOptions(num_beams=SHORT["num_beams"], max_new_tokens=SHORT["max_new_tokens"])
# An image of this size makes the model fail (fault injection for one request of a batch).
BROKEN_SIZE = (13, 13)


class Model:
    """The real predictor's batch call, recording each batch's task and size, optionally held or failing."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.batches: list[tuple[str, int]] = []
        self.release = threading.Event()
        self.release.set()
        self.called = threading.Event()  # set when a batch reaches the model

    def __call__(
        self, images: Sequence[Image.Image], task: str, texts: Sequence[Any], options: DecodeOptions
    ) -> list[dict[str, Any]]:
        self.called.set()
        self.release.wait(timeout=30)
        self.batches.append((task, len(images)))
        if any(image.size == BROKEN_SIZE for image in images):
            raise RuntimeError("the model broke on a 13 x 13 image")
        return self.predictor.run_batch(images, task, texts, options.num_beams, options.max_new_tokens)


def _images(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (40 + 7 * index, 50), (30 * index % 256, 90, 200)) for index in range(count)]


async def _with_batcher(model: Model, settings: BatchSettings, body: Any) -> Any:
    batcher = DynamicBatcher(model, settings)
    await batcher.start()
    try:
        return await body(batcher)
    finally:
        model.release.set()
        await batcher.stop()


def test_concurrent_requests_of_a_task_run_in_batches_of_at_most_max_batch(predictor: Predictor) -> None:
    model, images = Model(predictor), _images(10)

    async def body(batcher: DynamicBatcher) -> list[dict[str, Any]]:
        return await asyncio.gather(
            *(batcher.submit(Job(image, "<CAPTION>", None, OPTIONS)) for image in images)
        )

    answers = asyncio.run(_with_batcher(model, BatchSettings(max_batch=4, max_wait_ms=500), body))
    assert model.batches == [("<CAPTION>", 4), ("<CAPTION>", 4), ("<CAPTION>", 2)]
    assert answers == [predictor.run(image, "<CAPTION>", **SHORT) for image in images]


def test_tasks_and_decoding_settings_never_share_a_batch(predictor: Predictor) -> None:
    model, images = Model(predictor), _images(3)
    longer = DecodeOptions(num_beams=1, max_new_tokens=3)
    jobs = [Job(image, task, None, options) for image in images for task, options in
            (("<OD>", OPTIONS), ("<CAPTION>", OPTIONS), ("<CAPTION>", longer))]  # fmt: skip

    async def body(batcher: DynamicBatcher) -> list[dict[str, Any]]:
        return await asyncio.gather(*(batcher.submit(job) for job in jobs))

    answers = asyncio.run(_with_batcher(model, BatchSettings(max_batch=8, max_wait_ms=300), body))
    assert sorted(model.batches) == [("<CAPTION>", 3), ("<CAPTION>", 3), ("<OD>", 3)]
    expected = [
        predictor.run(job.image, job.task, num_beams=1, max_new_tokens=job.options.max_new_tokens)
        for job in jobs
    ]
    assert answers == expected


def test_a_request_that_breaks_the_model_fails_alone(predictor: Predictor) -> None:
    model = Model(predictor)
    images = [*_images(2), Image.new("RGB", BROKEN_SIZE), *_images(3)[2:]]

    async def body(batcher: DynamicBatcher) -> list[Any]:
        jobs = (batcher.submit(Job(image, "<CAPTION>", None, OPTIONS)) for image in images)
        return await asyncio.gather(*jobs, return_exceptions=True)

    outcomes = asyncio.run(_with_batcher(model, BatchSettings(max_batch=8, max_wait_ms=300), body))
    assert isinstance(outcomes[2], RuntimeError) and "13 x 13" in str(outcomes[2])
    for index in (0, 1, 3):
        assert outcomes[index] == predictor.run(images[index], "<CAPTION>", **SHORT)
    assert model.batches[0] == ("<CAPTION>", 4)  # the whole batch failed once, then each ran alone
    assert sorted(model.batches[1:]) == [("<CAPTION>", 1)] * 4


def test_a_full_queue_refuses_and_a_slow_answer_times_out(predictor: Predictor) -> None:
    model, images = Model(predictor), _images(5)
    model.release.clear()  # the model holds its first batch until released

    async def body(batcher: DynamicBatcher) -> None:
        running = asyncio.ensure_future(batcher.submit(Job(images[0], "<OD>", None, OPTIONS)))
        while not model.called.is_set():  # the first request reaches the model, which holds it
            await asyncio.sleep(0.01)
        waiting = [
            asyncio.ensure_future(batcher.submit(Job(image, "<OD>", None, OPTIONS))) for image in images[1:3]
        ]
        await asyncio.sleep(0.05)
        assert batcher.queue_depth == 2
        with pytest.raises(QueueFullError, match=r"the queue is full \(2 requests waiting\)"):
            await batcher.submit(Job(images[3], "<OD>", None, OPTIONS))
        with pytest.raises(RequestTimeoutError, match="no answer within 0.3 s"):
            await running
        model.release.set()
        for request in waiting:
            with pytest.raises(RequestTimeoutError):
                await request

    asyncio.run(_with_batcher(model, BatchSettings(max_batch=1, max_queue=2, timeout_s=0.3), body))
    # Requests that timed out before their batch formed are skipped, not run for nobody.
    assert model.batches == [("<OD>", 1)]


def test_stopping_answers_every_accepted_request_then_refuses(predictor: Predictor) -> None:
    model, images = Model(predictor), _images(6)

    async def body() -> tuple[list[dict[str, Any]], DynamicBatcher]:
        batcher = DynamicBatcher(model, BatchSettings(max_batch=2, max_wait_ms=1000))
        await batcher.start()
        requests = [
            asyncio.ensure_future(batcher.submit(Job(image, "<OD>", None, OPTIONS))) for image in images
        ]
        await asyncio.sleep(0.01)
        await batcher.stop()  # without waiting out max_wait_ms: the queue is flushed now
        with pytest.raises(ShuttingDownError):
            await batcher.submit(Job(images[0], "<OD>", None, OPTIONS))
        return list(await asyncio.gather(*requests)), batcher

    answers, _ = asyncio.run(body())
    assert answers == [predictor.run(image, "<OD>", **SHORT) for image in images]
    assert [size for _, size in model.batches] == [2, 2, 2]


def test_bad_settings_are_named() -> None:
    with pytest.raises(InputError, match=r"max_batch must be an integer >= 1, got 0; timeout_s must be > 0"):
        BatchSettings(max_batch=0, timeout_s=0)
