"""Checkpoints of a run folder: the per-epoch state that resumes a run
(written off the training thread), and the saved models (``best.keras`` /
``last.keras``)."""

from __future__ import annotations

import shutil
import threading
import zipfile
from pathlib import Path

import keras
import numpy as np

from engine.errors import DamagedState
from engine.io import atomic_json, atomic_open, needing, read_json
from engine.results.runs import CHECKPOINT, STATE


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
    with needing(sum(a.nbytes for a in arrays.values()) / 2 ** 20), \
            atomic_open(folder / name, "wb", durable=True) as f:
        np.savez(f, **arrays)
    atomic_json(folder / STATE, {"epoch": epoch, "file": name, "history": history, "best_epoch": best_epoch},
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


def read_state(run: Path) -> dict | None:
    """``ckpt/state.json`` checked (None when there is none); ``DamagedState`` if it cannot be used."""
    path = run / CHECKPOINT / STATE
    if not path.is_file():
        return None
    meta = read_json(path)
    if not (isinstance(meta.get("epoch"), int) and isinstance(meta.get("file"), str)
            and isinstance(meta.get("history"), list) and len(meta["history"]) == meta["epoch"] + 1):
        raise DamagedState(path, "not a checkpoint's state: epoch, file or history missing or inconsistent")
    return meta


def read_arrays(path: Path, classifier) -> dict[str, np.ndarray]:
    """Every array of a checkpoint file, checked against the classifier's
    variables before any is assigned (a damaged file leaves the model as it was)."""
    try:
        with np.load(path) as f:
            arrays = {key: f[key] for key in f.files}
    except FileNotFoundError:
        raise DamagedState(path, "missing") from None
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as err:
        what = "empty" if path.stat().st_size == 0 else f"not a readable checkpoint: {str(err).splitlines()[0]}"
        raise DamagedState(path, what) from None
    expected = [(f"v{i}", v.shape) for i, v in enumerate(classifier.net.variables)]
    for key, shape in expected:
        if key not in arrays or tuple(arrays[key].shape) != tuple(shape):
            raise DamagedState(path, f"array {key} missing or of another shape than the model's")
    return arrays


def load_checkpoint(run: Path, classifier) -> tuple[int, list[dict], tuple[int, list] | None]:
    """Restores the last finished epoch; returns (epochs done, history, best
    weights as (epoch, weights) when they differ from the restored ones).
    A checkpoint that cannot be read raises ``DamagedState`` with the model untouched."""
    meta = read_state(run)
    if meta is None:
        return 0, [], None
    arrays = read_arrays(run / CHECKPOINT / meta["file"], classifier)
    best = None
    if not classifier.optimizer.built:
        classifier.optimizer.build(classifier.net.trainable_variables)
    optimizer = [(f"o{i}", v) for i, v in enumerate(classifier.optimizer.variables)]
    if any(key not in arrays or tuple(arrays[key].shape) != tuple(v.shape) for key, v in optimizer):
        raise DamagedState(run / CHECKPOINT / meta["file"], "optimizer state missing or of another shape")
    for i, v in enumerate(classifier.net.variables):
        v.assign(arrays[f"v{i}"])
    for key, v in optimizer:
        v.assign(arrays[key])
    if "b0" in arrays:
        best = (meta["best_epoch"], [arrays[f"b{i}"] for i in range(len(classifier.net.weights))])
    if best is None and meta.get("best_epoch") == meta["epoch"] + 1:
        best = (meta["best_epoch"], classifier.net.get_weights())  # the restored epoch is the best
    return meta["epoch"] + 1, meta["history"], best


def checkpoint_mb(classifier) -> float:
    """Size of one checkpoint of ``classifier`` (weights and optimizer state), in MB."""
    variables = list(classifier.net.variables) + list(classifier.optimizer.variables)
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables) / 2 ** 20


def remove_checkpoint(run: Path) -> None:
    """Removes a finished run's resume checkpoint (nothing is left to resume)."""
    shutil.rmtree(run / CHECKPOINT, ignore_errors=True)


def save_model(net: keras.Model, path: Path) -> None:
    """``net`` as a ``.keras`` file (loadable in safe mode), atomically."""
    tmp = path.with_name(path.stem + ".tmp.keras")  # Keras wants the .keras suffix
    net.save(tmp)
    tmp.replace(path)
