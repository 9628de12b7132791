"""One training run: ``engine train``.

A run folder holds ``config.json`` (fully resolved, re-runnable),
``data.json`` (label map and image format of the records), ``history.csv``,
``metrics.json``, ``best.keras`` / ``last.keras``, TensorBoard logs under
``tb/`` and an atomic per-epoch checkpoint under ``ckpt/``. Running the same
config on the same folder resumes from the last finished epoch with the same
continuation: weights, optimizer state, epoch, data order and augmentation
keys all come back.
"""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import time
import weakref
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from engine import augment, metrics, model as model_lib, pipeline, records
from engine.config import TrainConfig, differences, dump, from_json
from engine.device import machine, resolve
from engine.errors import UserError

CHECKPOINT = "ckpt"
STATUS_DONE, STATUS_DIVERGED = "done", "diverged"


# ---------------------------------------------------------------------------
# Pieces


def strategy() -> tf.distribute.Strategy:
    """Several hosts from ``TF_CONFIG``, all local GPUs, or the default device.

    The batch size given by the user is the global batch: each of R replicas
    gets batch / R examples, so the optimizer sees the same batch statistics
    (and the same learning rate is right) whatever R. The engine does not
    rescale the learning rate with R.
    """
    if "TF_CONFIG" in os.environ:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def op_determinism(on: bool) -> None:
    """Deterministic kernels for this run only (the public API can only turn them
    on, and a sweep in one process must not inherit one run's setting)."""
    from tensorflow.python.framework import config as tf_config

    if on:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def output_folder(run: Path) -> Path:
    """Where this process writes: the run folder on the chief; a scratch folder
    inside it on the other workers of a multi-worker run, which compute the
    same things and must not race the chief's files."""
    spec = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = spec.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0))
    has_chief = "chief" in spec.get("cluster", {})
    if not task or kind == "chief" or (kind == "worker" and index == 0 and not has_chief):
        return run
    return run / f".{kind}-{index}"


def augment_placement(setting: str = "auto") -> str:
    """Where the augmentation runs, ``setting`` resolved: ``auto`` is ``step``
    (inside the compiled training step, on the accelerator) when there is a
    GPU, ``data`` (inside tf.data, in parallel with the step and overlapped
    with it) on a CPU-only machine.

    Measured on the 2-core reference CPU (299 px, paper policy, XLA warp):
    inside tf.data 2,000-3,300 img/s at batch 5 and 6,200-6,600 at batch 64,
    against 1,700-2,800 and 2,400-2,600 when called per batch from the host
    loop, because tf.data overlaps it with the consumer (and there it works
    on chunks of 64 images whatever the batch, see ``pipeline.AUGMENT_CHUNK``).
    On a GPU the device is idle without it and the host CPU is the scarce
    resource, so it runs in the step, keyed by (seed, epoch, step, replica).
    Either way the draws are stateless and a resumed run replays them.
    """
    if setting != "auto":
        return setting
    return "step" if tf.config.list_logical_devices("GPU") else "data"


