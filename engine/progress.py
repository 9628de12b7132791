"""What a long command shows on the terminal: a rich bar (plain lines when not
a terminal) for long steps, and no TensorFlow start-up chatter."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def per_second(rate: float) -> str:
    """Whole numbers for fast steps, one decimal for slow ones (0.3/s, not 0/s)."""
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}"


@contextlib.contextmanager
def progress(total: int, description: str, unit: str = "files",
             quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)`` that reports ``n`` more items done.

    On a terminal this is a rich bar with rate and ETA. Elsewhere (CI, log
    files) rich would print nothing until the end, so a plain line is printed
    at most every 5 s and at the end instead.
    """
    if quiet or total <= 0:
        yield lambda n=1: None
        return
    if console.is_terminal:
        columns = (
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(description, total=total, rate="")
            start = time.perf_counter()

            def advance(n: int = 1) -> None:
                done = bar.tasks[0].completed + n
                rate = done / max(time.perf_counter() - start, 1e-9)
                bar.update(task, advance=n, rate=f"{per_second(rate)} {unit}/s")

            yield advance
        return
    start = last = time.perf_counter()
    done = 0

    def advance(n: int = 1) -> None:
        nonlocal done, last
        done += n
        now = time.perf_counter()
        if now - last >= 5.0 or done >= total:
            last = now
            rate = done / max(now - start, 1e-9)
            eta = (total - done) / rate if rate > 0 else float("inf")
            print(f"{description}: {done}/{total} {unit} ({per_second(rate)}/s, ETA {eta:,.0f} s)",
                  file=sys.stderr, flush=True)

    yield advance


# TensorFlow's start-up chatter on stderr (absl/C++ log lines, the CPU-feature
# and CUDA-probe notices): a newcomer reads them as failures, and printed in
# the middle of a live dashboard they leave stacked copies of its header.
STARTUP_NOISE = re.compile(r"^([IWE]\d{4} |WARNING: All log messages before absl::InitializeLog|"
                           r"To enable the following instructions|.*rebuild TensorFlow with the appropriate)")


def quiet_tensorflow() -> None:
    """Imports TensorFlow (and initialises its devices) with its start-up lines
    dropped; anything else it prints still reaches stderr. Later C++ log lines
    are left to TF_CPP_MIN_LOG_LEVEL, set to errors only unless already set
    (errors that matter reach the user as Python exceptions)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)  # C++ writes to the file descriptor, not to sys.stderr
        try:
            import tensorflow as tf
            tf.config.list_physical_devices("GPU")  # the CUDA probe logs here
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        kept = [line for line in captured.read().decode(errors="replace").splitlines()
                if not STARTUP_NOISE.match(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr, flush=True)
