"""``engine compare``: the paper's learning-rate and batch-size studies as a sweep.

Every trial is one training run (``engine.training``) in ``DIR/trials/<name>``;
trials of one shape reuse one compiled model, so a sweep builds and compiles
InceptionV3 once per batch size, not once per trial. Precision and XLA are
resolved once for the whole sweep. A finished trial is skipped when the same
command runs again, an interrupted one resumes from its last epoch, and a
different config on the same DIR is refused.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras

from engine import machine, training
from engine.config import SweepConfig, TrainConfig, differences
from engine.data.manifest import load_manifest
from engine.errors import UserError
from engine.io import atomic_json
from engine.study import paper


@dataclass(frozen=True)
class Trial:
    name: str
    setting: str
    repeat: int
    config: TrainConfig


def setting_name(lr: float, batch: int, optimizer: str, axis: str) -> str:
    parts = {"lr": f"lr={lr:g}", "batch": f"batch={batch}", "optimizer": optimizer}
    shown = {"lr": ["lr"], "batch": ["batch"], "grid": ["lr", "batch"], "optimizer": ["optimizer"]}[axis]
    return " ".join(parts[k] for k in shown)


def trials(sweep: SweepConfig, every_shard: bool = False) -> list[Trial]:
    """Every trial of the sweep (of its shard, unless ``every_shard``) in a fixed
    order; repeats of a setting share the seeds of every other setting (paired
    comparison: same data order and augmentations per seed)."""
    smallest = min(sweep.batch_sizes)
    out = []
    for lr in sweep.lrs:
        for batch in sweep.batch_sizes:
            for optimizer in sweep.optimizers:
                ratio = batch / smallest
                scaled = lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[sweep.lr_scaling]
                epochs = sweep.base.epochs
                if sweep.budget == "steps":
                    # Same number of optimizer updates as the smallest batch.
                    epochs = max(1, round(sweep.base.epochs * ratio))
                setting = setting_name(lr, batch, optimizer, sweep.axis)
                for repeat in range(sweep.repeats):
                    name = f"{setting.replace('=', '').replace(' ', '_')}_seed{sweep.seed + repeat}"
                    cfg = replace(sweep.base, lr=scaled, batch_size=batch, optimizer=optimizer, epochs=epochs,
                                  seed=sweep.seed + repeat, out=sweep.base.out / "trials" / name)
                    out.append(Trial(name, setting, repeat, cfg))
    if every_shard:
        return out
    index, count = sweep.shard
    return out[index::count]


# --- dry run ------------------------------------------------------------------

def split_counts(sweep: SweepConfig) -> dict[str, int]:
    """Train and val images of the sweep's records (the paper's 500/100 for the
    embedded set before it is built); a batch larger than train is an error."""
    if sweep.base.records is None:
        return {"train": 500, "val": 100}
    manifest = load_manifest(sweep.base.records)
    counts = {s: manifest["splits"].get(s, {}).get("count", 0) for s in ("train", "val")}
    too_big = [b for b in sweep.batch_sizes if b > counts["train"]]
    if too_big:
        raise UserError(f"batch size {too_big[0]} is larger than the train split ({counts['train']} images)")
    return counts


def estimate_seconds(trial_list: list[Trial], train_images: int, val_images: int, images_per_second: float) -> float:
    """A rough wall time: images trained and evaluated at a given training rate
    (evaluation counted at three times the training rate)."""
    return sum(t.config.epochs * (train_images + val_images / 3) / images_per_second for t in trial_list)


def rough_rate(image_size: int, model: str) -> float:
    """Training images/s to expect, for --dry-run: measured InceptionV3 rates on the
    2-core reference CPU (bf16, ~15 img/s at 299 px), scaled by pixel count; a GPU
    is assumed 50x faster. A rough figure, stated as such."""
    rate = 15.0 * (299 / image_size) ** 2 * 0.6  # small images use the cores less well
    if model != "InceptionV3":
        rate *= 3
    return rate * (50 if machine.gpus() else 1)


def with_records(sweep: SweepConfig, quiet: bool = False) -> SweepConfig:
    """The sweep on its records: the embedded set's, at the sweep's image
    size, built on first use when none were given."""
    from engine.data.embedded import records_or_embedded

    records = records_or_embedded(sweep.base.records, sweep.base.model.image_size, quiet)
    return replace(sweep, base=replace(sweep.base, records=records))


def total_steps(plan: list[Trial], train_images: int) -> int:
    """Training steps of the trials, for the dashboard's overall bar."""
    return sum(t.config.epochs * (train_images // t.config.batch_size) for t in plan)


# --- the run ------------------------------------------------------------------

def check_existing(out: Path, sweep: SweepConfig, force: bool) -> None:
    """Refuses a different sweep config on an existing folder (unless force)."""
    path = out / "sweep.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text()).get("config", {})
    differing = [k for k in differences(old, sweep) if k != "shard"]
    if differing and not force:
        raise UserError(f"{out} holds a sweep with another config (differs in: {', '.join(differing)}); "
                        f"use another --out or --force")


def run(sweep: SweepConfig, *, force: bool = False, on_event=None) -> list[dict]:
    """Runs (or resumes) every trial of this shard; returns their results.

    A trial that diverges or fails (e.g. out of memory) is recorded with its
    reason and the sweep goes on. ``on_event(kind, trial, info)`` drives the
    dashboard: kinds are queued, start, batch, epoch, end.
    """
    sweep = with_records(sweep, quiet=True)
    out = sweep.base.out
    out.mkdir(parents=True, exist_ok=True)
    check_existing(out, sweep, force)
    # Resolved once for the whole sweep (``auto`` probes the first trial's
    # shape; the BatchNorm momentum suits the trial with the fewest steps), so
    # every trial runs the same numerics and no axis is confounded by them.
    numerics = training.choose_numerics(replace(sweep.base, batch_size=sweep.batch_sizes[0]),
                                        largest_batch=max(sweep.batch_sizes))
    plan = trials(sweep)
    atomic_json(out / "sweep.json", {
        "config": sweep.to_json(), "machine": machine.describe(), "choice": numerics.to_json(),
        "deviations": paper.deviations(sweep, load_manifest(sweep.base.records), numerics.to_json(),
                                       machine.describe()),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "trials": [{"name": t.name, "setting": t.setting, "lr": t.config.lr, "batch_size": t.config.batch_size,
                    "optimizer": t.config.optimizer, "epochs": t.config.epochs, "seed": t.config.seed}
                   for t in trials(sweep, every_shard=True)]})
    write_hparams_config(out / "trials", sweep)
    event = on_event or (lambda *args: None)
    plan = [replace(t, config=replace(t.config, precision=numerics.precision.value, xla=numerics.xla.value))
            for t in plan]
    for trial in plan:
        event("queued", trial, {})
    results = []
    for trial in plan:
        metrics_path = trial.config.out / "metrics.json"
        if metrics_path.is_file() and json.loads(metrics_path.read_text()).get("status") in (
                training.STATUS_DONE, training.STATUS_DIVERGED):
            result = json.loads(metrics_path.read_text())
            event("end", trial, result)
            results.append(result)
            continue
        event("start", trial, {})
        write_hparams(trial)
        try:
            result = training.train(trial.config, quiet=True, force=force, callbacks=[EpochEvents(trial, event)],
                                    numerics=numerics)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - a failed trial (e.g. OOM) must not stop the sweep
            result = {"status": "failed", "reason": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
            trial.config.out.mkdir(parents=True, exist_ok=True)
            atomic_json(trial.config.out / "metrics.json", result)
        event("end", trial, result)
        results.append(result)
    return results


def write_hparams_config(folder: Path, sweep: SweepConfig) -> None:
    """The sweep's experiment for TensorBoard's HParams dashboard (``--logdir DIR/trials``)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    params = [hp.HParam("lr", hp.Discrete(sorted(set(sweep.lrs)))),
              hp.HParam("batch_size", hp.Discrete(sorted(set(sweep.batch_sizes)))),
              hp.HParam("optimizer", hp.Discrete(sorted(set(sweep.optimizers)))),
              hp.HParam("seed", hp.IntInterval(sweep.seed, sweep.seed + sweep.repeats - 1))]
    metrics = [hp.Metric("epoch_loss", group="validation", display_name="val loss"),
               hp.Metric("epoch_accuracy", group="validation", display_name="val accuracy"),
               hp.Metric("epoch_auc", group="validation", display_name="val AUC"),
               hp.Metric("epoch_loss", group="train", display_name="train loss")]
    folder.mkdir(parents=True, exist_ok=True)
    with tf.summary.create_file_writer(str(folder)).as_default():
        hp.hparams_config(hparams=params, metrics=metrics)


def write_hparams(trial: Trial) -> None:
    """The trial's settings as an HParams session, beside its Keras TensorBoard logs."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    values = {"lr": trial.config.lr, "batch_size": trial.config.batch_size,
              "optimizer": trial.config.optimizer, "seed": trial.config.seed}
    with tf.summary.create_file_writer(str(trial.config.out / "tb")).as_default():
        hp.hparams(values, trial_id=trial.name)


class EpochEvents(keras.callbacks.Callback):
    """Forwards a trial's per-batch and per-epoch progress to the dashboard."""

    def __init__(self, trial: Trial, event):
        super().__init__()
        self.trial, self.event = trial, event

    def on_train_batch_end(self, batch, logs=None):
        self.event("batch", self.trial, {"batch": batch + 1})

    def on_epoch_end(self, epoch, logs=None):
        self.event("epoch", self.trial, {"epoch": epoch + 1, **(logs or {})})