def multi_worker_fixes() -> None:
    """Makes Keras 3.15's ``fit`` work under MultiWorkerMirroredStrategy.

    Keras reduces each step's metric results with ``strategy.reduce("MEAN",
    v, axis=0)`` in multi-worker mode, which fails on the scalar results every
    step returns (keras-team/keras#20585). Scalars are reduced without an
    axis instead; everything else goes through Keras' own function. The tests
    run two local workers, so a Keras upgrade that changes this fails there.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "engine_fix", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            def reduce(v):
                if len(v.shape) == 0:
                    return strategy.reduce("MEAN", v, axis=None)
                return original(v, strategy, reduction)
            return tf.nest.map_structure(reduce, values)
        return original(values, strategy, reduction)

    reduce_per_replica.engine_fix = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def auto_bn_momentum(steps_per_epoch: int) -> float:
    """BatchNorm momentum tied to the number of steps per epoch.

    Keras' 0.99 averages over ~100 steps and starts from mean 0 / variance 1:
    on short runs over small data (the paper's 500 images, the quick preset,
    anyone without ImageNet weights) the moving statistics still carry that
    start after several epochs, and validation sits at chance while training
    accuracy is high. The momentum chosen leaves at most 1 % of the start after
    one epoch (m ** steps <= 0.01), kept within [0.9, 0.99] so it is never
    noisier than 10 steps nor slower than Keras' default.
    """
    return float(min(0.99, max(0.9, 0.01 ** (1.0 / max(steps_per_epoch, 1)))))


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then constant, cosine to 0, or step (x0.1 at 50 % and 75 %)."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int, kind: str):
        self.peak, self.total, self.warmup, self.kind = peak, total_steps, warmup_steps, kind

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / max(self.warmup, 1)
        progress = (step - self.warmup) / max(self.total - self.warmup, 1)
        if self.kind == "cosine":
            after = 0.5 * self.peak * (1.0 + keras.ops.cos(math.pi * keras.ops.minimum(progress, 1.0)))
        elif self.kind == "step":
            after = self.peak * keras.ops.where(progress >= 0.75, 0.01, keras.ops.where(progress >= 0.5, 0.1, 1.0))
        else:
            after = keras.ops.convert_to_tensor(self.peak, "float32")
        return keras.ops.where(step < self.warmup, warm, after)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total, "warmup_steps": self.warmup, "kind": self.kind}


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer; a plain float learning rate unless a schedule is asked for,
    so that a sweep can assign a new rate to the same variable."""
    lr = cfg.lr
    if cfg.schedule != "constant" or cfg.warmup_epochs > 0:
        lr = WarmupSchedule(cfg.lr, steps_per_epoch * cfg.epochs, int(cfg.warmup_epochs * steps_per_epoch),
                            cfg.schedule)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr)
    if cfg.optimizer == "nadam":
        return keras.optimizers.Nadam(lr)
    if cfg.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(lr)
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=cfg.optimizer == "nesterov")


