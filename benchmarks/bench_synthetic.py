"""Throughput of the synthetic chest X-ray generator.

Command (from the repository root)::

    python benchmarks/bench_synthetic.py                 # 299 px, 700 images, 2 workers, 5 repeats
    python benchmarks/bench_synthetic.py --size 96 --workers 0

What it measures: wall time of ``engine.data.synthetic.generate`` writing the default
500/100/100 set (PNG files in a temporary folder), repeated, as images per
second: median, min and max over the repeats. The time is what ``generate``
reports, so it includes starting the worker pool (spawned processes importing
numpy and Pillow) but not this interpreter's own start-up. A single-process
render-only figure (no PNG, no pool) is printed too, to separate the cost of
drawing from that of encoding and process overhead.

Hardware and expected figures: on 2 CPU cores (no GPU), otherwise idle, at
299 px with 2 workers: about 220-230 images/s (3.0-3.2 s for the 700 images;
the target is at least 100 images/s); in one process (``--workers 0``) about 73
images/s; render-only about 10 ms an image (the workers' allocator settings
bring that to about 5 ms). At 96 px with 2 workers: about 300-380 images/s,
mostly pool start-up and file writing. Other work on the machine lowers these
figures a lot: look at the spread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data.drawing import SOURCES, render  # noqa: E402
from engine.data.synthetic import DEFAULT_COUNTS, generate  # noqa: E402


def bench_generate(size: int, workers: int, repeats: int) -> list[float]:
    """Images per second of each of ``repeats`` full runs of generate."""
    rates = []
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            summary = generate(Path(tmp) / "set", image_size=size, seed=repeat, workers=workers)
        rates.append(summary["images_per_second"])
        print(f"  repeat {repeat + 1}: {summary['images']} images in {summary['seconds']:.2f} s "
              f"= {summary['images_per_second']:.0f} images/s", flush=True)
    return rates


def bench_render(size: int, n: int) -> float:
    """Milliseconds per render() call in this process, without writing files."""
    render(0, "covid", size)  # warm up
    start = time.perf_counter()
    for i in range(n):
        render(i, "covid" if i % 2 else "normal", size, source=SOURCES[i % len(SOURCES)])
    return (time.perf_counter() - start) / n * 1000.0


def main() -> None:
    """Parses the options and prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    total = sum(DEFAULT_COUNTS.values())
    print(f"generate: {total} images at {args.size} px, workers={args.workers}")
    rates = bench_generate(args.size, args.workers, args.repeats)
    print(f"generate: median {statistics.median(rates):.0f} images/s "
          f"(min {min(rates):.0f}, max {max(rates):.0f}, {len(rates)} repeats)")
    print(f"render only, one process: {bench_render(args.size, 100):.1f} ms an image")


if __name__ == "__main__":
    main()
