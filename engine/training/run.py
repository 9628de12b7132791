"""The training door: ``prepare(cfg) -> Run``, then ``Run.fit()`` (``engine
train``, every trial of a sweep), ``Run.step()`` (lr-find, the bench),
``Run.batches()`` and ``Run.evaluate()``.

``prepare`` resolves everything a run needs before its first step: the
records and manifest, the positive class, precision, XLA and BatchNorm
momentum (``numerics``, with their reasons), the tf.distribute strategy and
the compiled classifier, which the runs of one process share while their
graph is the same (the trials of a sweep).

A run folder holds ``config.json`` (fully resolved, re-runnable),
``data.json`` (label map and image format of the records), ``history.csv``,
``metrics.json``, ``best.keras`` / ``last.keras``, TensorBoard logs under
``tb/`` and an atomic per-epoch checkpoint under ``ckpt/``. Running the same
config on the same folder resumes from the last finished epoch with the same
continuation: weights, optimizer state, epoch, data order and augmentation
keys all come back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import tensorflow as tf

from engine import machine
from engine.config import TrainConfig, differences, dump
from engine.data import pipeline
from engine.data.embedded import records_or_embedded
from engine.data.manifest import load_manifest
from engine.errors import UserError
from engine.io import atomic_json
from engine.training import distribute, metrics, pace
from engine.training.callbacks import EpochPrinter, RunRecorder
from engine.training.checkpoint import CHECKPOINT, load_checkpoint, save_model
from engine.training.classifier import Classifier, augment_placement, compiled_classifier, pipeline_augment_fn
from engine.training.evaluation import eval_batch_size, evaluate_run, predict_split
from engine.training.numerics import Numerics, choose
from engine.training.seeding import seed_run

STATUS_DONE, STATUS_DIVERGED = "done", "diverged"


@dataclass
class Run:
    """One prepared run: its resolved config, data, numerics and compiled classifier."""

    cfg: TrainConfig
    records: Path
    manifest: dict
    positive: int  # label of the positive class
    numerics: Numerics
    steps_per_epoch: int
    distribution: tf.distribute.Strategy
    classifier: Classifier

    @property
    def placement(self) -> str:
        return augment_placement(self.cfg.augment_placement)

    def batches(self, split: str, *, batch_size: int | None = None, start_epoch: int = 0,
                end_epoch: int | None = None) -> tf.data.Dataset:
        """The batches of ``split`` as this run reads them (see ``input_batches``)."""
        return input_batches(self.cfg, self.manifest, split, batch_size=batch_size, start_epoch=start_epoch,
                             end_epoch=end_epoch)

    def step(self, images, labels, lr: float | None = None) -> float:
        """One compiled training step (augmentation included where it is placed
        in the step), at learning rate ``lr`` if given; returns the loss, on the
        host (a sync: the caller wants it now)."""
        if lr is not None:
            self.classifier.optimizer.learning_rate = lr
        logs = self.classifier.train_on_batch(images, tf.cast(labels, tf.float32), return_dict=True)
        return float(logs["loss"])

    def evaluate(self, split: str, threshold: float = 0.5) -> dict:
        """Metrics of the current weights on ``split``, with bootstrap intervals."""
        p, y = predict_split(self.classifier.net, self.batches(split, batch_size=self.eval_batch_size(split)))
        return metrics.summary(p, y, self.positive, threshold, self.cfg.bootstrap, self.cfg.seed,
                               label_map=self.manifest["label_map"])

    def validate(self, split: str = "val") -> int:
        """The validation pass training runs each epoch (Keras' compiled test
        step at the evaluation batch), on ``split``; returns the images scored."""
        self.classifier.evaluate(self.batches(split, batch_size=self.eval_batch_size(split)), verbose=0)
        return self.manifest["splits"][split]["count"]

    def fit(self, *, callbacks=(), quiet: bool = False) -> dict:
        """Trains (or resumes) the run in ``cfg.out``; returns its ``metrics.json`` content.

        A diverging run (NaN or Inf loss or weights) stops and is returned with
        status ``diverged`` and the epoch, not raised.
        """
        cfg = self.cfg
        if cfg.out is None:
            raise UserError("training needs --out RUN_FOLDER")
        run = distribute.output_folder(cfg.out)
        run.mkdir(parents=True, exist_ok=True)
        dump(cfg, run / "config.json")
        labels = self.manifest["label_map"]
        atomic_json(run / "data.json", {
            "records": str(self.records), "label_map": labels,
            "positive_class": next(name for name, label in labels.items() if label == self.positive),
            "image_size": self.manifest["image_size"], "channels": self.manifest["channels"],
            "resize": self.manifest["resize"],
            "counts": {s: v["count"] for s, v in self.manifest["splits"].items()}})
        start_epoch, history, best = load_checkpoint(run, self.classifier)
        recorder = RunRecorder(run, self.classifier, self.positive, history, self.steps_per_epoch, cfg.batch_size,
                               best=best)
        # Keras keeps the traced step on the classifier: a run that reuses it
        # (a sweep's later trial) records its first step apart (training.pace).
        compiles = self.classifier.train_function is None
        start = time.perf_counter()
        if start_epoch < cfg.epochs:
            class_weight = class_weights(self.manifest) if cfg.class_weight == "auto" else None
            try:
                self.classifier.fit(
                    self.batches("train", start_epoch=start_epoch), epochs=cfg.epochs, initial_epoch=start_epoch,
                    steps_per_epoch=self.steps_per_epoch,
                    validation_data=self.batches("val", batch_size=self.eval_batch_size("val")),
                    class_weight=class_weight, verbose=0, shuffle=False,
                    callbacks=[recorder, keras.callbacks.TensorBoard(str(run / "tb"), profile_batch=0),
                               EpochPrinter(cfg.epochs, quiet), *callbacks])
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError):
                # A damaged shard surfaces as a bare TensorFlow error without a
                # file name: find the file and say so (verify raises UserError).
                for split in ("train", "val"):
                    pipeline.verify(self.records, split, self.manifest)
                raise
            finally:
                recorder.writer.wait()  # an interrupted fit still leaves its last checkpoint whole
        seconds = time.perf_counter() - start
        session = history[start_epoch:]
        if session and run == cfg.out and self.distribution.num_replicas_in_sync == 1:
            # What this machine measured, for later estimates (--dry-run, the bench).
            pace.record_history(self.pace_shape(), session, self.manifest["splits"]["val"]["count"], "a training run",
                                compiled=compiles)
        saving = time.perf_counter()
        status = STATUS_DIVERGED if recorder.diverged is not None else STATUS_DONE
        chosen = self.save_models(run, history, recorder.best_weights, status == STATUS_DONE)
        save_seconds = time.perf_counter() - saving
        result = {"status": status, "epochs_done": len(history), "seconds_this_session": round(seconds, 2),
                  "final_save_seconds": round(save_seconds, 2),
                  "first_step_seconds": None if recorder.first_step is None else round(recorder.first_step, 2),
                  "precision": {"value": self.numerics.precision.value, "reason": self.numerics.precision.reason},
                  "xla": {"value": self.numerics.xla.value, "reason": self.numerics.xla.reason},
                  "bn_momentum": 0.99 if self.numerics.bn_momentum is None else self.numerics.bn_momentum,
                  "bn_momentum_reason": self.numerics.bn_reason, "augment_placement": self.placement,
                  # Left at TensorFlow's defaults (0 = one per core): no setting
                  # measured faster (benchmarks/RESULTS.md, thread pools).
                  "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                              "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
                  "steps_per_epoch": self.steps_per_epoch, "machine": machine.describe()}
        if status == STATUS_DIVERGED:
            result["diverged_at_epoch"] = recorder.diverged + 1
        else:
            # Scored with the selected model, its threshold chosen on its own val predictions.
            result.update(chosen)
            result.update(evaluate_run(cfg, self.classifier.net, self.records, self.manifest, self.positive,
                                       self.eval_batch_size))
        atomic_json(run / "metrics.json", result)
        return result

    def pace_shape(self) -> pace.Shape:
        """This run's shape as the time estimator knows it (``training.pace``)."""
        # A process of engine compare --parallel N shares the machine with N - 1 others.
        processes = int(os.environ.get("ENGINE_PARALLEL_PROCESSES", "1"))
        return pace.Shape(self.cfg.model.name, self.cfg.model.image_size, self.manifest["channels"],
                          self.cfg.batch_size, self.numerics.precision.value, self.numerics.xla.value,
                          processes=processes)

    def eval_batch_size(self, split: str) -> int:
        """The batch ``split`` is scored at: larger than training's where that
        is faster (see ``evaluation.eval_batch_size``); results do not depend on it."""
        return eval_batch_size(self.manifest["splits"][split]["count"], self.cfg.batch_size)

    def save_models(self, run: Path, history: list[dict], best: tuple[int, list] | None, finished: bool) -> dict:
        """Writes ``best.keras`` (from the best weights kept on the host) and, for
        a finished run, ``last.keras``; leaves the weights of the model
        ``cfg.select`` names in the network and says which it is (``best``: the
        first epoch of lowest val loss). Returns {} for an unfinished run."""
        net = self.classifier.net
        last = history[-1]["epoch"] if history else 0
        last_weights = None
        if finished:
            save_model(net, run / "last.keras")
        if best is not None and best[0] == last and finished:
            shutil.copyfile(run / "last.keras", run / ".best.copy.keras")  # the same model: no second save
            (run / ".best.copy.keras").replace(run / "best.keras")
        elif best is not None:
            last_weights = net.get_weights()
            net.set_weights(best[1])
            save_model(net, run / "best.keras")
        if not finished:
            return {}
        # The network now holds the best weights if they differ from the last.
        scored = [h for h in history if h.get("val_loss") is not None]
        if self.cfg.select == "last" or not scored:
            if last_weights is not None:
                net.set_weights(last_weights)
            note = "" if self.cfg.select == "last" else "; no finite val loss to choose a best by"
            return {"model": f"last (epoch {last}{note})", "model_file": "last.keras"}
        chosen = min(scored, key=lambda h: h["val_loss"])
        if best is None or best[0] != chosen["epoch"]:
            # A checkpoint from before best weights were kept in it: best.keras has them.
            weights = keras.models.load_model(run / "best.keras", safe_mode=True, compile=False).get_weights()
            net.set_weights(weights)
        return {"model": f"best (epoch {chosen['epoch']}, lowest val loss)", "model_file": "best.keras"}