class Classifier(keras.Model):
    """The network with the augmentation inside its compiled train step.

    Batches arrive as uint8; the augmentation casts them on the device and is
    keyed by (seed, epoch, step-in-epoch, replica) taken from the optimizer's
    step counter, so a resumed run draws the same augmentations. Evaluation and
    prediction only cast.
    """

    def __init__(self, net: keras.Model, augment_fn, steps_per_epoch: int, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        self.augment_fn = augment_fn
        self.steps_per_epoch = steps_per_epoch
        # The run seed lives in a variable (kept out of Keras' weight tracking)
        # so a compiled step can serve trials with other seeds without a retrace.
        object.__setattr__(self, "run_seed", tf.Variable(seed, dtype=tf.int32, trainable=False))

    def call(self, inputs, training=False):
        return self.net(tf.cast(inputs, tf.float32), training=training)

    def train_step(self, data):
        x, y = data[0], data[1]
        step = tf.cast(self.optimizer.iterations, tf.int32)
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context else 1
        replica = context.replica_id_in_sync_group if context else 0
        in_epoch = step % self.steps_per_epoch
        # (run seed, epoch) hashed into one key: the augmentation draws depend
        # on (seed, epoch, step, replica) only.
        epoch_key = augment.run_epoch_key(self.run_seed, step // self.steps_per_epoch)
        x = self.augment_fn(x, epoch_key, in_epoch * replicas + replica)
        return super().train_step((x, y) + tuple(data[2:]))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 builds the model from a first batch that it averages over
        # replicas with strategy.reduce, which MultiWorkerMirroredStrategy
        # cannot do on a dataset batch (keras-team/keras#20585). Any one
        # replica's batch has the right shapes, which is all the build needs.
        strategy_ = self._distribute_strategy
        if iterator is not None and isinstance(strategy_, tf.distribute.MultiWorkerMirroredStrategy):
            for _, _, it in iterator:
                batch = tf.nest.map_structure(lambda v: strategy_.experimental_local_results(v)[0], next(it))
                with strategy_.scope():
                    self._symbolic_build(data_batch=batch)
                return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def test_step(self, data):
        return super().test_step((tf.cast(data[0], tf.float32),) + tuple(data[1:]))

    def predict_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self.net(tf.cast(x, tf.float32), training=False)


def confusion_metrics() -> list:
    # Counted in label-1 terms at 0.5; turned into the positive class's
    # sensitivity and specificity at each epoch's end.
    return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc"),
            keras.metrics.TruePositives(name="tp"), keras.metrics.TrueNegatives(name="tn"),
            keras.metrics.FalsePositives(name="fp"), keras.metrics.FalseNegatives(name="fn")]


def sens_spec(logs: dict, prefix: str, positive_label: int) -> tuple[float, float]:
    tp, tn, fp, fn = (float(logs.get(f"{prefix}{k}", np.nan)) for k in ("tp", "tn", "fp", "fn"))
    if positive_label == 0:  # the positive class is label 0: swap the roles
        tp, tn, fp, fn = tn, tp, fn, fp
    sensitivity = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    return sensitivity, specificity


# ---------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(run: Path, classifier: Classifier, epoch: int, history: list[dict]) -> None:
    """Weights and optimizer state of a finished epoch, written atomically.

    The arrays go to a new file first; the small JSON that names it is
    replaced last, so a kill at any moment leaves the previous checkpoint or
    the new one, never a mix.
    """
    folder = run / CHECKPOINT
    folder.mkdir(exist_ok=True)
    name = f"state-{epoch:04d}.npz"
    arrays = {f"v{i}": np.asarray(v) for i, v in enumerate(classifier.net.variables)}
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(classifier.optimizer.variables)})
    tmp = folder / f"{name}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(folder / name)
    meta = {"epoch": epoch, "file": name, "history": history}
    meta_tmp = folder / "state.json.tmp"
    meta_tmp.write_text(json.dumps(meta))
    meta_tmp.replace(folder / "state.json")
    for old in folder.glob("state-*.npz"):
        if old.name != name:
            old.unlink()


def load_checkpoint(run: Path, classifier: Classifier) -> tuple[int, list[dict]]:
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
    tmp = path.with_name(path.stem + ".tmp.keras")
    net.save(tmp)
    tmp.replace(path)


# ---------------------------------------------------------------------------
# Callbacks


class RunRecorder(keras.callbacks.Callback):
    """Per epoch: clinical metrics, history row, divergence check, checkpoint, best model."""

    def __init__(self, run: Path, classifier: Classifier, positive_label: int, history: list[dict],
                 steps_per_epoch: int, batch_size: int):
        super().__init__()
        self.run, self.classifier, self.positive = run, classifier, positive_label
        self.history, self.steps, self.batch_size = history, steps_per_epoch, batch_size
        self.diverged: int | None = None
        self.best = min((h["val_loss"] for h in history if h.get("val_loss") is not None), default=math.inf)
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
        save_checkpoint(self.run, self.classifier, epoch, self.history)
        logs.update({k: v for k, v in row.items() if k not in logs and v is not None})


def weights_finite(net: keras.Model) -> bool:
    """True when every weight is finite. Checked once per epoch (one host sync):
    the loss alone can hide a blown-up model, because binary cross-entropy
    clips NaN predictions to a finite value."""
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32)))
                               for v in net.trainable_variables]))


def write_history(path: Path, history: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


class EpochPrinter(keras.callbacks.Callback):
    """One plain line per epoch (the sweep dashboard replaces this)."""

    def __init__(self, epochs: int, quiet: bool):
        super().__init__()
        self.epochs, self.quiet = epochs, quiet

    def on_epoch_end(self, epoch, logs=None):
        if self.quiet or not logs:
            return
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc", "val_sensitivity",
                    "val_specificity", "images_per_second"):
            if logs.get(key) is not None:
                parts.append(f"{key} {float(logs[key]):.4g}")
        print("  ".join(parts), flush=True)


