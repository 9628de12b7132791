"""The paper's stack, timed beside the engine: tf_keras ``ImageDataGenerator``
with the paper's augmentation over a class folder, feeding a float32, non-XLA
tf_keras InceptionV3 (``pip install -e '.[paper]'``)."""

from __future__ import annotations

import contextlib
import functools
import io
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.bench.protocol import PAPER, Measure, steps_for
from engine.config import BenchConfig
from engine.data.manifest import parse_fn, shard_paths


def paper_available() -> bool:
    try:
        import scipy  # noqa: F401  (ImageDataGenerator's affine transforms)
        import tf_keras  # noqa: F401
    except ImportError:
        return False
    return True


def has_model(name: str) -> bool:
    """Whether the paper's stack can build ``name``: a tf_keras application or TinyCNN."""
    import tf_keras

    return name == "TinyCNN" or hasattr(tf_keras.applications, name)


def tiny_cnn(size: int):
    """The engine's TinyCNN (engine.model.networks) in tf_keras: both stacks
    timed on a network that traces in a second or two, for quick checks on a CPU."""
    import tf_keras

    inputs = tf_keras.Input((size, size, 3))
    x = inputs
    for i, filters in enumerate((16, 32, 48, 64)):
        x = tf_keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = tf_keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = tf_keras.layers.Activation("relu", name=f"relu{i}")(x)
        x = tf_keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    return tf_keras.Model(inputs, x, name="tiny_cnn")


