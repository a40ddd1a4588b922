"""Dynamic batching: concurrent requests of one task gathered into one model call.

Requests wait in a bounded queue, grouped by what must be equal within a batch (the task and the decoding
settings). One worker takes the group whose oldest request waited longest, lets it fill up to `max_batch`
requests or until that request has waited `max_wait_ms`, and runs it in one thread beside the event loop,
so the server keeps accepting while the model works. A batch that fails is rerun one request at a time, so a
request that breaks the model fails alone and its neighbours still get their answers.

    batcher = DynamicBatcher(run_batch, BatchSettings(max_batch=16, max_wait_ms=10))
    await batcher.start()
    answer = await batcher.submit(Job(image, "<OD>", None))
    await batcher.stop()          # finishes every accepted request first
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from omnivis.errors import InputError, OmnivisError
from omnivis.predictor import Region

# One model call: images that share a task, their inputs, and the decoding settings -> one answer each.
RunBatch = Callable[[Sequence[Image.Image], str, Sequence[Any], "DecodeOptions"], list[dict[str, Any]]]


class QueueFullError(OmnivisError):
    """The queue holds `max_queue` requests already: the server is at capacity (HTTP 503)."""


class ShuttingDownError(OmnivisError):
    """The server is stopping and takes no new requests (HTTP 503)."""


class ModelError(OmnivisError):
    """The model failed on one request (HTTP 500); other requests are unaffected."""


class RequestTimeoutError(OmnivisError):
    """A request was not answered within its time limit (HTTP 504)."""


@dataclass(frozen=True)
class DecodeOptions:
    """Decoding settings; requests batch together only when these are equal."""

    num_beams: int = 3
    max_new_tokens: int = 1024
    return_scores: bool = False


@dataclass(frozen=True)
class BatchSettings:
    """The batcher's knobs."""

    max_batch: int = 16  # requests run together at most
    max_wait_ms: float = 10.0  # how long the oldest waiting request waits for others before its batch runs
    max_queue: int = 64  # requests waiting at most; beyond it new ones are refused (QueueFullError)
    timeout_s: float = 120.0  # a request not answered within this gets RequestTimeoutError

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be {rule}, got {getattr(self, name)}"
            for name, rule, fine in (
                ("max_batch", "an integer >= 1", isinstance(self.max_batch, int) and self.max_batch >= 1),
                ("max_queue", "an integer >= 1", isinstance(self.max_queue, int) and self.max_queue >= 1),
                ("max_wait_ms", ">= 0", self.max_wait_ms >= 0),
                ("timeout_s", "> 0", self.timeout_s > 0),
            )
            if not fine
        ]
        if problems:
            raise InputError("batch settings: " + "; ".join(problems))


@dataclass(eq=False)
class Job:
    """One request: an image, its task and input, and where its answer goes."""

    image: Image.Image
    task: str
    text: str | Region | None
    options: DecodeOptions = field(default_factory=DecodeOptions)
    future: asyncio.Future[dict[str, Any]] | None = None
    enqueued: float = 0.0  # time.monotonic() when queued
    abandoned: bool = False  # timed out or its client left: the worker skips it

    @property
    def group(self) -> tuple[str, DecodeOptions]:
        return self.task, self.options


class DynamicBatcher:
    """Gathers concurrent requests into batches for `run_batch`; see the module docstring."""

    def __init__(
        self,
        run_batch: RunBatch,
        settings: BatchSettings = BatchSettings(),
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self._run_batch = run_batch
        self._on_batch = on_batch
        self._groups: dict[tuple[str, DecodeOptions], collections.deque[Job]] = {}
        self._waiting = 0
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False
        # One model thread: batches run one after another, and the event loop never waits on the model.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="omnivis-model"
        )

    @property
    def queue_depth(self) -> int:
        """Requests accepted and not yet taken into a batch."""
        return self._waiting

    @property
    def accepting(self) -> bool:
        return self._worker is not None and not self._stopping

    async def start(self) -> None:
        """Starts the worker (in the running event loop)."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="omnivis-batcher")

    async def stop(self) -> None:
        """Refuses new requests, answers every accepted one, then ends the worker."""
        self._stopping = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    async def submit(self, job: Job) -> dict[str, Any]:
        """Queues `job` and waits for its answer.

        Raises:
            QueueFullError: `max_queue` requests are already waiting.
            ShuttingDownError: The batcher is stopping or not started.
            RequestTimeoutError: No answer within `timeout_s`.
            Exception: Whatever the model raised for this request alone.
        """
        if not self.accepting:
            raise ShuttingDownError("the server is shutting down and takes no new requests")
        if self._waiting >= self.settings.max_queue:
            raise QueueFullError(
                f"the queue is full ({self.settings.max_queue} requests waiting); retry shortly"
            )
        job.future = asyncio.get_running_loop().create_future()
        job.enqueued = time.monotonic()
        self._groups.setdefault(job.group, collections.deque()).append(job)
        self._waiting += 1
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.settings.timeout_s)
        except TimeoutError:
            job.abandoned = True
            raise RequestTimeoutError(f"no answer within {self.settings.timeout_s:g} s") from None
        except asyncio.CancelledError:  # the client went away: nobody will read the answer
            job.abandoned = True
            raise

    async def _work(self) -> None:
        while True:
            if self._waiting == 0:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group = min(self._groups, key=lambda key: self._groups[key][0].enqueued)
            await self._fill(self._groups[group])
            batch = self._take(group)
            if batch:
                await self._run(batch)

    async def _fill(self, jobs: collections.deque[Job]) -> None:
        """Waits until the group holds a full batch or its oldest job has waited `max_wait_ms`."""
        deadline = jobs[0].enqueued + self.settings.max_wait_ms / 1000
        while len(jobs) < self.settings.max_batch and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                return

    def _take(self, group: tuple[str, DecodeOptions]) -> list[Job]:
        jobs = self._groups[group]
        taken = [jobs.popleft() for _ in range(min(len(jobs), self.settings.max_batch))]
        if not jobs:
            del self._groups[group]
        self._waiting -= len(taken)
        return [job for job in taken if not job.abandoned]

    async def _run(self, batch: list[Job]) -> None:
        loop, started = asyncio.get_running_loop(), time.perf_counter()
        outcomes = await loop.run_in_executor(self._executor, self._answer, batch)
        for job, outcome in zip(batch, outcomes, strict=True):
            assert job.future is not None
            if job.future.done():
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)
        if self._on_batch is not None:
            self._on_batch(len(batch), time.perf_counter() - started)

    def _answer(self, batch: list[Job]) -> list[dict[str, Any] | BaseException]:
        """The batch's answers (in the model thread); after a failure, each request alone."""
        task, options = batch[0].group
        try:
            return list(
                self._run_batch([job.image for job in batch], task, [job.text for job in batch], options)
            )
        except Exception as error:  # noqa: BLE001 - rerun alone below, so only the culprit fails
            if len(batch) == 1:
                return [error]
        outcomes: list[dict[str, Any] | BaseException] = []
        for job in batch:
            try:
                outcomes.append(self._run_batch([job.image], task, [job.text], options)[0])
            except Exception as error:  # noqa: BLE001 - this request's own failure, given to it alone
                outcomes.append(error)
        return outcomes