# ---------------------------------------------------------------------------
# The run


def resolve_records(cfg: TrainConfig, quiet: bool) -> Path:
    if cfg.records is not None:
        return cfg.records
    from engine.embedded import synthetic_records
    folder, _ = synthetic_records(image_size=cfg.model.image_size, seed=0, quiet=quiet)
    return folder


def check_resume(run: Path, cfg: TrainConfig, force: bool) -> None:
    """Refuses to mix two configs in one run folder."""
    path = run / "config.json"
    if not path.is_file():
        return
    differing = differences(json.loads(path.read_text()), cfg)
    if differing and not force:
        raise UserError(f"{run} holds a run with another config (differs in: {', '.join(differing)}); "
                        f"use another --out or --force to start over")
    if differing:
        import shutil
        for name in (CHECKPOINT, "tb"):
            shutil.rmtree(run / name, ignore_errors=True)
        for name in ("history.csv", "metrics.json", "best.keras", "last.keras"):
            (run / name).unlink(missing_ok=True)


# The compiled classifier of the last run, reused by the next run whose graph
# is the same (a sweep's trials): TensorFlow 2.21 keeps every traced function
# of every model alive in its runtime (tensorflow#61791, keras#17458), so
# rebuilding and recompiling per trial would grow memory by the size of the
# graphs each time. Reuse also saves the compile time.
_compiled: dict[str, tuple[Classifier, list]] = {}


def graph_key(cfg: TrainConfig, manifest: dict, steps: int, precision: str, xla: str, momentum,
              distribution) -> str:
    """Everything that shapes the traced step; weights, seed and a constant LR do not."""
    model = replace(cfg.model, weights="-", channels=manifest["channels"], bn_momentum=momentum)
    schedule = (cfg.schedule, cfg.warmup_epochs, cfg.epochs, cfg.lr) \
        if cfg.schedule != "constant" or cfg.warmup_epochs > 0 else "constant"
    return json.dumps([model.__dict__, cfg.optimizer, schedule, cfg.batch_size, cfg.augment,
                       augment_placement(cfg.augment_placement),
                       precision, xla, steps, id(distribution)], default=str)


def compiled_classifier(cfg: TrainConfig, manifest: dict, steps: int, precision: str, xla: str, momentum,
                        distribution) -> Classifier:
    """A compiled classifier with fresh weights and optimizer state for this run.

    A fresh network is built for its initial weights (seeded; ImageNet or
    PATH weights loaded); when the previous run compiled the same graph, its
    classifier takes those values instead of being compiled again.
    """
    key = graph_key(cfg, manifest, steps, precision, xla, momentum, distribution)
    if key not in _compiled:
        _compiled.clear()
        keras.backend.clear_session()
        # clear_session also resets the global dtype policy to float32: set it
        # again, or the network would be built in float32 whatever was chosen.
        keras.config.set_dtype_policy(precision)
        gc.collect()
        keras.utils.set_random_seed(cfg.seed)
    with distribution.scope():
        fresh = model_lib.build(replace(cfg.model, bn_momentum=momentum),
                                synchronized_bn=distribution.num_replicas_in_sync > 1)
        if key in _compiled:
            classifier, optimizer_start = _compiled[key]
            for target, value in zip(classifier.net.variables, fresh.variables):
                target.assign(value)
            for target, value in zip(classifier.optimizer.variables, optimizer_start):
                target.assign(value)
            if cfg.schedule == "constant" and cfg.warmup_epochs == 0:
                classifier.optimizer.learning_rate = cfg.lr  # a variable: no retrace
            classifier.run_seed.assign(cfg.seed)
            return classifier
        classifier = make_classifier(cfg, manifest, fresh, steps, xla)
        _compiled[key] = (classifier, [np.asarray(v) for v in classifier.optimizer.variables])
        return classifier


