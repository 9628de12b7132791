"""The run folder's format: the files a training run leaves, its statuses and
the one rule that says a run is finished, read and written here only.

A run folder (``engine train --out``, or a sweep's ``DIR/trials/NAME``) holds
``config.json`` (the resolved training config), ``data.json`` (the records'
label map and image format), ``history.csv`` (one row per finished epoch),
``metrics.json`` (the result: its status, the scored model's validation and
test metrics, the files of its per-image scores), ``scores-val.csv`` and
``scores-test.csv`` (each image's P(positive)), ``failure.txt`` (the
traceback of a trial that failed), the saved models and the resume
checkpoint. Training writes them through these functions; the sweep, its
trial processes, the dashboard, the report and the bench read them through
these functions.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from engine.errors import DamagedState
from engine.io import atomic_json, atomic_open, read_json

CONFIG = "config.json"
DATA = "data.json"
HISTORY = "history.csv"
METRICS = "metrics.json"
SCORES = "scores-{}.csv"
FAILURE = "failure.txt"
MODELS = ("best.keras", "last.keras")
LOGS = "tb"
# The resume checkpoint: a folder, and the state file in it that names its arrays and history.
CHECKPOINT = "ckpt"
STATE = "state.json"

STATUS_DONE, STATUS_DIVERGED, STATUS_FAILED = "done", "diverged", "failed"
# A run that will not train again: it ended, or its numbers left every bound.
FINISHED = (STATUS_DONE, STATUS_DIVERGED)

# Per-image scores: the example's position in the split's scoring order, its
# id, its class label (0/1 as in the records), 1 if it is of the positive
# class, and P(positive).
SCORE_COLUMNS = ("index", "id", "label", "positive", "score")


def scores_path(run: Path, split: str) -> Path:
    return Path(run) / SCORES.format(split)


# --- metrics.json -----------------------------------------------------------------

def read_metrics(run: Path, todo: str = "") -> dict | None:
    """A run's ``metrics.json`` (None when it has none yet); ``DamagedState`` when unreadable."""
    path = Path(run) / METRICS
    return read_json(path, todo) if path.is_file() else None


def write_metrics(run: Path, result: dict) -> None:
    """Replaces a run's ``metrics.json`` with ``result``, atomically."""
    atomic_json(Path(run) / METRICS, result)


def finished_metrics(run: Path) -> dict | None:
    """The ``metrics.json`` of a run that finished (done or diverged); None
    otherwise, or when it is damaged (whoever trains the run deals with that)."""
    try:
        result = read_metrics(run)
    except DamagedState:
        return None
    return result if result is not None and result.get("status") in FINISHED else None


def finished(run: Path) -> bool:
    """The one rule: a run is finished when its ``metrics.json`` says done or diverged."""
    return finished_metrics(run) is not None


# --- history.csv ------------------------------------------------------------------

def history_path(run: Path) -> Path:
    return Path(run) / HISTORY


def read_history(path: Path) -> list[dict]:
    """A ``history.csv`` (a run folder's, or the file itself) as rows of
    numbers (empty cells None), checked: its epochs must count 1, 2, 3, ..."""
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        history = [{k: (None if v in ("", "None") else float(v)) for k, v in row.items()} for row in rows]
        for row in history:
            row["epoch"] = int(row["epoch"])
    except FileNotFoundError:
        raise DamagedState(path, "missing") from None
    except (ValueError, KeyError, TypeError, csv.Error, UnicodeDecodeError) as err:
        raise DamagedState(path, f"not a history: {err}") from None
    if [row["epoch"] for row in history] != list(range(1, len(history) + 1)):
        raise DamagedState(path, "its epochs do not count 1, 2, 3, ...")
    return history


def write_history(path: Path, history: list[dict]) -> None:
    """Replaces a ``history.csv`` (a run folder's, or the file itself) with ``history``, atomically."""
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY
    # Columns in order of first appearance: rows of an older session of a
    # resumed run may lack the newer ones.
    fields = list(dict.fromkeys(key for row in history for key in row))
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)


def epochs_done(run: Path) -> list[dict]:
    """The finished epochs a run folder records (none when it has no readable history yet)."""
    try:
        return read_history(Path(run) / HISTORY)
    except DamagedState:
        return []


# --- scores-SPLIT.csv -------------------------------------------------------------

def save_scores(path: Path, ids: list[str], labels: np.ndarray, positive: np.ndarray, scores: np.ndarray) -> None:
    """Writes one split's per-image scores (``SCORE_COLUMNS``); scores in full float precision."""
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SCORE_COLUMNS)
        for i, (example, label, is_positive, score) in enumerate(zip(ids, labels, positive, scores)):
            writer.writerow([i, example, int(label), int(is_positive), repr(float(score))])


def read_scores(path: Path) -> dict[str, np.ndarray]:
    """A ``scores-SPLIT.csv`` as arrays: ``id`` (str), ``label``, ``positive`` (int64), ``score`` (float64)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {"id": np.array([r["id"] for r in rows], dtype=str),
            "label": np.array([int(r["label"]) for r in rows], dtype=np.int64),
            "positive": np.array([int(r["positive"]) for r in rows], dtype=np.int64),
            "score": np.array([float(r["score"]) for r in rows], dtype=np.float64)}