def paper_model(name: str, size: int, lr: float = 1e-4):
    """The paper's network: tf_keras InceptionV3 (or ``name`` from tf_keras'
    applications, or TinyCNN), float32, no XLA, GAP -> 256 relu -> sigmoid, Adam at ``lr``."""
    import tf_keras

    base = tiny_cnn(size) if name == "TinyCNN" else \
        getattr(tf_keras.applications, name)(include_top=False, weights=None, input_shape=(size, size, 3))
    x = tf_keras.layers.GlobalAveragePooling2D()(base.output)
    x = tf_keras.layers.Dense(256, activation="relu")(x)
    out = tf_keras.layers.Dense(1, activation="sigmoid")(x)
    model = tf_keras.Model(base.input, out)
    model.compile(optimizer=tf_keras.optimizers.Adam(lr), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def paper_flow(images: Path, size: int, batch: int, augment: bool = True):
    """The paper's input: ``ImageDataGenerator`` with its augmentation (for
    training; none for validation, in order) over a class folder, RGB."""
    from tf_keras.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(rotation_range=20, zoom_range=0.2, shear_range=0.2, width_shift_range=0.2,
                                   height_shift_range=0.2) if augment else ImageDataGenerator()
    with contextlib.redirect_stdout(io.StringIO()):  # "Found N images belonging to 2 classes."
        return generator.flow_from_directory(str(images), target_size=(size, size), batch_size=batch,
                                             class_mode="binary", interpolation="nearest", seed=0,
                                             shuffle=augment)


def paper_trial(images: Path, out: Path, *, model: str, size: int, batch: int, lr: float, epochs: int,
                on_epoch: Callable[[], None] = lambda: None) -> dict:
    """One trial of the study as the paper's script ran it, timed: a fresh
    tf_keras model, ``fit`` over ``flow_from_directory`` train (augmented) and
    val generators (``images/{train,val}/<class>/``), then the model saved.

    Returns the wall time and, per epoch, the seconds of training steps and
    of validation (``fit``'s own callbacks mark them), and the final save."""
    import tf_keras

    class Clock(tf_keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs: list[dict] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.val = time.perf_counter(), 0.0

        def on_test_begin(self, logs=None):
            self.val_start = time.perf_counter()

        def on_test_end(self, logs=None):
            self.val = time.perf_counter() - self.val_start

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.start
            self.epochs.append({"epoch": epoch + 1, "seconds": seconds, "train_seconds": seconds - self.val,
                                "val_seconds": self.val, "save_seconds": 0.0,
                                "loss": float(logs.get("loss", float("nan"))),
                                "val_loss": float(logs.get("val_loss", float("nan")))})
            on_epoch()

    start = time.perf_counter()
    net = paper_model(model, size, lr)
    train, val = paper_flow(images / "train", size, batch), paper_flow(images / "val", size, batch, augment=False)
    clock = Clock()
    net.fit(train, epochs=epochs, validation_data=val, callbacks=[clock], verbose=0)
    saving = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # tf_keras calls HDF5 "legacy": it was the format of the paper's Keras
        warnings.simplefilter("ignore", UserWarning)
        net.save(out / "model.h5")  # what the paper's script kept: the model trained at the last epoch
    end = time.perf_counter()
    return {"seconds": end - start, "epochs": clock.epochs, "final_save_seconds": end - saving,
            "train_images": train.samples, "val_images": val.samples}


def paper_measures(cfg: BenchConfig, images: Path, on_note: Callable[[str], None]) -> list[Measure]:
    import tf_keras

    size = cfg.image_size
    modes = set(cfg.modes)
    if {"step", "e2e"} & modes and not has_model(cfg.model):
        on_note(f"the paper's stack has no {cfg.model}: its training rows are left out")
        modes -= {"step", "e2e"}
    model = paper_model(cfg.model, size) if {"step", "e2e"} & modes else None
    rng = np.random.default_rng(0)
    measures = []
    for batch in cfg.batch_sizes:
        flow = paper_flow(images, size, batch)
        if "input" in modes:
            steps = steps_for(cfg.input_images // 8, batch)
            measures.append(Measure("input", batch, PAPER, "-", "-", steps * batch,
                                    functools.partial(timed_input, flow, steps)))
        steps = steps_for(cfg.step_images, batch)
        if "step" in modes:
            px = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
            py = (np.arange(batch) % 2).astype(np.float32)
            measures.append(Measure("step", batch, PAPER, "float32", "off", steps * batch,
                                    functools.partial(timed_step, model, px, py, steps)))
        if "e2e" in modes:
            measures.append(Measure("e2e", batch, PAPER, "float32", "off", steps * batch,
                                    functools.partial(timed_e2e, model, flow, steps)))
    return measures


def timed_input(flow, steps: int) -> Callable[[], None]:
    """The input row's timed function: ``steps`` batches drawn from ``flow``."""
    def timed():
        for _ in range(steps):
            x, _ = next(flow)
        float(x[:, 0, 0, 0].sum())
    return timed


def timed_step(model, px: np.ndarray, py: np.ndarray, steps: int) -> Callable[[], None]:
    """The step row's timed function: ``steps`` training steps of ``model`` on one batch."""
    def timed():
        for _ in range(steps):
            loss = model.train_on_batch(px, py)[0]
        float(loss)
    return timed


def timed_e2e(model, flow, steps: int) -> Callable[[], Callable[[], None]]:
    """The e2e row's timed function: ``steps`` training steps of ``model`` on
    ``flow``'s batches, made in the background as the paper's fit() makes them."""
    from tf_keras.utils import OrderedEnqueuer

    # What the paper's fit() runs: tf_keras' OrderedEnqueuer with
    # fit's defaults (one worker thread, a queue of 10 batches)
    # producing ImageDataGenerator batches in the background,
    # overlapped with the steps. fit() itself is not called per
    # repeat: a short fit() measured ending on a ~5.2 s boundary
    # (its enqueuer polls with a 5 s timeout), 4.7 s of steps
    # taking 5.2 s, a stall a real run pays per fit, not per few steps.
    enqueuer = OrderedEnqueuer(flow, use_multiprocessing=False, shuffle=False)
    enqueuer.start(workers=1, max_queue_size=10)
    batches = enqueuer.get()

    def timed():
        try:
            for _ in range(steps):
                loss = model.train_on_batch(*next(batches))[0]
            float(loss)
        except BaseException:
            enqueuer.stop()
            raise
        return enqueuer.stop  # after the clock: joining its thread is not a step
    return timed


def export_class_folder(folder: Path, manifest: dict, out: Path, limit: int = 500, split: str = "train") -> Path:
    """A split's images as ``out/<class>/*.png`` for ``flow_from_directory``,
    so the paper's stack reads the same images as the engine."""
    import tensorflow as tf

    names = {v: k for k, v in manifest["label_map"].items()}
    if out.exists():
        shutil.rmtree(out)
    for name in names.values():
        (out / name).mkdir(parents=True)
    ds = tf.data.TFRecordDataset([str(p) for p in shard_paths(folder, split, manifest)])
    ds = ds.map(parse_fn(manifest)).take(limit)
    for i, (image, label) in enumerate(ds):
        path = out / names[int(label)] / f"{i:05d}.png"
        path.write_bytes(tf.io.encode_png(image).numpy())
    return out