def make_classifier(cfg: TrainConfig, manifest: dict, net: keras.Model, steps: int, xla: str) -> Classifier:
    """``net`` wrapped and compiled as training runs it (call it under the dtype
    policy and the strategy scope that built ``net``)."""
    # The augmentation's own seed is fixed: the run seed enters through
    # the classifier's key (see Classifier.train_step).
    in_step = augment_placement(cfg.augment_placement) == "step"
    augment_fn = shared_augment_fn(cfg.augment if in_step else "none", manifest)
    classifier = Classifier(net, augment_fn, steps, cfg.seed)
    classifier.compile(optimizer=make_optimizer(cfg, steps), loss="binary_crossentropy",
                       metrics=confusion_metrics(), jit_compile=xla == "on")
    classifier.optimizer.build(net.trainable_variables)
    return classifier


_augment_fns: dict[tuple, object] = {}


def shared_augment_fn(policy: str, manifest: dict):
    """One augmentation function per (policy, image shape) for the whole
    process: its traces and XLA compilations are kept, not redone per run."""
    key = (policy, manifest["image_size"][0], manifest["channels"])
    if key not in _augment_fns:
        _augment_fns[key] = augment.make_augment_fn(policy, image_size=key[1], channels=key[2], seed=0)
    return _augment_fns[key]


def pipeline_augment_fn(policy: str, manifest: dict, placement: str = "auto"):
    """The augmentation tf.data applies (see ``augment_placement``), or None
    when it runs in the training step or there is none."""
    if augment_placement(placement) == "data" and policy != "none":
        return shared_augment_fn(policy, manifest)
    return None


def probe_rates(cfg: TrainConfig, manifest: dict):
    """``measure(precision, xla) -> img/s`` for the device probe: a few real steps."""
    def measure(precision: str, xla: str) -> float:
        keras.backend.clear_session()
        keras.config.set_dtype_policy(precision)
        try:
            net = model_lib.build(replace(cfg.model, weights="none", channels=manifest["channels"]))
            net.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy",
                        jit_compile=xla == "on")
            size = cfg.model.image_size
            x = tf.random.uniform([cfg.batch_size, size, size, manifest["channels"]], 0, 255)
            y = tf.cast(tf.random.uniform([cfg.batch_size]) > 0.5, tf.float32)
            for _ in range(2):
                net.train_on_batch(x, y)  # compile and warm up
            times = []
            for _ in range(3):
                start = time.perf_counter()
                float(net.train_on_batch(x, y))  # the float() waits for the device
                times.append(time.perf_counter() - start)
            return cfg.batch_size / float(np.median(times))
        finally:
            keras.config.set_dtype_policy("float32")
            keras.backend.clear_session()
    return measure


