"""The per-epoch side of a run, as Keras callbacks: clinical metrics, the
history row, the divergence check, the checkpoint, the best model and the
plain per-epoch line."""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from engine.results.runs import write_history
from engine.training.checkpoint import CheckpointWriter


def sens_spec(logs: dict, prefix: str, positive_label: int) -> tuple[float, float]:
    tp, tn, fp, fn = (float(logs.get(f"{prefix}{k}", np.nan)) for k in ("tp", "tn", "fp", "fn"))
    if positive_label == 0:  # the positive class is label 0: swap the roles
        tp, tn, fp, fn = tn, tp, fn, fp
    sensitivity = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    return sensitivity, specificity


class RunRecorder(keras.callbacks.Callback):
    """Per epoch: clinical metrics, the history row with where the epoch's time
    went, the divergence check, the checkpoint and the best weights.

    Nothing here runs per batch. Divergence is checked once per epoch (a NaN
    or Inf in any step's loss carries into the epoch's mean loss, and the
    weights are checked too), before that epoch's checkpoint, which therefore
    stays clean. (Keras still converts each batch's logs on the host for its
    TensorBoard callback's batch-end hook. Marking every hook safe for Keras'
    asynchronous dispatch instead measured a 24-54 s stall at the end of
    ``fit`` on a CPU, waiting for its helper threads: not worth the ~1 ms a
    step the conversion costs there.) The best weights are kept on the host and written as
    ``best.keras`` once, at the end (``Run.fit``), not at every improvement.
    ``before_validation`` (``--bn-stats precise``: the BatchNorm statistics
    estimated again) runs as each validation pass begins; its time is the
    history's ``bn_seconds``, apart from training and validation.
    """

    def __init__(self, run: Path, classifier, positive_label: int, history: list[dict],
                 steps_per_epoch: int, batch_size: int, best: tuple[int, list] | None = None,
                 before_validation=None):
        super().__init__()
        self.before_validation = before_validation
        self.bn_seconds = 0.0
        self.run, self.classifier, self.positive = run, classifier, positive_label
        self.history, self.steps, self.batch_size = history, steps_per_epoch, batch_size
        self.diverged: int | None = None
        self.diverged_reason = ""
        self.best = min((h["val_loss"] for h in history if h.get("val_loss") is not None), default=math.inf)
        # A host copy of the weights of the lowest val loss so far: (epoch, weights).
        self.best_weights: tuple[int, list] | None = best
        self.writer = CheckpointWriter(run)
        self.epoch_start = self.val_start = time.perf_counter()
        self.val_seconds = 0.0
        self.first_step: float | None = None  # tracing + compilation + one step, this session
        self.epochs_this_session = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()
        self.val_seconds = self.bn_seconds = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        # The second batch begins when the first step (tracing, compilation)
        # has returned: timed here, as a begin hook costs no host sync.
        if batch == 1 and self.first_step is None:
            self.first_step = time.perf_counter() - self.epoch_start

    def on_test_begin(self, logs=None):
        if self.before_validation is not None:
            started = time.perf_counter()
            self.before_validation()
            self.bn_seconds = time.perf_counter() - started
        self.val_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.val_seconds = time.perf_counter() - self.val_start

    def on_epoch_end(self, epoch, logs=None):
        # Keras hands every callback the same dict: what is added here (the
        # clinical metrics, images/s) reaches the printer and the dashboard.
        logs = logs if logs is not None else {}
        seconds = time.perf_counter() - self.epoch_start
        train_seconds = max(seconds - self.val_seconds - self.bn_seconds, 1e-9)
        # The session's first epoch pays tracing and compilation in its first
        # step: its rate leaves that step out (compile time is reported apart).
        steps, timed = self.steps, train_seconds
        if self.epochs_this_session == 0 and self.first_step is not None and self.steps > 1:
            steps, timed = self.steps - 1, max(train_seconds - self.first_step, 1e-9)
        self.epochs_this_session += 1
        row = {"epoch": epoch + 1, "seconds": round(seconds, 3),
               "images_per_second": round(steps * self.batch_size / timed, 2)}
        for key in ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"):
            value = logs.get(key)
            row[key] = None if value is None or not math.isfinite(float(value)) else float(value)
        for prefix in ("", "val_"):
            sens, spec = sens_spec(logs, prefix, self.positive)
            row[f"{prefix}sensitivity"] = None if math.isnan(sens) else sens
            row[f"{prefix}specificity"] = None if math.isnan(spec) else spec
        row["lr"] = float(keras.ops.convert_to_numpy(self.classifier.optimizer.learning_rate))
        reason = divergence(row["loss"], self.classifier.net)
        if reason is not None:
            self.diverged, self.diverged_reason = epoch, reason
            self.model.stop_training = True
            return
        saving = time.perf_counter()
        if row["val_loss"] is not None and row["val_loss"] < self.best:
            self.best = row["val_loss"]
            self.best_weights = (row["epoch"], self.classifier.net.get_weights())
        # Where the epoch's wall time went (the checkpoint's part is its host
        # copy: the write itself overlaps the next epoch).
        row.update({"train_seconds": round(train_seconds, 3), "val_seconds": round(self.val_seconds, 3),
                    "first_step_seconds": round(self.first_step, 3)
                    if self.epochs_this_session == 1 and self.first_step is not None else None})
        if self.before_validation is not None:
            row["bn_seconds"] = round(self.bn_seconds, 3)
        self.history.append(row)
        self.writer.save(self.classifier, epoch, self.history, self.best_weights)
        row["save_seconds"] = round(time.perf_counter() - saving, 3)
        write_history(self.run, self.history)
        logs.update({k: v for k, v in row.items() if k not in logs and v is not None})

    def on_train_end(self, logs=None):
        self.writer.wait()


