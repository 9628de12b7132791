"""``engine compare``: the paper's learning-rate and batch-size studies as a sweep.

Every trial is one training run (``engine.training``) in ``DIR/trials/<name>``;
trials of one shape reuse one compiled model, so a sweep builds and compiles
InceptionV3 once per batch size, not once per trial. Precision and XLA are
resolved once for the whole sweep. A finished trial is skipped when the same
command runs again, an interrupted one resumes from its last epoch, and a
different config on the same DIR is refused.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras

from engine import machine, training
from engine.config import SweepConfig, TrainConfig, differences
from engine.data.manifest import load_manifest
from engine.errors import UserError
from engine.io import FolderLock, atomic_json, create_once
from engine.study import paper

LOCK = ".lock"  # a trial folder's lock: held while a runner trains it


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
    """Every trial of the sweep in a fixed order (of its shard or its one
    ``trial``, unless ``every_shard``); repeats of a setting share the seeds of
    every other setting (paired comparison: same data order and augmentations
    per seed)."""
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
    if sweep.trial:
        return [pick_trial(out, sweep.trial)]
    index, count = sweep.shard
    return out[index::count]


def pick_trial(plan: list[Trial], wanted: str) -> Trial:
    """The trial named ``wanted`` or at index ``wanted`` of the full list."""
    for i, trial in enumerate(plan):
        if wanted in (trial.name, str(i)):
            return trial
    raise UserError(f"--trial {wanted!r} is neither a trial name nor an index 0-{len(plan) - 1} of this sweep "
                    f"(engine compare ... --dry-run lists them)")


# --- dry run ------------------------------------------------------------------

def split_counts(sweep: SweepConfig) -> dict[str, int]:
    """Images per split of the sweep's records (and their channels; for the
    embedded set before it is built, its 500/100/100 in 1 channel); a batch
    larger than train is an error."""
    records = sweep.base.records
    built = False
    if records is None:
        from engine.data.embedded import embedded_records

        records = embedded_records(sweep.base.model.image_size, sweep.base.subset)
        if records is None:
            train, val, test = sweep.base.subset or (500, 100, 100)
            return {"train": train, "val": val, "test": test, "channels": 1}
        built = True
    manifest = load_manifest(records)
    counts = {s: manifest["splits"].get(s, {}).get("count", 0) for s in ("train", "val", "test")}
    counts.update(channels=manifest["channels"], built=built)
    too_big = [b for b in sweep.batch_sizes if b > counts["train"]]
    if too_big:
        raise UserError(f"batch size {too_big[0]} is larger than the train split ({counts['train']} images)")
    return counts


# Starting the sweep's process(es): Python and TensorFlow imported, the
# sweep's choices made (~15 s measured on the 2-core AVX2 CPU).
START_UP_SECONDS = 15.0


def step_key(cfg) -> tuple:
    """What tells a trial's compiled step apart from the other trials' of a
    sweep (training's classifier reuses one step while its graph is the
    same): the optimizer, and with a schedule built from the steps (not
    constant, or warmed up) the trial's own settings too."""
    if cfg.schedule == "constant" and cfg.warmup_epochs == 0:
        return (cfg.optimizer,)
    return (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs)