def train(cfg: TrainConfig, *, quiet: bool = False, force: bool = False, callbacks=(),
          distribution: tf.distribute.Strategy | None = None) -> dict:
    """Trains (or resumes) one run; returns its ``metrics.json`` content.

    A diverging run (NaN or Inf loss) stops and is returned with status
    ``diverged`` and the epoch, not raised. ``distribution`` overrides the
    strategy chosen from the devices and ``TF_CONFIG``.
    """
    cfg.validate()
    if cfg.out is None:
        raise UserError("train needs --out RUN_FOLDER")
    folder = resolve_records(cfg, quiet)
    manifest = records.load_manifest(folder)
    size = manifest["image_size"][0]
    if cfg.model.image_size != size:
        cfg = replace(cfg, model=replace(cfg.model, image_size=size))
    cfg = replace(cfg, records=folder, model=replace(cfg.model, channels=manifest["channels"]),
                  data=replace(cfg.data, seed=cfg.seed))
    labels = manifest["label_map"]
    by_lower = {name.lower(): name for name in labels}
    if cfg.positive_class.lower() not in by_lower:
        raise UserError(f"--positive-class {cfg.positive_class!r} is not a class of {folder} "
                        f"({', '.join(labels)})")
    positive = labels[by_lower[cfg.positive_class.lower()]]
    for split in ("train", "val"):
        if split not in manifest["splits"]:
            raise UserError(f"{folder} has no {split} split; rebuild with a val fraction (--split)")
    train_count = manifest["splits"]["train"]["count"]
    if cfg.batch_size > train_count:
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the train split ({train_count} images)")
    run = output_folder(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    check_resume(run, cfg, force)
    dump(cfg, run / "config.json")
    (run / "data.json").write_text(json.dumps({
        "records": str(folder), "label_map": labels, "positive_class": by_lower[cfg.positive_class.lower()],
        "image_size": manifest["image_size"],
        "channels": manifest["channels"], "resize": manifest["resize"],
        "counts": {s: v["count"] for s, v in manifest["splits"].items()}}, indent=1))

    keras.utils.set_random_seed(cfg.seed)
    op_determinism(cfg.deterministic)
    steps = train_count // cfg.batch_size
    precision, xla = resolve(cfg.precision, cfg.xla, probe_rates(cfg, manifest),
                             key=f"{cfg.model.name}|{size}|{cfg.batch_size}", deterministic=cfg.deterministic)
    keras.utils.set_random_seed(cfg.seed)  # the probe drew numbers too

    momentum = None if cfg.bn_momentum == "keras" else \
        auto_bn_momentum(steps) if cfg.bn_momentum == "auto" else float(cfg.bn_momentum)
    keras.config.set_dtype_policy(precision.value)
    distribution = distribution or strategy()
    if isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy):
        multi_worker_fixes()
    try:
        classifier = compiled_classifier(cfg, manifest, steps, precision.value, xla.value, momentum,
                                         distribution)
        start_epoch, history = load_checkpoint(run, classifier)
        result = fit(cfg, run, folder, manifest, classifier, start_epoch, history, steps, positive,
                     precision, xla, momentum, quiet, callbacks)
    finally:
        keras.config.set_dtype_policy("float32")
    return result


def fit(cfg, run, folder, manifest, classifier, start_epoch, history, steps, positive, precision, xla,
        momentum, quiet, callbacks) -> dict:
    """The epochs left, then the final evaluation."""
    augment_fn = pipeline_augment_fn(cfg.augment, manifest, cfg.augment_placement)
    train_ds = pipeline.dataset(folder, "train", cfg.batch_size, training=True, config=cfg.data,
                                start_epoch=start_epoch, end_epoch=cfg.epochs, manifest=manifest,
                                augment_fn=augment_fn, augment_seed=cfg.seed)
    val_ds = pipeline.dataset(folder, "val", cfg.batch_size, training=False, config=cfg.data,
                              manifest=manifest)
    class_weight = class_weights(manifest) if cfg.class_weight == "auto" else None
    recorder = RunRecorder(run, classifier, positive, history, steps, cfg.batch_size)
    status = STATUS_DONE
    start = time.perf_counter()
    if start_epoch < cfg.epochs:
        try:
            classifier.fit(train_ds, epochs=cfg.epochs, initial_epoch=start_epoch, steps_per_epoch=steps,
                           validation_data=val_ds, class_weight=class_weight, verbose=0, shuffle=False,
                           callbacks=[recorder, keras.callbacks.TensorBoard(str(run / "tb"), profile_batch=0),
                                      EpochPrinter(cfg.epochs, quiet), *callbacks])
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError):
            # A damaged shard surfaces as a bare TensorFlow error without a
            # file name: find the file and say so (verify raises UserError).
            for split in ("train", "val"):
                pipeline.verify(folder, split, manifest)
            raise
    seconds = time.perf_counter() - start
    if recorder.diverged is not None:
        status = STATUS_DIVERGED
    else:
        save_model(classifier.net, run / "last.keras")
    result = {"status": status, "epochs_done": len(history), "seconds_this_session": round(seconds, 2),
              "first_step_seconds": None if recorder.first_step is None else round(recorder.first_step, 2),
              "precision": {"value": precision.value, "reason": precision.reason},
              "xla": {"value": xla.value, "reason": xla.reason}, "bn_momentum": momentum,
              "augment_placement": augment_placement(cfg.augment_placement),
              # Left at TensorFlow's defaults (0 = one per core): no setting
              # measured faster (benchmarks/RESULTS.md, thread pools).
              "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                          "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
              "steps_per_epoch": steps, "machine": machine()}
    if status == STATUS_DIVERGED:
        result["diverged_at_epoch"] = recorder.diverged + 1
    else:
        result.update(evaluate_run(cfg, classifier, folder, manifest, positive))
    tmp = run / "metrics.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=float) + "\n")
    tmp.replace(run / "metrics.json")
    return result


