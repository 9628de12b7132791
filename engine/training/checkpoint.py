"""Checkpoints of a run folder: the per-epoch state that resumes a run, and
the saved models (``best.keras`` / ``last.keras``)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from engine.io import atomic_json, atomic_open

CHECKPOINT = "ckpt"


def save_checkpoint(run: Path, classifier, epoch: int, history: list[dict]) -> None:
    """Weights and optimizer state of a finished epoch, written atomically.

    The arrays go to a new file first (flushed to disk); the small JSON that
    names it is replaced last, so a kill at any moment leaves the previous
    checkpoint or the new one, never a mix.
    """
    folder = run / CHECKPOINT
    folder.mkdir(exist_ok=True)
    name = f"state-{epoch:04d}.npz"
    arrays = {f"v{i}": np.asarray(v) for i, v in enumerate(classifier.net.variables)}
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(classifier.optimizer.variables)})
    with atomic_open(folder / name, "wb", durable=True) as f:
        np.savez(f, **arrays)
    atomic_json(folder / "state.json", {"epoch": epoch, "file": name, "history": history}, indent=None)
    for old in folder.glob("state-*.npz"):
        if old.name != name:
            old.unlink()


def load_checkpoint(run: Path, classifier) -> tuple[int, list[dict]]:
    """Restores the last finished epoch; returns (epochs done, history)."""
    meta_path = run / CHECKPOINT / "state.json"
    if not meta_path.is_file():
        return 0, []
    meta = json.loads(meta_path.read_text())
    with np.load(run / CHECKPOINT / meta["file"]) as arrays:
        if not classifier.optimizer.built:
            classifier.optimizer.build(classifier.net.trainable_variables)
        for i, v in enumerate(classifier.net.variables):
            v.assign(arrays[f"v{i}"])
        for i, v in enumerate(classifier.optimizer.variables):
            v.assign(arrays[f"o{i}"])
    return meta["epoch"] + 1, meta["history"]


def save_model(net: keras.Model, path: Path) -> None:
    """``net`` as a ``.keras`` file (loadable in safe mode), atomically."""
    tmp = path.with_name(path.stem + ".tmp.keras")  # Keras wants the .keras suffix
    net.save(tmp)
    tmp.replace(path)