def input_batches(cfg: TrainConfig, manifest: dict, split: str, *, batch_size: int | None = None,
                  start_epoch: int = 0, end_epoch: int | None = None) -> tf.data.Dataset:
    """The batches training reads (``train``: epochs ``start_epoch`` to
    ``end_epoch``, default the run's last, shuffled per (seed, epoch) and
    augmented in tf.data where the augmentation is placed there) or
    evaluation reads (other splits: one ordered pass); ``cfg`` resolved."""
    training = split == "train"
    return pipeline.dataset(cfg.records, split, batch_size or cfg.batch_size, training=training,
                            config=cfg.data, manifest=manifest, start_epoch=start_epoch,
                            end_epoch=end_epoch or (cfg.epochs if training else None),
                            augment_fn=pipeline_augment_fn(cfg, manifest) if training else None,
                            augment_seed=cfg.seed)


def resolve(cfg: TrainConfig, quiet: bool = False) -> tuple[TrainConfig, dict, str]:
    """``cfg`` checked and completed from its records (built, for the embedded
    set, on first use): records folder, image size, channels, data seed and
    the positive class's name; with the manifest and why that class."""
    cfg.validate()
    folder = records_or_embedded(cfg.records, cfg.model.image_size, quiet, cfg.subset)
    manifest = load_manifest(folder)
    if cfg.records is not None and cfg.subset is not None and \
            tuple(manifest["splits"].get(s, {}).get("count", 0) for s in ("train", "val", "test")) != cfg.subset:
        # (a resolved config names the embedded subset's own folder: that passes)
        raise UserError(f"--subset draws from the embedded set; for {folder} build records with "
                        f"engine build-records ... --subset {','.join(map(str, cfg.subset))}")
    positive, why = positive_class(cfg.positive_class, manifest["label_map"], folder)
    cfg = replace(cfg, records=folder, data=replace(cfg.data, seed=cfg.seed), positive_class=positive,
                  model=replace(cfg.model, image_size=manifest["image_size"][0], channels=manifest["channels"]))
    for split in ("train", "val"):
        if split not in manifest["splits"]:
            raise UserError(f"{folder} has no {split} split; rebuild with a val fraction (--split)")
    train_count = manifest["splits"]["train"]["count"]
    if cfg.batch_size > train_count:
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the train split ({train_count} images)")
    return cfg, manifest, why


