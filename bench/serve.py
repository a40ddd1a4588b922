"""The HTTP server under load: N concurrent clients on loopback, a fixed count of requests, batching on vs off.

    .venv/bin/python bench/serve.py [--model models/omnivis-tiny-world] [--task "<OD>"] [--clients 16]
                                    [--requests 256] [--max-batch 16] [--max-wait-ms 10] [--max-queue 64]
                                    [--max-new-tokens 64] [--write bench/RESULTS.md]

For each mode (batching on: --max-batch and --max-wait-ms; off: batches of one) a fresh `omnivis serve`
process is started on 127.0.0.1 and --clients concurrent clients send --requests requests in all, each a
different world scene (seed 11, never trained on). Every request must come back 200 or 503 (with
Retry-After, then retried by its client): none lost, none answered twice, and every answer identical to a
single `Predictor.run` call on the same image in this process. Reported: requests/s, p50/p99 latency of the
200s (client-side, including any retries' waits), the batch sizes the server ran (from its /metrics), 503s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import torch

import omnivis
from omnivis.world import VARIANTS, generate_record

REPOSITORY = Path(__file__).resolve().parents[1]
SCENE_SEED = 11  # scenes no training run used (training: 1, validation: 2, demo: 7)


@dataclass
class ModeResult:
    name: str
    seconds: float
    latencies: list[float]
    refused: int  # 503 answers (each retried)
    batch_sizes: dict[str, float]  # histogram buckets from /metrics: le -> count
    batch_count: float
    batch_sum: float
    mismatches: list[int] = field(default_factory=list)  # requests whose answer differs from a single run


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_server(
    args: argparse.Namespace, max_batch: int, max_wait_ms: float
) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [
        sys.executable, "-m", "omnivis", "serve", "--model", str(args.model), "--port", str(port),
        "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--max-queue", str(args.max_queue),
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode}")
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not become ready within 120 s")


async def _client(
    url: str, queue: asyncio.Queue[int], images: list[bytes], form: dict[str, str], results: dict[int, Any],
    latencies: list[float], refused: list[int],
) -> None:  # fmt: skip
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            while True:
                files = {"image": (f"{index}.png", images[index], "image/png")}
                response = await client.post("/v1/predict", files=files, data=form)
                if response.status_code != 503:
                    break
                refused.append(index)
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            if response.status_code != 200:
                raise RuntimeError(f"request {index}: HTTP {response.status_code} {response.text[:200]}")
            if index in results:
                raise RuntimeError(f"request {index} was answered twice")
            results[index] = response.json()["result"]
            latencies.append(time.perf_counter() - started)


def _batch_histogram(metrics: str) -> tuple[dict[str, float], float, float]:
    buckets = dict(re.findall(r'^omnivis_batch_size_bucket\{le="([^"]+)"\} (\S+)$', metrics, re.MULTILINE))
    count = float(re.search(r"^omnivis_batch_size_count (\S+)$", metrics, re.MULTILINE).group(1))  # type: ignore[union-attr]
    total = float(re.search(r"^omnivis_batch_size_sum (\S+)$", metrics, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return {le: float(value) for le, value in buckets.items()}, count, total


def run_mode(
    args: argparse.Namespace,
    name: str,
    max_batch: int,
    max_wait_ms: float,
    images: list[bytes],
    expected: list[Any],
) -> ModeResult:
    server, url = _start_server(args, max_batch, max_wait_ms)
    try:
        form = {"task": args.task, "num_beams": "1", "max_new_tokens": str(args.max_new_tokens)}
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(args.requests):
            queue.put_nowait(index)
        results: dict[int, Any] = {}
        latencies: list[float] = []
        refused: list[int] = []

        async def load() -> None:
            await asyncio.gather(
                *(_client(url, queue, images, form, results, latencies, refused) for _ in range(args.clients))
            )

        started = time.perf_counter()
        asyncio.run(load())
        seconds = time.perf_counter() - started
        if sorted(results) != list(range(args.requests)):
            raise RuntimeError(f"{name}: {args.requests - len(results)} requests were lost")
        buckets, count, total = _batch_histogram(httpx.get(f"{url}/metrics").text)
    finally:
        server.terminate()
        server.wait(timeout=60)
    mismatches = [index for index in range(args.requests) if results[index] != expected[index]]
    return ModeResult(name, seconds, latencies, len(refused), buckets, count, total, mismatches)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def report(args: argparse.Namespace, modes: list[ModeResult]) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"### Serving: {args.task} on {Path(args.model).name}, {args.clients} clients, {args.requests} requests "
        f"({date.today().isoformat()})",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} before the run; "
        f"torch {torch.__version__}, Python {platform.python_version()}  ",
        f"Answers: 1 beam, at most {args.max_new_tokens} new tokens; every answer compared with a single "
        "`Predictor.run` call on the same image",
        "",
        "| mode | requests/s | p50 latency (s) | p99 latency (s) | mean batch | 503s (retried) | answers equal to run |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        mean_batch = mode.batch_sum / mode.batch_count if mode.batch_count else float("nan")
        equal = args.requests - len(mode.mismatches)
        lines.append(
            f"| {mode.name} | {args.requests / mode.seconds:.2f} | {statistics.median(mode.latencies):.3f} | "
            f"{_percentile(mode.latencies, 0.99):.3f} | {mean_batch:.2f} | {mode.refused} | "
            f"{equal}/{args.requests} |"
        )
    on, off = modes
    lines += ["", f"Batching on / off: {off.seconds / on.seconds:.2f}x the throughput.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPOSITORY / "models" / "omnivis-tiny-world")
    parser.add_argument("--task", default="<OD>")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    args = parser.parse_args()
    images = [generate_record(index, SCENE_SEED, VARIANTS["default"]).image for index in range(args.requests)]
    predictor = omnivis.load(args.model)
    expected = [
        predictor.run(image, args.task, num_beams=1, max_new_tokens=args.max_new_tokens) for image in images
    ]
    modes = [
        run_mode(args, f"batching on (max {args.max_batch}, {args.max_wait_ms:g} ms)", args.max_batch,
                 args.max_wait_ms, images, expected),
        run_mode(args, "batching off (batches of 1)", 1, 0.0, images, expected),
    ]  # fmt: skip
    text = report(args, modes)
    print(text)
    if args.write is not None:
        with args.write.open("a", encoding="utf-8") as results:
            results.write("\n" + text)


if __name__ == "__main__":
    main()
