"""``engine compare``: the paper's learning-rate and batch-size studies as a sweep.

Every trial is one ``engine.train`` run in ``DIR/trials/<name>``; trials of
one shape reuse one compiled model (``engine.train``), so a sweep builds and
compiles InceptionV3 once per batch size, not once per trial. A finished
trial is skipped when the same command runs again, an interrupted one resumes
from its last epoch, and a different config on the same DIR is refused.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras

from engine.config import ModelConfig, TrainConfig, to_json
from engine.errors import UserError

AXES = ("lr", "batch", "grid", "optimizer")
PAPER_LRS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
PAPER_BATCHES = (5, 10, 15)


@dataclass(frozen=True)
class Preset:
    """A named study. The docstrings of PRESETS say how to run each and what to expect."""

    lrs: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    lr_for_batch_axis: float
    batch_for_lr_axis: int
    epochs: int
    repeats: int
    image_size: int
    weights: str
    augment: str = "paper"
    model: str = "InceptionV3"
    xla: str = "auto"
    optimizers: tuple[str, ...] = ("adam", "sgd", "rmsprop", "nadam")


PRESETS = {
    # The paper, faithfully: `engine compare RECORDS --axis lr --preset paper`
    # (and --axis batch), RECORDS built with `--subset 500,100,100` at 299 px.
    # InceptionV3 with ImageNet weights, Adam, 20 epochs, one run per setting
    # (as the paper: the report then says no noise verdict is possible), the
    # paper's augmentation. The paper found: lr 1e-4 and 1e-5 best (accuracy
    # near 1, loss < 0.2), 1e-2/1e-3 erratic loss spikes, 1e-6/1e-7 loss
    # 0.2-0.3; batch 5 best, 10 and 15 with loss spikes. On the 2-core
    # reference CPU (bf16 chosen by the probe) one trial measured 19 min,
    # so the lr axis takes about 1.9 h and the batch axis about 55 min
    # (benchmarks/RESULTS.md); a V100-class GPU should do a trial in minutes.
    "paper": Preset(lrs=PAPER_LRS, batch_sizes=PAPER_BATCHES, lr_for_batch_axis=1e-4, batch_for_lr_axis=5,
                    epochs=20, repeats=1, image_size=299, weights="imagenet"),
    # A few minutes on a 2-core CPU, build included: the embedded synthetic set
    # at 96 px, InceptionV3 from scratch, 3 learning rates or batch sizes, 3
    # epochs, 2 repeats (so a noise verdict is possible), the paper's
    # augmentation: `engine compare --axis batch --preset quick`. Expected:
    # lr 1e-2 unstable, 1e-3 best on validation; measured times in
    # benchmarks/RESULTS.md.
    # XLA stays off: it measured slower for InceptionV3 on CPUs
    # (benchmarks/RESULTS.md), and probing it would cost a minute of the budget.
    "quick": Preset(lrs=(1e-2, 1e-3, 1e-4), batch_sizes=(8, 16, 32), lr_for_batch_axis=1e-3,
                    batch_for_lr_axis=16, epochs=3, repeats=2, image_size=96, weights="none", xla="off"),
}


@dataclass(frozen=True)
class SweepConfig:
    """One study: the axis, its settings, and the training config they vary.

    Attributes:
        axis: lr | batch | grid (lr x batch) | optimizer.
        preset: paper | quick (fills every unset field).
        lrs, batch_sizes, optimizers: the settings of the axis.
        repeats: runs per setting, seeds ``seed``, ``seed + 1``, ...
        budget: epochs (as the paper: every batch size trains the same
            epochs, so larger batches get fewer updates) or steps (epochs
            scaled so every batch size makes the same number of updates).
        lr_scaling: none | linear | sqrt, for the batch axis: the learning
            rate times (batch / smallest batch) or its square root.
        shard: ``(i, n)`` runs the i-th of n deterministic slices of the trials.
        base: the training config every trial starts from.
    """

    axis: str = "lr"
    preset: str = "quick"
    lrs: tuple[float, ...] = ()
    batch_sizes: tuple[int, ...] = ()
    optimizers: tuple[str, ...] = ()
    repeats: int = 1
    seed: int = 0
    budget: str = "epochs"
    lr_scaling: str = "none"
    shard: tuple[int, int] = (0, 1)
    base: TrainConfig = TrainConfig()

    def to_json(self) -> dict:
        return to_json(self)


@dataclass(frozen=True)
class Trial:
    name: str
    setting: str
    repeat: int
    config: TrainConfig


def resolve(axis: str, preset_name: str, records: Path | None, out: Path, *, lrs=None, batch_sizes=None,
            optimizers=None, epochs=None, repeats=None, seed=0, image_size=None, model=None, precision="auto",
            xla=None, weights=None, budget="epochs", lr_scaling="none", shard=(0, 1)) -> SweepConfig:
    """The sweep config from a preset and the user's overrides, validated."""
    if axis not in AXES:
        raise UserError(f"--axis must be one of {', '.join(AXES)}, not {axis!r}")
    if preset_name not in PRESETS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)}, not {preset_name!r}")
    if budget not in ("epochs", "steps"):
        raise UserError(f"--budget must be epochs or steps, not {budget!r}")
    if lr_scaling not in ("none", "linear", "sqrt"):
        raise UserError(f"--lr-scaling must be none, linear or sqrt, not {lr_scaling!r}")
    preset = PRESETS[preset_name]
    lrs = tuple(lrs or (preset.lrs if axis in ("lr", "grid") else (preset.lr_for_batch_axis,)))
    batch_sizes = tuple(batch_sizes or (preset.batch_sizes if axis in ("batch", "grid")
                                        else (preset.batch_for_lr_axis,)))
    optimizers = tuple(optimizers or (preset.optimizers if axis == "optimizer" else ("adam",)))
    repeats = preset.repeats if repeats is None else repeats
    if any(not lr > 0 for lr in lrs):
        raise UserError(f"every learning rate must be > 0, got {', '.join(map(str, lrs))}")
    if any(b < 1 for b in batch_sizes):
        raise UserError(f"every batch size must be >= 1, got {', '.join(map(str, batch_sizes))}")
    if repeats < 1:
        raise UserError(f"--repeats must be >= 1, not {repeats}")
    index, count = shard
    if not 0 <= index < count:
        raise UserError(f"--shard must be i/n with 0 <= i < n, not {index}/{count}")
    base = TrainConfig(records=records, out=out, epochs=preset.epochs if epochs is None else epochs,
                       augment=preset.augment, precision=precision, xla=xla or preset.xla, seed=seed,
                       model=ModelConfig(name=model or preset.model, weights=weights or preset.weights,
                                         image_size=image_size or preset.image_size),
                       lr=lrs[0], batch_size=batch_sizes[0])
    base.validate()
    return SweepConfig(axis=axis, preset=preset_name, lrs=lrs, batch_sizes=batch_sizes, optimizers=optimizers,
                       repeats=repeats, seed=seed, budget=budget, lr_scaling=lr_scaling, shard=shard, base=base)


