"""The per-epoch side of a run, as Keras callbacks: clinical metrics, the
history row, the divergence check, the checkpoint, the best model and the
plain per-epoch line."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from engine.io import atomic_open
from engine.training.checkpoint import save_checkpoint, save_model


def sens_spec(logs: dict, prefix: str, positive_label: int) -> tuple[float, float]:
    tp, tn, fp, fn = (float(logs.get(f"{prefix}{k}", np.nan)) for k in ("tp", "tn", "fp", "fn"))
    if positive_label == 0:  # the positive class is label 0: swap the roles
        tp, tn, fp, fn = tn, tp, fn, fp
    sensitivity = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    return sensitivity, specificity


class RunRecorder(keras.callbacks.Callback):
    """Per epoch: clinical metrics, history row, divergence check, checkpoint, best model."""

    def __init__(self, run: Path, classifier, positive_label: int, history: list[dict],
                 steps_per_epoch: int, batch_size: int, keep_best: bool = False):
        super().__init__()
        self.run, self.classifier, self.positive = run, classifier, positive_label
        self.history, self.steps, self.batch_size = history, steps_per_epoch, batch_size
        self.diverged: int | None = None
        self.best = min((h["val_loss"] for h in history if h.get("val_loss") is not None), default=math.inf)
        # A host copy of the best weights of this session (``keep_best``), so the
        # run can be scored with them at its end without reading best.keras back.
        self.keep_best = keep_best
        self.best_weights: tuple[int, list] | None = None  # (epoch, weights)
        self.epoch_start = time.perf_counter()
        self.first_step: float | None = None  # tracing + compilation + one step, this session
        self.epochs_this_session = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step is None:
            self.first_step = time.perf_counter() - self.epoch_start
        # A host sync per batch: the loss is already on the host for the
        # callbacks, and stopping at the first NaN keeps the last checkpoint clean.
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = len(self.history)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        # Keras hands every callback the same dict: what is added here (the
        # clinical metrics, images/s) reaches the printer and the dashboard.
        logs = logs if logs is not None else {}
        seconds = time.perf_counter() - self.epoch_start
        # The session's first epoch pays tracing and compilation in its first
        # step: its rate leaves that step out (compile time is reported apart).
        steps, timed = self.steps, seconds
        if self.epochs_this_session == 0 and self.first_step is not None and self.steps > 1:
            steps, timed = self.steps - 1, max(seconds - self.first_step, 1e-9)
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
        if self.diverged is not None or row["loss"] is None or not weights_finite(self.classifier.net):
            self.diverged = epoch
            self.model.stop_training = True
            return
        self.history.append(row)
        write_history(self.run / "history.csv", self.history)
        if row["val_loss"] is not None and row["val_loss"] < self.best:
            self.best = row["val_loss"]
            save_model(self.classifier.net, self.run / "best.keras")
            if self.keep_best:
                self.best_weights = (row["epoch"], self.classifier.net.get_weights())
        save_checkpoint(self.run, self.classifier, epoch, self.history)
        logs.update({k: v for k, v in row.items() if k not in logs and v is not None})


def weights_finite(net: keras.Model) -> bool:
    """True when every weight is finite. Checked once per epoch (one host sync):
    the loss alone can hide a blown-up model, because binary cross-entropy
    clips NaN predictions to a finite value."""
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32)))
                               for v in net.trainable_variables]))


def write_history(path: Path, history: list[dict]) -> None:
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


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