def estimate_seconds(sweep: SweepConfig, trial_list: list[Trial], counts: dict[str, int],
                     processes: int = 1) -> tuple[float, str]:
    """Wall time of ``trial_list`` on this machine from the one estimator
    (``training.run_seconds``: rates measured here when there are any), with
    the basis of its rates: over ``processes`` trial processes (``--parallel``,
    trials dealt round robin as the shards are), the slowest one's time. Each
    process traces and compiles a step once per ``step_key`` (the batch
    dimension is left unknown, so other batch sizes reuse it)."""
    channels = counts.get("channels", 1)
    basis, slowest = "", 0.0
    for lane in range(processes):
        seconds, compiled = 0.0, set()
        for trial in trial_list[lane::processes]:
            cfg = trial.config
            precision, xla = training.likely_numerics(cfg)
            shape = training.PaceShape(cfg.model.name, cfg.model.image_size, channels, cfg.batch_size, precision,
                                       xla, processes=processes)
            pace = training.estimate_pace(shape)
            basis = basis or pace.basis
            seconds += training.run_seconds(shape, epochs=cfg.epochs, train_images=counts["train"],
                                            val_images=counts["val"], test_images=counts.get("test", 0),
                                            compile_first=step_key(cfg) not in compiled, pace=pace)
            compiled.add(step_key(cfg))
        slowest = max(slowest, seconds)
    if sweep.base.records is None and not counts.get("built"):
        slowest += 30.0  # generating the embedded set and building its records, once per machine
    return START_UP_SECONDS + slowest, basis


def plan_summary(sweep: SweepConfig, parallel: str = "1") -> dict:
    """What ``--dry-run`` shows: the trials (with their index in the whole
    sweep, for sizing a job array), the trial processes ``parallel`` becomes
    and an estimated time."""
    from engine.study.launch import parallel_count

    everything = trials(sweep, every_shard=True)
    shown = trials(replace(sweep, trial="") if sweep.trial == "auto" else sweep)
    counts = split_counts(sweep)
    processes, why = parallel_count(parallel, sweep, counts.get("channels", 1))
    seconds, basis = estimate_seconds(sweep, shown, counts, processes)
    return {"count": len(everything), "seconds": round(seconds), "basis": basis, "processes": processes,
            "processes_why": why,
            "trials": [{"index": everything.index(t), "name": t.name, "setting": t.setting, "lr": t.config.lr,
                        "batch_size": t.config.batch_size, "epochs": t.config.epochs, "seed": t.config.seed}
                       for t in shown]}


def with_records(sweep: SweepConfig, quiet: bool = False) -> SweepConfig:
    """The sweep on its records: the embedded set's, at the sweep's image
    size, built on first use when none were given."""
    from engine.data.embedded import records_or_embedded

    records = records_or_embedded(sweep.base.records, sweep.base.model.image_size, quiet, sweep.base.subset)
    return replace(sweep, base=replace(sweep.base, records=records))