def setting_name(lr: float, batch: int, optimizer: str, axis: str) -> str:
    parts = {"lr": f"lr={lr:g}", "batch": f"batch={batch}", "optimizer": optimizer}
    shown = {"lr": ["lr"], "batch": ["batch"], "grid": ["lr", "batch"], "optimizer": ["optimizer"]}[axis]
    return " ".join(parts[k] for k in shown)


def trials(sweep: SweepConfig) -> list[Trial]:
    """Every trial of the sweep in a fixed order; repeats of a setting share the
    seeds of every other setting (paired comparison: same data order and
    augmentations per seed)."""
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
    index, count = sweep.shard
    return out[index::count]


def estimate_seconds(trial_list: list[Trial], train_images: int, val_images: int, images_per_second: float) -> float:
    """A rough wall time: images trained and evaluated at a given training rate
    (evaluation counted at three times the training rate)."""
    total = 0.0
    for t in trial_list:
        total += t.config.epochs * (train_images + val_images / 3) / images_per_second
    return total


def rough_rate(image_size: int, model: str) -> float:
    """Training images/s to expect, for --dry-run: measured InceptionV3 rates on the
    2-core reference CPU (bf16, ~15 img/s at 299 px), scaled by pixel count; a GPU
    is assumed 50x faster. A rough figure, stated as such."""
    import tensorflow as tf

    rate = 15.0 * (299 / image_size) ** 2 * 0.6  # small images use the cores less well
    if model != "InceptionV3":
        rate *= 3
    return rate * (50 if tf.config.list_physical_devices("GPU") else 1)


