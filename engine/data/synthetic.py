"""The synthetic chest X-ray data set the project ships: :func:`generate`
writes many images drawn by ``engine.data.drawing`` into splits and classes.

Each simulated patient has one to three images ("views") that share anatomy,
disease and source but differ in pose, exposure and noise. Patients come from
simulated hospitals (``engine.data.drawing.SOURCES``), each with its own image
style and its own class balance, as the sources merged into public COVID chest
X-ray collections do.

:func:`generate` writes the same folder layout as a real Kaggle chest X-ray
folder, ``out/<split>/<class>/patient-<id>_source-<src>_view-<k>.png``, so the
rest of the engine takes the same path on both.

Only numpy, Pillow and the standard library are imported: this module runs in
spawned worker processes, which must start fast and must never load TensorFlow.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.data.drawing import CLASSES, SOURCES, render
from engine.errors import UserError

SPLITS = ("train", "val", "test")
# The paper's subset: 500 training, 100 validation and 100 test images.
DEFAULT_COUNTS = {"train": 500, "val": 100, "test": 100}
FILENAME_PATTERN = r"patient-(?P<patient>[^_.]+)_source-(?P<source>[^_.]+)"

# Share of each class's patients that comes from each source (in SOURCES order).
# The shares differ so that a model can gain by recognising the source, as it can
# on merged public collections; the source alone predicts the class about 2 times
# in 3.
_SOURCE_SHARE = {"covid": (0.55, 0.30, 0.15), "normal": (0.20, 0.35, 0.45)}
# Probability that a patient has 1, 2 or 3 views.
_VIEW_PROBS = (0.5, 0.3, 0.2)
# glibc mallopt() parameters (malloc.h), for the worker processes.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@dataclass(frozen=True)
class _Item:
    """One image to write: its relative path and everything that decides its pixels."""

    path: str
    label: str
    source: str
    patient_seed: int
    image_seed: int


def _derive(*keys: int) -> int:
    """A 64-bit seed derived from a tuple of non-negative integers."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0])


