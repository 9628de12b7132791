"""The engine's measurements: its input pipeline, its compiled training step
and the two together, all through the training door as training runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine import machine, training
from engine.bench.protocol import ENGINE, Measure, epochs_for, steps_for
from engine.config import BenchConfig, ModelConfig, TrainConfig


def train_config(cfg: BenchConfig, folder: Path, manifest: dict, batch: int, precision: str = "float32",
                 xla: str = "off") -> TrainConfig:
    """The training config the bench times: random weights (they do not change
    the cost), Keras' BatchNorm momentum, the records' first class as positive."""
    model = ModelConfig(name=cfg.model, weights="none", image_size=cfg.image_size, channels=manifest["channels"])
    return TrainConfig(records=folder, model=model, batch_size=batch, augment=cfg.augment, precision=precision,
                       xla=xla, bn_momentum="keras", positive_class=min(manifest["label_map"]))


def engine_measures(cfg: BenchConfig, folder: Path, manifest: dict, precision: str, xla: str,
                    trainer: "training.Trainer | None" = None) -> list[Measure]:
    """The engine's rows for one precision/XLA setting: one classifier prepared
    as training prepares it, traced once per batch shape."""
    import tensorflow as tf

    modes = [m for m in ("step", "e2e") if m in cfg.modes]
    if not modes:
        return []
    run = training.prepare(train_config(cfg, folder, manifest, cfg.batch_sizes[0], precision, xla),
                           trainer=trainer, quiet=True)
    in_data = run.placement == "data" and cfg.augment != "none"
    size, channels = cfg.image_size, manifest["channels"]
    rng = np.random.default_rng(0)
    measures = []
    for batch in cfg.batch_sizes:
        steps = steps_for(cfg.step_images, batch)
        if "step" in modes:
            # One batch already on the device, as the pipeline delivers it:
            # float32 when tf.data augmented it (CPU), else uint8 (the same
            # trace as e2e, so one compilation serves both).
            pixels = rng.integers(0, 256, (batch, size, size, channels), dtype=np.uint8)
            with tf.device(machine.device_name()):
                x = tf.identity(pixels.astype(np.float32) if in_data else pixels)
                y = tf.identity(np.arange(batch, dtype=np.int32) % 2)

            def step(run=run, x=x, y=y, steps=steps):
                def timed():
                    for _ in range(steps):
                        run.step(x, y)  # the loss on the host: waits for the device
                return timed
            measures.append(Measure("step", batch, ENGINE, precision, xla, steps * batch, step))
        if "e2e" in modes:
            ds = run.batches("train", batch_size=batch, end_epoch=epochs_for(steps, batch, manifest))

            def e2e(run=run, ds=ds, steps=steps):
                # Training's step function (fit and train_on_batch share it)
                # fed by the pipeline, each loss on the host as training's
                # per-batch callbacks have it. Not fit() per repeat: short
                # fit() calls measured ending on ~5.2 s boundaries at times, a
                # stall a run pays once. The iterator starts inside the clock
                # and is destroyed after it (joining its threads takes ~0.2 s).
                it = iter(ds)

                def timed():
                    for _ in range(steps):
                        run.step(*next(it))
                return timed
            measures.append(Measure("e2e", batch, ENGINE, precision, xla, steps * batch, e2e))
    return measures


def engine_input_measures(cfg: BenchConfig, folder: Path, manifest: dict,
                          trainer: "training.Trainer | None" = None) -> list[Measure]:
    """Records -> augmented batches on the device, no model, placed as training places it."""
    import tensorflow as tf

    target = machine.device_name()
    measures = []
    for batch in cfg.batch_sizes:
        train_cfg = train_config(cfg, folder, manifest, batch)
        in_step = training.step_augment_fn(train_cfg, manifest, trainer)  # None when tf.data augments
        steps = steps_for(cfg.input_images, batch)
        ds = training.input_batches(train_cfg, manifest, "train", end_epoch=epochs_for(steps, batch, manifest),
                                    trainer=trainer)

        def prepare(ds=ds, steps=steps, in_step=in_step):
            it = iter(ds)  # started inside the clock, destroyed after it (see e2e)

            def timed():
                for i in range(steps):
                    images, _ = next(it)
                    with tf.device(target):
                        images = tf.identity(images)
                        if in_step is not None:
                            images = in_step(images, 0, i)
                        total = tf.reduce_sum(tf.cast(images[:, 0, 0, 0], tf.float32))
                float(total)  # batches are produced in order: the last one done means all done
            return timed
        measures.append(Measure("input", batch, ENGINE, "-", "-", steps * batch, prepare))
    return measures