def check_existing(out: Path, sweep: SweepConfig, force: bool) -> None:
    """Refuses a different sweep config on an existing folder (unless force)."""
    path = out / "sweep.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text()).get("config", {})
    new = sweep.to_json()
    differing = sorted(k for k in set(old) | set(new) if k != "shard" and old.get(k) != new.get(k))
    if differing and not force:
        raise UserError(f"{out} holds a sweep with another config (differs in: {', '.join(differing)}); "
                        f"use another --out or --force")


def fixed_choice(sweep: SweepConfig) -> dict:
    """Precision and XLA resolved once for the whole sweep (``auto`` probes the
    first trial's shape), so every trial runs the same numerics."""
    from engine import records, train as train_lib
    from engine.device import resolve as resolve_device

    base = replace(sweep.base, batch_size=sweep.batch_sizes[0])
    manifest = records.load_manifest(train_lib.resolve_records(base, quiet=True))
    precision, xla = resolve_device(base.precision, base.xla, train_lib.probe_rates(base, manifest),
                                    key=f"{base.model.name}|{manifest['image_size'][0]}|{base.batch_size}")
    return {"precision": precision.value, "xla": xla.value, "reason": precision.reason}


def run(sweep: SweepConfig, *, force: bool = False, on_event=None) -> list[dict]:
    """Runs (or resumes) every trial of this shard; returns their results.

    A trial that diverges or fails (e.g. out of memory) is recorded with its
    reason and the sweep goes on. ``on_event(kind, trial, info)`` drives the
    dashboard: kinds are queued, start, epoch, end.
    """
    from engine import train as train_lib
    from engine.device import machine

    out = sweep.base.out
    out.mkdir(parents=True, exist_ok=True)
    check_existing(out, sweep, force)
    choice = fixed_choice(sweep)
    # Atomic: shards of one sweep may write it at the same moment.
    tmp = out / f"sweep.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"config": sweep.to_json(), "machine": machine(), "choice": choice,
                               "created": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
    tmp.replace(out / "sweep.json")
    write_hparams_config(out / "trials", sweep)
    event = on_event or (lambda *args: None)
    plan = [replace(t, config=replace(t.config, precision=choice["precision"], xla=choice["xla"]))
            for t in trials(sweep)]
    for trial in plan:
        event("queued", trial, {})
    results = []
    for trial in plan:
        metrics_path = trial.config.out / "metrics.json"
        if metrics_path.is_file() and json.loads(metrics_path.read_text()).get("status") in ("done", "diverged"):
            result = json.loads(metrics_path.read_text())
            event("end", trial, result)
            results.append(result)
            continue
        event("start", trial, {})
        write_hparams(trial)
        callback = EpochEvents(trial, event)
        try:
            result = train_lib.train(trial.config, quiet=True, force=force, callbacks=[callback])
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - a failed trial (e.g. OOM) must not stop the sweep
            result = {"status": "failed", "reason": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
            trial.config.out.mkdir(parents=True, exist_ok=True)
            (trial.config.out / "metrics.json").write_text(json.dumps(result, indent=1))
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