NEGATIVE_NAME = re.compile(r"(?<![a-z])(normal|negative|healthy|no[ _-]?finding)(?![a-z])", re.IGNORECASE)


def positive_class(setting: str, labels: dict[str, int], folder: Path) -> tuple[str, str]:
    """The positive class's name (matched without regard to case) and why.

    ``auto``: covid when a class is so named; otherwise the one class not named
    like normal, negative, healthy or no finding; otherwise label 0.
    """
    by_lower = {name.lower(): name for name in labels}
    if setting != "auto":
        if setting.lower() not in by_lower:
            raise UserError(f"--positive-class {setting!r} is not a class of {folder} ({', '.join(labels)})")
        return by_lower[setting.lower()], "set"
    if "covid" in by_lower:
        return by_lower["covid"], "auto: the class named covid"
    unlike = [name for name in labels if not NEGATIVE_NAME.search(name)]
    if len(unlike) == 1 and len(labels) == 2:
        return unlike[0], "auto: the class not named like normal/negative/healthy/no finding"
    first = min(labels, key=labels.get)
    return first, "auto: label 0 (no class named covid or like normal); set --positive-class to choose"


def choose_numerics(cfg: TrainConfig, quiet: bool = True, largest_batch: int | None = None) -> Numerics:
    """What ``auto`` precision, XLA and BatchNorm momentum become for ``cfg``.

    A sweep resolves them once for all its trials: precision and XLA at its
    first trial's shape, the momentum for the fewest steps per epoch any
    trial has (``largest_batch``)."""
    cfg, manifest, _ = resolve(cfg, quiet)
    count = manifest["splits"]["train"]["count"]
    choice = choose(cfg, manifest["channels"], count // max(largest_batch or cfg.batch_size, cfg.batch_size))
    seed_run(cfg.seed)  # the probe drew numbers too
    return choice


def prepare(cfg: TrainConfig, *, quiet: bool = False, force: bool = False,
            distribution: tf.distribute.Strategy | None = None, numerics: Numerics | None = None) -> Run:
    """Everything a run needs before its first step (see the module docstring).

    A run folder (``cfg.out``) holding another config is refused here, before
    any model is built, unless ``force`` (which clears it). ``distribution``
    overrides the strategy chosen from the devices and ``TF_CONFIG``;
    ``numerics`` the choice of precision, XLA and momentum.
    """
    cfg, manifest, why = resolve(cfg, quiet)
    positive = metrics.positive_label_of(manifest["label_map"], cfg.positive_class)
    if why != "set" and not quiet:
        print(f"positive class: {cfg.positive_class} ({why})", flush=True)
    if cfg.out is not None:
        check_resume(distribute.output_folder(cfg.out), cfg, force)
    seed_run(cfg.seed)
    distribute.op_determinism(cfg.deterministic)
    steps = manifest["splits"]["train"]["count"] // cfg.batch_size
    chosen = numerics or choose(cfg, manifest["channels"], steps)
    seed_run(cfg.seed)  # the probe drew numbers too
    distribution = distribution or distribute.strategy()
    if isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy):
        distribute.multi_worker_fixes()
    classifier = compiled_classifier(cfg, manifest, steps, chosen.precision.value, chosen.xla.value,
                                     chosen.bn_momentum, distribution)
    return Run(cfg, cfg.records, manifest, positive, chosen, steps, distribution, classifier)


