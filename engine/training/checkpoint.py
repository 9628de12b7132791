"""Checkpoints of a run folder: the per-epoch state that resumes a run
(written off the training thread), and the saved models (``best.keras`` /
``last.keras``)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import keras
import numpy as np

from engine.io import atomic_json, atomic_open

CHECKPOINT = "ckpt"


def host_state(classifier) -> dict[str, np.ndarray]:
    """Copies of the weights and optimizer state on the host (``v0``..., ``o0``...)."""
    # .numpy() copies: training may go on changing the variables while the
    # copies are written out.
    arrays = {f"v{i}": v.numpy() for i, v in enumerate(classifier.net.variables)}
    arrays.update({f"o{i}": v.numpy() for i, v in enumerate(classifier.optimizer.variables)})
    return arrays


def write_checkpoint(run: Path, arrays: dict[str, np.ndarray], epoch: int, history: list[dict],
                     best: tuple[int, list[np.ndarray]] | None = None) -> None:
    """Writes a finished epoch's state, atomically.

    The arrays go to a new file first (flushed to disk); the small JSON that
    names it is replaced last, so a kill at any moment leaves the previous
    checkpoint or the new one, never a mix. ``best`` (epoch, network weights)
    is stored beside the state when it is not this epoch's own, so that a
    resumed run still has its best model.
    """
    folder = run / CHECKPOINT
    folder.mkdir(exist_ok=True)
    name = f"state-{epoch:04d}.npz"
    arrays = dict(arrays)
    best_epoch = None
    if best is not None:
        best_epoch = best[0]
        if best_epoch != epoch + 1:
            arrays.update({f"b{i}": w for i, w in enumerate(best[1])})
    with atomic_open(folder / name, "wb", durable=True) as f:
        np.savez(f, **arrays)
    atomic_json(folder / "state.json", {"epoch": epoch, "file": name, "history": history, "best_epoch": best_epoch},
                indent=None)
    for old in folder.glob("state-*.npz"):
        if old.name != name:
            old.unlink()


class CheckpointWriter:
    """Writes checkpoints on a background thread, one at a time.

    A checkpoint of InceptionV3 with Adam's state is ~350 MB written with an
    fsync: seconds per epoch that the training thread would otherwise wait
    for. Here the host copy is taken on the training thread (a memcpy), the
    write overlaps the next epoch, and a new checkpoint waits for the previous
    one, so at most one is in flight. A kill -9 during that write loses the
    epoch just finished as well as the one in progress (the previous
    checkpoint stays whole); an error in the writer surfaces at the next
    ``save`` or at ``wait``.
    """

    def __init__(self, run: Path):
        self.run = run
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, classifier, epoch: int, history: list[dict], best: tuple[int, list] | None = None) -> None:
        arrays = host_state(classifier)
        self.wait()
        history = [dict(row) for row in history]

        def write():
            try:
                write_checkpoint(self.run, arrays, epoch, history, best)
            except BaseException as err:  # noqa: BLE001 - re-raised on the training thread
                self._error = err

        self._thread = threading.Thread(target=write, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Blocks until the checkpoint in flight is on disk; raises its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err


def load_checkpoint(run: Path, classifier) -> tuple[int, list[dict], tuple[int, list] | None]:
    """Restores the last finished epoch; returns (epochs done, history, best
    weights as (epoch, weights) when they differ from the restored ones)."""
    meta_path = run / CHECKPOINT / "state.json"
    if not meta_path.is_file():
        return 0, [], None
    meta = json.loads(meta_path.read_text())
    best = None
    with np.load(run / CHECKPOINT / meta["file"]) as arrays:
        if not classifier.optimizer.built:
            classifier.optimizer.build(classifier.net.trainable_variables)
        for i, v in enumerate(classifier.net.variables):
            v.assign(arrays[f"v{i}"])
        for i, v in enumerate(classifier.optimizer.variables):
            v.assign(arrays[f"o{i}"])
        if "b0" in arrays:
            best = (meta["best_epoch"], [arrays[f"b{i}"] for i in range(len(classifier.net.weights))])
    if best is None and meta.get("best_epoch") == meta["epoch"] + 1:
        best = (meta["best_epoch"], classifier.net.get_weights())  # the restored epoch is the best
    return meta["epoch"] + 1, meta["history"], best


def save_model(net: keras.Model, path: Path) -> None:
    """``net`` as a ``.keras`` file (loadable in safe mode), atomically."""
    tmp = path.with_name(path.stem + ".tmp.keras")  # Keras wants the .keras suffix
    net.save(tmp)
    tmp.replace(path)