# A training loss above this is divergence. Binary cross-entropy of a model
# that guesses is ln 2 = 0.69, and the paper's spiky lr 1e-2 stays far below
# it; a multiple of the first epoch's loss would stop those spikes too.
LOSS_BOUND = 1e3


def divergence(loss: float | None, net: keras.Model) -> str | None:
    """Why an epoch diverged (None when it did not): a non-finite training loss
    (``None`` here), one above ``LOSS_BOUND``, or non-finite weights."""
    if loss is None:
        return "non-finite training loss"
    if loss > LOSS_BOUND:
        return f"training loss {loss:.3g} above the bound {LOSS_BOUND:.0e}"
    if not weights_finite(net):
        return "non-finite weights"
    return None


def weights_finite(net: keras.Model) -> bool:
    """True when every weight is finite. Checked once per epoch (one host sync):
    the loss alone can hide a blown-up model, because binary cross-entropy
    clips NaN predictions to a finite value."""
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32)))
                               for v in net.trainable_variables]))


class EpochPrinter(keras.callbacks.Callback):
    """One plain line per epoch (the sweep dashboard replaces this)."""

    def __init__(self, epochs: int, quiet: bool):
        super().__init__()
        self.epochs, self.quiet = epochs, quiet

    def on_train_begin(self, logs=None):
        if not self.quiet:  # the first step can take a minute: say why nothing moves
            print("compiling (the first step traces and compiles the model)", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        if self.quiet or not logs:
            return
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc", "val_sensitivity",
                    "val_specificity", "images_per_second"):
            if logs.get(key) is not None:
                parts.append(f"{key} {float(logs[key]):.4g}")
        print("  ".join(parts), flush=True)


class Progress(keras.callbacks.Callback):
    """Calls ``on_batch(batches)`` after each training batch (the epoch's
    batches so far) and ``on_epoch(epoch, logs)`` after each epoch (1-based):
    a caller's progress view (the sweep's dashboard) without a Keras class
    of its own above the training layer."""

    def __init__(self, on_batch, on_epoch):
        super().__init__()
        self.on_batch, self.on_epoch = on_batch, on_epoch

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch(batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self.on_epoch(epoch + 1, logs or {})