def class_weights(manifest: dict) -> dict[int, float]:
    """Inverse class frequency of the train split, mean weight 1 (Keras' "balanced")."""
    counts = manifest["splits"]["train"]["per_class"]
    total = sum(counts.values())
    return {manifest["label_map"][name]: total / (len(counts) * n) for name, n in counts.items()}


# One traced forward pass per network, reused by every run that reuses it.
_forwards: "weakref.WeakKeyDictionary[keras.Model, object]" = weakref.WeakKeyDictionary()


def predict_split(net: keras.Model, ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """P(label 1) and labels of every example of a split, in order.

    A plain forward pass outside any distribution strategy: each process
    predicts the whole split itself (the splits scored here are small), so no
    per-replica results need gathering.
    """
    if net not in _forwards:
        _forwards[net] = tf.function(lambda x: net(tf.cast(x, tf.float32), training=False),
                                     reduce_retracing=True)
    forward = _forwards[net]
    probabilities, labels = [], []
    for images, y in ds:
        probabilities.append(np.asarray(forward(images), np.float32).reshape(-1))
        labels.append(y.numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def evaluate_run(cfg: TrainConfig, classifier, folder: Path, manifest: dict, positive: int) -> dict:
    """Validation and test metrics with bootstrap intervals; threshold chosen on val."""
    out = {}
    val_ds = pipeline.dataset(folder, "val", cfg.batch_size, training=False, config=cfg.data, manifest=manifest)
    p_val, y_val = predict_split(classifier.net, val_ds)
    if cfg.threshold == "val-youden":
        scores, y = metrics.positive_scores(p_val, y_val, positive)
        threshold = metrics.youden_threshold(y, scores)
        out["threshold"] = {"value": threshold, "chosen_on": "val", "rule": "Youden's J"}
    else:
        threshold = float(cfg.threshold)
        out["threshold"] = {"value": threshold, "chosen_on": "fixed"}
    out["val"] = metrics.summary(p_val, y_val, positive, threshold, cfg.bootstrap, cfg.seed,
                                 label_map=manifest["label_map"])
    if "test" in manifest["splits"]:
        test_ds = pipeline.dataset(folder, "test", cfg.batch_size, training=False, config=cfg.data,
                                   manifest=manifest)
        p_test, y_test = predict_split(classifier.net, test_ds)
        out["test"] = metrics.summary(p_test, y_test, positive, threshold, cfg.bootstrap, cfg.seed,
                                      label_map=manifest["label_map"])
    return out


def load_run(run: Path) -> tuple[TrainConfig, dict, keras.Model]:
    """A finished run's config, data description and best model (safe mode)."""
    path = run / "config.json"
    if not path.is_file():
        raise UserError(f"{run} is not a run folder (no config.json)")
    cfg = from_json(TrainConfig, json.loads(path.read_text()))
    data = json.loads((run / "data.json").read_text())
    for name in ("best.keras", "last.keras"):
        if (run / name).is_file():
            net = keras.models.load_model(run / name, safe_mode=True, compile=False)
            return cfg, data, net
    raise UserError(f"{run} has no saved model yet (best.keras / last.keras)")
