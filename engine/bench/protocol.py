"""The benchmark protocol: what one measurement is and how it is timed.

It follows timm's ``benchmark.py`` and NVIDIA's DeepLearningExamples:

* every measurement is warmed up first; its first call (tracing, XLA
  compilation, the first decode of the records) is timed and reported apart
  as compile time, never mixed into a rate;
* a timed repeat ends only once its last result is on the host (a loss or a
  pixel sum turned into a Python float): asynchronous dispatch cannot hide work;
* the repeats of all measurements are interleaved round by round (A B C A B C
  ...), so the shared machine's slow spells hit every setting alike and every
  speedup is a ratio from one run;
* a repeat far from the median of the others (``outlier_ratio``) is flagged
  and left out of the median and spread, not averaged in;
* a measurement that runs out of memory becomes an ``OOM`` row and the bench
  goes on.

Each timed repeat starts a fresh input iterator (a fresh ``fit`` epoch for
``e2e``), so its start-up (shuffle-buffer fill, first augmented chunk) is
inside the clock: input and e2e rates are, if anything, understated. A
long-lived iterator would instead fill its buffers while other measurements
run and count that work as free.
"""

from __future__ import annotations

import contextlib
import gc
import math
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine import machine

ENGINE, PAPER = "engine", "paper"  # the two stacks timed (paper: the paper's tf_keras stack)
# Host memory below which no measurement starts (a judgement: the grid preset
# with four settings alive filled 21.5 of 24 GB before reaching batch 32).
LOW_MEMORY_MB = 3072.0


@dataclass
class Measure:
    """One row of the bench: what it times, how, and what it measured.

    ``prepare()`` runs before the clock starts and returns the timed function,
    which processes ``images`` images and returns once the result is on the host;
    it may return a function to call once the clock has stopped (tear-down).
    """

    mode: str
    batch: int
    stack: str
    precision: str
    xla: str
    images: int
    prepare: Callable[[], Callable[[], None]] | None = None
    status: str = "ok"
    error: str = ""
    compile_s: float | None = None
    seconds: list[float] = field(default_factory=list)
    peak_mb: float = 0.0
    device_peak_mb: float | None = None

    @property
    def setting(self) -> str:
        return f"{self.precision}/{self.xla}"


# --- timing statistics ------------------------------------------------------

def flag_outliers(values: list[float], ratio: float) -> list[bool]:
    """Flags each value more than ``ratio`` times above or below the median of
    all of them (with 3 or more values one wild repeat cannot move the median,
    and the median value itself is never flagged)."""
    if len(values) < 3:
        return [False] * len(values)
    reference = statistics.median(values)
    return [value > ratio * reference or value < reference / ratio for value in values]


def summarize(seconds: list[float], images: int, ratio: float) -> dict:
    """img/s median and spread over the repeats that are not outliers."""
    rates = [images / s for s in seconds]
    flags = flag_outliers(seconds, ratio)
    kept = [r for r, f in zip(rates, flags) if not f]
    if not kept:
        kept, flags = rates, [False] * len(rates)
    median = statistics.median(kept)
    return {"img_s": median, "img_s_min": min(kept), "img_s_max": max(kept),
            "spread_pct": 100 * (max(kept) - min(kept)) / median, "rates": rates,
            "outliers": [i for i, f in enumerate(flags) if f]}


# --- memory -----------------------------------------------------------------

def reset_peak_memory() -> None:
    """Resets the process' peak RSS (Linux ``clear_refs`` 5) and the GPU's peak,
    so each measurement reports its own peak."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    import tensorflow as tf
    for gpu in tf.config.list_logical_devices("GPU"):
        with contextlib.suppress(ValueError, RuntimeError):
            tf.config.experimental.reset_memory_stats(gpu.name)


def peak_memory() -> tuple[float, float | None]:
    """(peak RSS of the process in MB since the last reset, peak GPU memory MB or None)."""
    peak = None
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
    if peak is None:  # not Linux: the whole process' peak
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import tensorflow as tf
    gpus = tf.config.list_logical_devices("GPU")
    device = None
    if gpus:
        with contextlib.suppress(ValueError, RuntimeError):
            device = tf.config.experimental.get_memory_info(gpus[0].name)["peak"] / 2 ** 20
    return peak, device


def out_of_memory(err: BaseException) -> bool:
    import tensorflow as tf
    return isinstance(err, (MemoryError, tf.errors.ResourceExhaustedError))


# --- sizes ------------------------------------------------------------------

def steps_for(images: int, batch: int, least: int = 2) -> int:
    return max(least, math.ceil(images / batch))


def epochs_for(steps: int, batch: int, manifest: dict) -> int:
    """Epochs of the training pipeline one timed repeat reaches into (each
    repeat starts a fresh iterator at epoch 0; each epoch is one more graph)."""
    per_epoch = manifest["splits"]["train"]["count"] // batch
    return math.ceil(steps / per_epoch) + 1


# --- timing -----------------------------------------------------------------

class HostMemoryLow(MemoryError):
    """Raised before a measurement when the host is nearly out of memory."""


def check_host_memory(floor_mb: float = LOW_MEMORY_MB) -> None:
    """On a CPU, running out of memory means the kernel kills the process, not
    an exception: a measurement is not started with less than ``floor_mb`` left."""
    available = machine.available_memory_mb()
    if available is not None and available < floor_mb:
        raise HostMemoryLow(f"skipped: {available:,.0f} MB of host memory left (< {floor_mb:,.0f} MB)")


def run_once(measure: Measure) -> float | None:
    """One timed call of ``measure`` (its peak memory recorded); None when it
    failed, which marks the row (an out-of-memory error becomes ``OOM``)."""
    if measure.status != "ok":  # failed before, or a setting that could not be built
        return None
    try:
        check_host_memory()
        timed = measure.prepare()
        reset_peak_memory()
        start = time.perf_counter()
        teardown = timed()
        seconds = time.perf_counter() - start
        if teardown is not None:
            teardown()
    except Exception as err:  # noqa: BLE001  (any failure becomes the row's status)
        fail(measure, err)
        return None
    peak, device_peak = peak_memory()
    measure.peak_mb = max(measure.peak_mb, peak)
    if device_peak is not None:
        measure.device_peak_mb = max(measure.device_peak_mb or 0.0, device_peak)
    return seconds  # `timed` and its iterator are torn down after the clock


def warm_up(measure: Measure) -> None:
    """First call, timed apart as the compile time."""
    measure.compile_s = run_once(measure)


def time_once(measure: Measure) -> None:
    seconds = run_once(measure)
    if seconds is not None:
        measure.seconds.append(seconds)


def fail(measure: Measure, err: BaseException) -> None:
    measure.status = "OOM" if out_of_memory(err) else "error"
    measure.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
    measure.prepare = None  # drop the closures: their tensors and iterators
    gc.collect()


def run_measures(measures: list[Measure], repeats: int, on_progress: Callable[[int], None] = lambda n: None,
                 on_note: Callable[[str], None] = lambda s: None, on_round: Callable[[], object] = lambda: None,
                 ) -> None:
    """Warm-up of every measurement, then ``repeats`` interleaved rounds."""
    for m in measures:
        warm_up(m)
        on_progress(1)
        on_note(f"warm-up {m.stack} {m.mode} {m.setting} batch {m.batch}: "
                + (f"{m.compile_s:.1f} s" if m.status == "ok" else f"{m.status} ({m.error})"))
    for _ in range(repeats):
        on_round()
        for m in measures:
            time_once(m)
            on_progress(1)