def _plan(counts: Mapping[str, int], seed: int) -> list[_Item]:
    """Lays out every image: its path, patient, source and seeds.

    Splits are filled in :data:`SPLITS` order and patients are numbered across
    all of them, so a patient id never appears in two splits. Every random
    choice is derived from (seed, split, ...) only, so a split's images do not
    change when another split's count does (only the patient numbering shifts).
    """
    items: list[_Item] = []
    next_patient = 0
    for split_index, split in enumerate(SPLITS):
        if split not in counts:
            continue
        total = counts[split]
        per_class = {"covid": total // 2, "normal": total - total // 2}
        index = 0
        for class_index, label in enumerate(CLASSES):
            rng = np.random.default_rng([seed, split_index, class_index, 0])
            remaining = per_class[label]
            patient = 0
            while remaining > 0:
                views = min(remaining, 1 + int(rng.choice(len(_VIEW_PROBS), p=_VIEW_PROBS)))
                source = SOURCES[int(rng.choice(len(SOURCES), p=_SOURCE_SHARE[label]))]
                patient_seed = _derive(seed, split_index, 1, class_index, patient)
                stem = f"patient-{next_patient:05d}_source-{source}"
                for view in range(1, views + 1):
                    items.append(_Item(path=f"{split}/{label}/{stem}_view-{view}.png", label=label,
                                       source=source, patient_seed=patient_seed,
                                       image_seed=_derive(seed, split_index, 2, index)))
                    index += 1
                remaining -= views
                patient += 1
                next_patient += 1
    return items


def _write(root: Path, size: int, item: _Item) -> None:
    """Renders one planned image and saves it as an 8-bit grayscale PNG."""
    pixels = render(item.image_seed, item.label, size, patient=item.patient_seed,
                    source=item.source)
    # Level 1: the noise makes higher levels gain little, and they cost 3x the time.
    Image.fromarray(pixels).save(root / item.path, format="PNG", compress_level=1)


def _write_chunk(root: str, size: int, items: list[_Item]) -> int:
    """Worker entry point: writes a chunk of images and returns how many."""
    for item in items:
        _write(Path(root), size, item)
    return len(items)


def _init_worker() -> None:
    """Makes a worker process keep freed image-sized buffers in its heap.

    A render allocates a few dozen full-size float arrays. By default glibc
    serves each from fresh mmap pages, or hands freed heap back to the system,
    so every array pays its page faults again: about half the render time.
    Only workers are tuned; the caller's process is left as it is.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):
        pass  # Not glibc: nothing to tune.


def _chunks(items: list[_Item], workers: int) -> list[list[_Item]]:
    """Splits the work so that each worker gets several chunks (for balance and
    progress) while each chunk is big enough to hide the inter-process overhead."""
    size = max(1, min(64, math.ceil(len(items) / (workers * 8))))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _cpu_count() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _check_arguments(out: Path, image_size: int, counts: Mapping[str, int], seed: int,
                     workers: int | None) -> None:
    """Raises a one-line UserError for anything :func:`generate` cannot do."""
    unknown = sorted(set(counts) - set(SPLITS))
    if unknown:
        raise UserError(f"unknown split(s) {', '.join(unknown)}; expected {', '.join(SPLITS)}")
    for split, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise UserError(f"count for split {split!r} must be a non-negative integer, got {n!r}")
    if not isinstance(image_size, int) or image_size < 16:
        raise UserError(f"image size must be an integer of at least 16 px, got {image_size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if workers is not None and workers < 0:
        raise UserError(f"workers must be 0 or more, got {workers}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output folder {out} already exists and is not empty; "
                         "choose a new folder or remove it")


def _summary(out: Path, items: Iterable[_Item], counts: Mapping[str, int], image_size: int,
             seed: int, workers: int, seconds: float) -> dict:
    """What :func:`generate` wrote, as plain JSON-ready data."""
    per_split = {split: {label: 0 for label in CLASSES} for split in SPLITS if split in counts}
    per_source = {source: {label: 0 for label in CLASSES} for source in SOURCES}
    patients: dict[str, set[str]] = {split: set() for split in per_split}
    total = 0
    for item in items:
        split, label, name = item.path.split("/")
        per_split[split][label] += 1
        per_source[item.source][label] += 1
        patients[split].add(name.split("_", 1)[0])
        total += 1
    return {
        "out": str(out),
        "image_size": image_size,
        "seed": seed,
        "workers": workers,
        "counts": per_split,
        "sources": per_source,
        "images": total,
        "patients": sum(len(p) for p in patients.values()),
        "patients_per_split": {split: len(p) for split, p in patients.items()},
        "seconds": seconds,
        "images_per_second": total / seconds if seconds > 0 else 0.0,
    }


def generate(out: Path, *, image_size: int = 299, counts: Mapping[str, int] = DEFAULT_COUNTS,
             seed: int = 0, workers: int | None = None,
             on_progress: Callable[[int], None] | None = None) -> dict:
    """Writes a synthetic chest X-ray data set in the Kaggle folder layout.

    The layout is ``out/<split>/<class>/patient-<id>_source-<src>_view-<k>.png``
    (8-bit grayscale PNG). Each split's count is divided evenly between the two
    classes, the odd image going to ``normal``. The same arguments give
    byte-identical files whatever the number of workers.

    Args:
        out: Folder to create; it must not exist or be empty.
        image_size: Side of the square images in pixels.
        counts: Images per split; splits left out are not created.
        seed: Seed of the whole set (a non-negative integer).
        workers: Processes to render with; None for one per core, 0 or 1 to
            render in this process.
        on_progress: Called with the number of images just written, as they are.

    Returns:
        Summary: ``counts`` (split -> class -> images), ``sources`` (source ->
        class -> images), ``images``, ``patients``, ``patients_per_split``,
        ``seconds``, ``images_per_second`` and the arguments used.

    Raises:
        UserError: If ``out`` is not empty or an argument is invalid.
    """
    out = Path(out)
    _check_arguments(out, image_size, counts, seed, workers)
    items = _plan(counts, seed)
    for split in counts:
        for label in CLASSES:
            (out / split / label).mkdir(parents=True, exist_ok=True)
    n_workers = min(_cpu_count() if workers is None else workers, len(items))
    start = time.perf_counter()
    if n_workers <= 1:
        for item in items:
            _write(out, image_size, item)
            if on_progress is not None:
                on_progress(1)
    else:
        _generate_parallel(out, image_size, items, n_workers, on_progress)
    seconds = time.perf_counter() - start
    return _summary(out, items, counts, image_size, seed, max(n_workers, 0), seconds)


def _generate_parallel(out: Path, image_size: int, items: list[_Item], workers: int,
                       on_progress: Callable[[int], None] | None) -> None:
    """Renders ``items`` in a pool of spawned processes.

    Spawn, not fork: the caller may have loaded TensorFlow, whose threads and
    locks do not survive a fork.
    """
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=_init_worker)
    try:
        futures = [pool.submit(_write_chunk, str(out), image_size, chunk)
                   for chunk in _chunks(items, workers)]
        for future in as_completed(futures):
            done = future.result()
            if on_progress is not None:
                on_progress(done)
    except BaseException:
        # Do not render the rest of the set after a failure or an interrupt.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