def train(cfg: TrainConfig, *, quiet: bool = False, force: bool = False, callbacks=(),
          distribution: tf.distribute.Strategy | None = None, numerics: Numerics | None = None) -> dict:
    """``prepare(cfg).fit()``: trains (or resumes) one run; returns its ``metrics.json``."""
    return prepare(cfg, quiet=quiet, force=force, distribution=distribution,
                   numerics=numerics).fit(callbacks=callbacks, quiet=quiet)


def class_weights(manifest: dict) -> dict[int, float]:
    """Inverse class frequency of the train split, mean weight 1 (Keras' "balanced")."""
    counts = manifest["splits"]["train"]["per_class"]
    total = sum(counts.values())
    return {manifest["label_map"][name]: total / (len(counts) * n) for name, n in counts.items()}


def check_resume(run: Path, cfg: TrainConfig, force: bool) -> None:
    """Refuses to mix two configs in one run folder (``force`` clears it instead)."""
    path = run / "config.json"
    if not path.is_file():
        return
    differing = differences(json.loads(path.read_text()), cfg)
    if differing and not force:
        raise UserError(f"{run} holds a run with another config (differs in: {', '.join(differing)}); "
                        f"use another --out or --force to start over")
    if differing:
        for name in (CHECKPOINT, "tb"):
            shutil.rmtree(run / name, ignore_errors=True)
        for name in ("history.csv", "metrics.json", "best.keras", "last.keras"):
            (run / name).unlink(missing_ok=True)
