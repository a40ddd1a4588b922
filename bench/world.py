"""How fast the procedural world makes records: scenes per second, in one process and in a process pool.

    .venv/bin/python bench/world.py [--count 400] [--variants default hard] [--processes 1 2] [--seed 0]

A scene here is one complete record: scene graph, rendering, PNG encoding and every annotation
(`omnivis.world.generate_record`). Each configuration runs after a warm-up (fonts loaded, text cached) in
every worker. Besides wall-clock throughput the single-process row gives CPU milliseconds per scene and
their split into sampling, drawing, PNG encoding and language, which stay meaningful on a machine shared
with other jobs; the load average printed in the header says how shared it was. This is a benchmark, not a
test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import time

import numpy as np
import PIL
import shapely

from omnivis.world import VARIANTS, annotate, draw, generate_record, sample_scene
from omnivis.world.annotation import encode_png

WARM_UP = 20  # records made (and discarded) before timing, per process


def _warm(variant: str) -> None:
    for index in range(WARM_UP):
        generate_record(10**6 + index, 1, VARIANTS[variant])


def _make(job: tuple[str, int, int]) -> int:
    variant, seed, index = job
    return len(generate_record(index, seed, VARIANTS[variant]).image)


def pool_rate(variant: str, seed: int, count: int, processes: int) -> float:
    """Scenes per second (wall clock) with `processes` worker processes."""
    jobs = [(variant, seed, index) for index in range(count)]
    with multiprocessing.get_context("fork").Pool(processes, initializer=_warm, initargs=(variant,)) as pool:
        pool.map(_make, [(variant, seed + 1, index) for index in range(processes * 4)])  # every worker is up
        started = time.perf_counter()
        pool.map(_make, jobs, chunksize=16)
        return count / (time.perf_counter() - started)


def single_process(variant: str, seed: int, count: int) -> dict[str, float]:
    """Wall-clock scenes per second in this process, and CPU milliseconds per scene by stage."""
    config = VARIANTS[variant]
    _warm(variant)
    started = time.perf_counter()
    for index in range(count):
        generate_record(index, seed, config)
    rate = count / (time.perf_counter() - started)
    stages = dict.fromkeys(("sample", "draw", "png", "language"), 0.0)
    for index in range(count):
        marks = [time.process_time()]
        scene = sample_scene(index, seed, config)
        marks.append(time.process_time())
        image = draw(scene)
        marks.append(time.process_time())
        encode_png(image)
        marks.append(time.process_time())
        annotate(scene, image)  # encodes the PNG again: that share is taken out below
        marks.append(time.process_time())
        for name, begin, end in zip(stages, marks, marks[1:], strict=False):
            stages[name] += end - begin
    stages["language"] -= stages["png"]
    return {"rate": rate, **{name: 1000 * seconds / count for name, seconds in stages.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="records per measurement")
    parser.add_argument("--variants", nargs="+", default=["default", "hard"], choices=sorted(VARIANTS))
    parser.add_argument("--processes", nargs="+", type=int, default=[2], help="pool sizes to measure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load}")
    print(
        f"Python {platform.python_version()}, numpy {np.__version__}, Pillow {PIL.__version__}, "
        f"shapely {shapely.__version__}; {args.count} records per row, 256x256 PNG"
    )
    print()
    print("| variant | processes | scenes/s | CPU ms/scene: sample | draw | png | language |")
    print("|---|---|---|---|---|---|---|")
    for variant in args.variants:
        single = single_process(variant, args.seed, args.count)
        cpu = " | ".join(f"{single[name]:.2f}" for name in ("sample", "draw", "png", "language"))
        print(f"| {variant} | 1 | {single['rate']:.0f} | {cpu} |")
        for processes in args.processes:
            rate = pool_rate(variant, args.seed, args.count, processes)
            print(f"| {variant} | {processes} | {rate:.0f} | | | | |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
