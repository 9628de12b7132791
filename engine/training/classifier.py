"""The classifier as training runs it: the network wrapped with its compiled
training step (augmentation inside it where it belongs), where the
augmentation runs, and the dtype policy a network is built under. Which
compiled classifier a run gets, new or reused, is the ``Trainer``'s
(``engine.training.trainer``).
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from engine.config import TrainConfig
from engine.data import augment
from engine.model import keras_internals
from engine.training.optim import make_optimizer


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

    def _build_from_one_replica(self, iterator=None, data_batch=None):
        # Keras 3.15 builds the model from a first batch that it averages over
        # replicas with strategy.reduce, which MultiWorkerMirroredStrategy
        # cannot do on a dataset batch (keras-team/keras#20585). Any one
        # replica's batch has the right shapes, which is all the build needs.
        strategy_ = keras_internals.model_strategy(self)
        if iterator is not None and isinstance(strategy_, tf.distribute.MultiWorkerMirroredStrategy):
            batch = keras_internals.first_batch(iterator)
            if batch is not None:
                batch = tf.nest.map_structure(lambda v: strategy_.experimental_local_results(v)[0], batch)
                with strategy_.scope():
                    keras_internals.symbolic_build(self, batch)
                return
        keras_internals.keras_build_before_fit(self, iterator=iterator, data_batch=data_batch)

    def test_step(self, data):
        return super().test_step((tf.cast(data[0], tf.float32),) + tuple(data[1:]))

    def predict_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self.net(tf.cast(x, tf.float32), training=False)


# Keras builds a model before fit from a private hook (keras_internals says why no public one serves).
keras_internals.replace_build_before_fit(Classifier, Classifier._build_from_one_replica)


def confusion_metrics() -> list:
    # Counted in label-1 terms at 0.5; turned into the positive class's
    # sensitivity and specificity at each epoch's end.
    return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc"),
            keras.metrics.TruePositives(name="tp"), keras.metrics.TrueNegatives(name="tn"),
            keras.metrics.FalsePositives(name="fp"), keras.metrics.FalseNegatives(name="fn")]


def make_classifier(cfg: TrainConfig, manifest: dict, net: keras.Model, steps: int, xla: str,
                    augment_fn=None) -> Classifier:
    """``net`` wrapped and compiled as training runs it (call it under the dtype
    policy and the strategy scope that built ``net``: Keras wraps the
    optimizer in a ``LossScaleOptimizer`` under mixed_float16).
    ``augment_fn``: what the step applies to each uint8 batch (the
    ``Trainer``'s ``step_augment_fn``); default: a cast only, made here."""
    if augment_fn is None:
        augment_fn = augment.make_augment_fn("none", image_size=manifest["image_size"][0],
                                             channels=manifest["channels"], seed=0)
    classifier = Classifier(net, augment_fn, steps, cfg.seed)
    classifier.compile(optimizer=make_optimizer(cfg, steps), loss="binary_crossentropy",
                       metrics=confusion_metrics(), jit_compile=xla == "on")
    classifier.optimizer.build(net.trainable_variables)
    return classifier