def total_steps(plan: list[Trial], train_images: int) -> int:
    """Training steps of the trials, for the dashboard's overall bar."""
    return sum(t.config.epochs * (train_images // t.config.batch_size) for t in plan)


# --- the run ------------------------------------------------------------------

RUNNING_ELSEWHERE = "running elsewhere"
FINISHED = (training.STATUS_DONE, training.STATUS_DIVERGED)


def check_existing(out: Path, sweep: SweepConfig, force: bool) -> dict | None:
    """The folder's sweep.json, refused when it holds another config (unless
    ``force``, which starts the sweep's choices over); None when there is none."""
    path = out / "sweep.json"
    if not path.is_file():
        return None
    existing = json.loads(path.read_text())
    differing = [k for k in differences(existing.get("config", {}), sweep) if k not in ("shard", "trial")]
    if differing and not force:
        raise UserError(f"{out} holds a sweep with another config (differs in: {', '.join(differing)}); "
                        f"use another --out or --force")
    return None if force else existing


def shared_choices(sweep: SweepConfig, force: bool, command: list[str] | None) -> "training.Numerics":
    """The sweep's precision, XLA and BatchNorm momentum: made by the first
    runner, which creates sweep.json (only if it is still absent: another
    shard or array task may create it at the same moment), and adopted from
    sweep.json by every later one, whatever machine it runs on."""
    out = sweep.base.out
    existing = check_existing(out, sweep, force)
    if existing and "bn_momentum" in existing.get("choice", {}):
        return training.Numerics.from_json(existing["choice"])
    # Resolved once for the whole sweep (``auto`` probes the first trial's
    # shape; the BatchNorm momentum suits the trial with the fewest steps), so
    # every trial runs the same numerics and no axis is confounded by them.
    numerics = training.choose_numerics(replace(sweep.base, batch_size=sweep.batch_sizes[0]),
                                        largest_batch=max(sweep.batch_sizes))
    described = machine.describe()
    content = {
        "config": sweep.to_json(), "command": command, "machine": described, "choice": numerics.to_json(),
        "deviations": paper.deviations(sweep, load_manifest(sweep.base.records), numerics.to_json(), described),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "trials": [{"index": i, "name": t.name, "setting": t.setting, "lr": t.config.lr,
                    "batch_size": t.config.batch_size, "optimizer": t.config.optimizer, "epochs": t.config.epochs,
                    "seed": t.config.seed} for i, t in enumerate(trials(sweep, every_shard=True))]}
    path = out / "sweep.json"
    if force or existing is not None:  # --force starts the choices over; an older sweep.json gains them
        atomic_json(path, content)
    elif not create_once(path, json.dumps(content, indent=1) + "\n"):
        # Another runner created it first: its choices are the sweep's.
        return training.Numerics.from_json(json.loads(path.read_text())["choice"])
    return numerics


def finished_result(trial: Trial) -> dict | None:
    path = trial.config.out / "metrics.json"
    if path.is_file():
        result = json.loads(path.read_text())
        if result.get("status") in FINISHED:
            return result
    return None


@contextlib.contextmanager
def preemptible():
    """SIGTERM (a scheduler preempting the task) ends the process with status
    143 through the normal exits, so trial locks are released and the last
    finished epoch's checkpoint stays for the retry."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(sweep: SweepConfig, *, force: bool = False, on_event=None, command: list[str] | None = None) -> list[dict]:
    """Runs (or resumes) every trial of this runner (its shard or its one
    trial); returns their results.

    A trial that diverges or fails (e.g. out of memory) is recorded with its
    reason and the sweep goes on. Each trial is run under a lock in its
    folder: a trial another live process is running is skipped (result
    status "running elsewhere"). ``on_event(kind, trial, info)`` drives the
    dashboard: kinds are queued, start, batch, epoch, note, end. ``command``
    (the arguments that rerun this sweep) is kept in sweep.json.
    """
    sweep = with_records(sweep, quiet=True)
    out = sweep.base.out
    out.mkdir(parents=True, exist_ok=True)
    numerics = shared_choices(sweep, force, command)
    write_hparams_config(out / "trials", sweep)
    event = on_event or (lambda *args: None)
    plan = [replace(t, config=replace(t.config, precision=numerics.precision.value, xla=numerics.xla.value))
            for t in trials(sweep)]
    for trial in plan:
        event("queued", trial, {})
    results, compiled = [], set()
    with preemptible():
        for trial in plan:
            result = finished_result(trial)
            lock = None if result else FolderLock(trial.config.out / LOCK)
            if lock is not None and not lock.acquire():
                result = {"status": RUNNING_ELSEWHERE}
            elif lock is not None:
                try:
                    if lock.taken_over is not None:
                        event("note", trial, {"text": f"{trial.name}: took over its lock (no heartbeat for "
                                                      f"{lock.taken_over:.0f} s: its runner is gone)"})
                    compiles = step_key(trial.config) not in compiled  # what the dashboard says
                    compiled.add(step_key(trial.config))
                    result = finished_result(trial) or run_trial(trial, force, numerics, event, compiles)
                finally:
                    lock.release()
            event("end", trial, result)
            results.append(result)
    return results


def run_trial(trial: Trial, force: bool, numerics, event, compiles: bool = True) -> dict:
    event("start", trial, {"compiles": compiles})
    write_hparams(trial)
    try:
        return training.train(trial.config, quiet=True, force=force, callbacks=[EpochEvents(trial, event)],
                              numerics=numerics)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a failed trial (e.g. OOM) must not stop the sweep
        result = {"status": "failed", "reason": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
        trial.config.out.mkdir(parents=True, exist_ok=True)
        atomic_json(trial.config.out / "metrics.json", result)
        return result


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
