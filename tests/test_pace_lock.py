"""pace.json under concurrent writers: the trial processes of ``--parallel N``
record their rates into one file at once, and no process' entry is lost."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import pytest

from engine.io import locked
from engine.training import pace

PROCESSES, ENTRIES = 4, 25


def write_entries(index: int, start) -> None:
    """One writer: ``ENTRIES`` shapes of its own, recorded once every writer is ready."""
    start.wait(timeout=30)  # all at once, as the trial processes of one sweep end their runs
    for i in range(ENTRIES):
        shape = pace.Shape(model=f"writer{index}", image_size=32 + i, channels=1, batch=8, precision="float32",
                           xla="off")
        pace.record(shape, train_img_s=float(100 * index + i + 1), source=f"writer {index}")


def test_parallel_writers_lose_no_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path))  # this test's pace.json alone
    # Forked from this process, which has imported the pace module (and so
    # TensorFlow) already: a fresh interpreter per writer would spend seconds
    # importing TensorFlow. The writers run no TensorFlow op, only file work.
    context = multiprocessing.get_context("fork")
    start = context.Barrier(PROCESSES)
    writers = [context.Process(target=write_entries, args=(i, start)) for i in range(PROCESSES)]
    for w in writers:
        w.start()
    try:
        for w in writers:
            w.join(timeout=60)
    finally:
        for w in writers:
            if w.is_alive():
                w.kill()
    assert [w.exitcode for w in writers] == [0] * PROCESSES
    data = json.loads((tmp_path / pace.PACE_FILE).read_text())
    rates = sorted(entry["train_img_s"] for entry in data.values())
    assert rates == sorted(float(100 * p + i + 1) for p in range(PROCESSES) for i in range(ENTRIES))
    # Nothing of the lock is left behind: the next writer takes it at once.
    assert [p.name for p in tmp_path.iterdir()] == [pace.PACE_FILE]


def test_a_waiter_gives_up_at_its_timeout_and_takes_the_lock_once_released(tmp_path):
    path = tmp_path / ".lock"
    with locked(path, timeout=1) as held:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match=f"still held after 0.2 s \\(pid {os.getpid()} on "):
            with locked(path, timeout=0.2):
                pass
        assert 0.2 <= time.monotonic() - start < 2.0
        assert held.holder()["token"] == held.token  # the waiter left the holder's lock alone
    with locked(path, timeout=0.2) as again:  # released: taken at once
        assert again.holder()["token"] == again.token
    assert not path.exists()
