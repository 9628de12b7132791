"""The classifier as training runs it: the network wrapped with its compiled
training step (augmentation inside it where it belongs), and the process-wide
reuse of one compiled graph by every run of the same shape (a sweep's trials).
"""

from __future__ import annotations

import contextlib
import gc
import json
from dataclasses import dataclass, replace

import keras
import numpy as np
import tensorflow as tf

from engine.config import TrainConfig
from engine.data import augment
from engine.model import build
from engine.training.distribute import describe
from engine.training.optim import make_optimizer
from engine.training.seeding import seed_run


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


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy for the layers built inside the block.

    Set after any ``keras.backend.clear_session()``, which resets it to
    float32: a network built after one would otherwise be float32 whatever
    precision was chosen."""
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


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
        # The run seed and the steps per epoch live in variables (kept out of
        # Keras' weight tracking) so a compiled step can serve trials with
        # other seeds and batch sizes without a retrace.
        object.__setattr__(self, "run_seed", tf.Variable(seed, dtype=tf.int32, trainable=False))
        object.__setattr__(self, "steps_per_epoch", tf.Variable(steps_per_epoch, dtype=tf.int32, trainable=False))

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


_augment_fns: dict[tuple, object] = {}


def shared_augment_fn(policy: str, manifest: dict):
    """One augmentation function per (policy, image shape) for the whole
    process: its traces and XLA compilations are kept, not redone per run.
    The augmentation's own seed is fixed: the run seed enters through its key."""
    key = (policy, manifest["image_size"][0], manifest["channels"])
    if key not in _augment_fns:
        _augment_fns[key] = augment.make_augment_fn(policy, image_size=key[1], channels=key[2], seed=0)
    return _augment_fns[key]


def pipeline_augment_fn(cfg: TrainConfig, manifest: dict):
    """The augmentation tf.data applies (see ``augment_placement``), or None
    when it runs in the training step or there is none."""
    if augment_placement(cfg.augment_placement) == "data" and cfg.augment != "none":
        return shared_augment_fn(cfg.augment, manifest)
    return None


def step_augment_fn(cfg: TrainConfig, manifest: dict):
    """The augmentation the compiled training step applies, or None when tf.data does."""
    if augment_placement(cfg.augment_placement) == "step" and cfg.augment != "none":
        return shared_augment_fn(cfg.augment, manifest)
    return None


def make_classifier(cfg: TrainConfig, manifest: dict, net: keras.Model, steps: int, xla: str) -> Classifier:
    """``net`` wrapped and compiled as training runs it (call it under the dtype
    policy and the strategy scope that built ``net``: Keras wraps the
    optimizer in a ``LossScaleOptimizer`` under mixed_float16)."""
    # Without augmentation in the step, "none" only casts the uint8 batch.
    augment_fn = step_augment_fn(cfg, manifest) or shared_augment_fn("none", manifest)
    classifier = Classifier(net, augment_fn, steps, cfg.seed)
    classifier.compile(optimizer=make_optimizer(cfg, steps), loss="binary_crossentropy",
                       metrics=confusion_metrics(), jit_compile=xla == "on")
    classifier.optimizer.build(net.trainable_variables)
    return classifier


@dataclass
class _Compiled:
    key: str
    classifier: Classifier
    optimizer_start: list
    distribution: tf.distribute.Strategy


# The compiled classifier of the last run, reused by the next run whose graph
# is the same (a sweep's trials): TensorFlow 2.21 keeps every traced function
# of every model alive in its runtime (tensorflow#61791, keras#17458), so
# rebuilding and recompiling per trial would grow memory by the size of the
# graphs each time. Reuse also saves the compile time.
_last: list[_Compiled] = []


def graph_key(cfg: TrainConfig, manifest: dict, steps: int, precision: str, xla: str, momentum,
              distribution: tf.distribute.Strategy) -> str:
    """Everything that shapes the traced step; weights, seed, a constant LR
    and the batch size do not (training batches leave tf.data with an unknown
    batch dimension, and the steps per epoch are a variable), except where a
    schedule is built from the steps."""
    model = replace(cfg.model, weights="-", channels=manifest["channels"], bn_momentum=momentum)
    constant = cfg.schedule == "constant" and cfg.warmup_epochs == 0
    schedule = "constant" if constant else (cfg.schedule, cfg.warmup_epochs, cfg.epochs, cfg.lr, steps)
    return json.dumps([model.__dict__, cfg.optimizer, schedule, cfg.augment,
                       augment_placement(cfg.augment_placement), precision, xla,
                       describe(distribution)], default=str)


# Initial weights of the networks built for runs of this process, by (graph,
# seed, weights): a sweep's repeats share their seeds across settings, and
# building InceptionV3 (twice, with the fused BatchNorm swap) costs seconds
# per trial that these copies save. At most INITIAL_KEPT are kept (~90 MB each
# for InceptionV3).
_initial: dict[str, list[np.ndarray]] = {}
INITIAL_KEPT = 4


def initial_weights(cfg: TrainConfig, key: str, build_fresh) -> list[np.ndarray]:
    """The seeded initial values of every variable of the run's network:
    remembered, or taken from ``build_fresh()`` (called right after seeding)."""
    wanted = json.dumps([key, cfg.seed, cfg.model.weights])
    if wanted not in _initial:
        while len(_initial) >= INITIAL_KEPT:
            _initial.pop(next(iter(_initial)))
        _initial[wanted] = [np.array(v) for v in build_fresh().variables]
    return _initial[wanted]


def compiled_classifier(cfg: TrainConfig, manifest: dict, steps: int, precision: str, xla: str, momentum,
                        distribution: tf.distribute.Strategy) -> Classifier:
    """A compiled classifier with fresh weights and optimizer state for this run.

    A fresh network is built for its initial weights (seeded; ImageNet or
    PATH weights loaded); when the previous run compiled the same graph in
    the same strategy, its classifier takes those values instead of being
    compiled again, and a run with the seed of an earlier one of this
    process takes that one's initial values without building at all.
    """
    key = graph_key(cfg, manifest, steps, precision, xla, momentum, distribution)
    reuse = bool(_last) and _last[0].key == key and _last[0].distribution is distribution
    if not reuse:
        _last.clear()
        _initial.clear()
        keras.backend.clear_session()
        gc.collect()
        seed_run(cfg.seed)
    with dtype_policy(precision), distribution.scope():
        def build_fresh():
            return build(replace(cfg.model, bn_momentum=momentum),
                         synchronized_bn=distribution.num_replicas_in_sync > 1)

        if reuse:
            compiled = _last[0]
            for target, value in zip(compiled.classifier.net.variables, initial_weights(cfg, key, build_fresh)):
                target.assign(value)
            for target, value in zip(compiled.classifier.optimizer.variables, compiled.optimizer_start):
                target.assign(value)
            if cfg.schedule == "constant" and cfg.warmup_epochs == 0:
                compiled.classifier.optimizer.learning_rate = cfg.lr  # a variable: no retrace
            compiled.classifier.run_seed.assign(cfg.seed)
            compiled.classifier.steps_per_epoch.assign(steps)
            return compiled.classifier
        fresh = build_fresh()
        initial_weights(cfg, key, lambda: fresh)
        classifier = make_classifier(cfg, manifest, fresh, steps, xla)
    _last.append(_Compiled(key, classifier, [np.asarray(v) for v in classifier.optimizer.variables], distribution))
    return classifier
