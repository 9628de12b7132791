"""Throughput of the paper's augmentation: four implementations, same inputs.

Command (from the repository root, with the package installed, e.g.
``pip install -e ".[dev]"``, or with ``PYTHONPATH=.``)::

    python benchmarks/bench_augment.py [--batch-sizes 5 64] [--repeats 7]

(about 15 s with the defaults).

What it measures: images per second for the full ``ImageDataGenerator``
policy of the paper (parameter draw, matrix, bilinear warp with edge
replication) on 1-channel 299x299 float32 batches, at each batch size, for

* ``ipt``: ``tf.raw_ops.ImageProjectiveTransformV3`` (the kernel behind
  ``keras.ops.image.affine_transform``) in a ``tf.function`` without XLA;
* ``gather``: ``engine.data.augment.warp_bilinear_nearest`` in a ``tf.function``
  without XLA;
* ``gather+xla``: the same with ``jit_compile=True``;
* ``keras2``: tf_keras ``ImageDataGenerator(...).flow`` on the same NumPy
  arrays, the paper's own stack (NumPy draws, scipy per image and channel,
  single-threaded as Keras 2 ran it by default).

Method: every implementation is first called once, and that first call
(tracing, and XLA compilation for ``gather+xla``) is reported apart as
"first call". Timed repeats are then interleaved (A B C D A B C D ...) so
that load from other users of a shared machine hits all of them alike; each
repeat processes at least ``--min-images`` images and ends with the result
copied to the host (``.numpy()``), so asynchronous execution cannot stop the
clock early. The table gives the median and the min-max over the repeats.

Hardware of the reference run: 2 vCPUs of an AMD EPYC (AVX-512) shared
virtual machine, no GPU, TensorFlow 2.21 CPU build, Python 3.11.

Expected figures on that machine (img/s, median of 9, over two runs; first
call in s):

    method      batch 5                 batch 64
    ipt         1,000-1,400 (0.1 s)     1,800-1,850 (0.15 s)
    gather        700-800   (0.2 s)       600-650   (0.3-0.4 s)
    gather+xla  3,700-4,100 (0.4-0.6 s) 4,300-4,550 (0.5-0.8 s)
    keras2        490-530   (0.01 s)      515-520   (0.15 s)

i.e. on CPU the XLA-compiled gather warp is the fastest: ~2.5-3x the
``ImageProjectiveTransformV3`` kernel and ~8x the paper's scipy path. The
same gather warp without XLA is the slowest TensorFlow variant (every op
materialises a [B, H*W] intermediate, which XLA fuses away). Individual
repeats dip by up to 2x when the shared machine is busy and medians moved
by up to ~30% between runs, but the ranking never changed. The three
TensorFlow variants agree to ~0.015 on 0-255 data (float32 coordinate
rounding).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from engine.data.augment import (
    PaperAugment,
    augment_seed,
    paper_transform_matrix,
    sample_paper_params,
    warp_bilinear_nearest,
)
from engine.machine import cpu_name

SIZE = 299
SEED = 1234


def projective_warp(images: tf.Tensor, matrices: tf.Tensor) -> tf.Tensor:
    """The same warp through ``ImageProjectiveTransformV3`` (no XLA kernel).

    That op maps output (x, y) = (col, row) to input coordinates, so the
    (row, col) matrix is conjugated by the axis swap first.
    """
    swap = [1, 0, 2]
    xy = tf.gather(tf.gather(matrices, swap, axis=1), swap, axis=2)
    transforms = tf.reshape(xy, [-1, 9])[:, :8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")


def tf_augmenter(warp: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], jit_compile: bool,
                 config: PaperAugment) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The full paper policy with a given warp, as one tf.function."""

    @tf.function(jit_compile=jit_compile)
    def augment(images: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        dims = tf.shape(images)
        params = sample_paper_params(augment_seed(SEED, 0, step), dims[0], dims[1], dims[2],
                                     config)
        matrices = paper_transform_matrix(params["theta"], params["tx"], params["ty"],
                                          params["shear"], params["zx"], params["zy"],
                                          dims[1], dims[2])
        return warp(images, matrices)

    return augment


def host_runner(augment: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
                images: tf.Tensor) -> Callable[[int], np.ndarray]:
    """``run(step)``: augment, then copy to the host so the work is finished."""

    def run(step: int) -> np.ndarray:
        return augment(images, tf.constant(step)).numpy()

    return run


def make_runners(batch: np.ndarray, config: PaperAugment) -> dict[str, Callable[[int], np.ndarray]]:
    """One callable per method: ``run(step)`` → augmented batch on the host."""
    from tf_keras.preprocessing.image import ImageDataGenerator

    device_batch = tf.constant(batch)
    runners = {}
    for name, warp, jit in (("ipt", projective_warp, False),
                            ("gather", warp_bilinear_nearest, False),
                            ("gather+xla", warp_bilinear_nearest, True)):
        runners[name] = host_runner(tf_augmenter(warp, jit, config), device_batch)

    generator = ImageDataGenerator(
        rotation_range=config.rotation_range, zoom_range=config.zoom_range,
        shear_range=config.shear_range, width_shift_range=config.width_shift_range,
        height_shift_range=config.height_shift_range)
    flow = generator.flow(batch, batch_size=len(batch), shuffle=False, seed=SEED)
    runners["keras2"] = lambda step: next(flow)
    return runners


def check_agreement(batch: np.ndarray, config: PaperAugment) -> float:
    """Max abs difference between the three TensorFlow variants (0-255 data)."""
    outs = [tf_augmenter(w, j, config)(tf.constant(batch), tf.constant(0)).numpy()
            for w, j in ((projective_warp, False), (warp_bilinear_nearest, False),
                         (warp_bilinear_nearest, True))]
    return max(float(np.abs(o - outs[0]).max()) for o in outs[1:])


def bench_batch(batch_size: int, repeats: int, min_images: int) -> list[dict]:
    """Interleaved timing of all methods at one batch size."""
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (batch_size, SIZE, SIZE, 1)).astype(np.float32)
    config = PaperAugment()
    runners = make_runners(batch, config)
    calls = max(1, -(-min_images // batch_size))

    first_call = {}
    for name, run in runners.items():
        start = time.perf_counter()
        out = run(0)
        first_call[name] = time.perf_counter() - start
        assert out.shape == batch.shape and out.dtype == np.float32, (name, out.shape, out.dtype)

    rates: dict[str, list[float]] = {name: [] for name in runners}
    step = 1
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            for _ in range(calls):
                run(step)
                step += 1
            rates[name].append(calls * batch_size / (time.perf_counter() - start))

    return [{"method": name, "batch": batch_size, "first_call_s": first_call[name],
             "median": statistics.median(r), "min": min(r), "max": max(r), "repeats": len(r)}
            for name, r in rates.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[5, 64])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-images", type=int, default=64,
                        help="images per timed repeat (several calls at small batches)")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    # Each method is its own tf.function traced once per batch size; TF's
    # retracing heuristic counts those as retraces and would warn.
    tf.get_logger().setLevel("ERROR")

    print(f"host: {platform.machine()} {cpu_name()}, "
          f"{os.cpu_count()} logical CPUs; TF {tf.__version__}; "
          f"devices: {[d.device_type for d in tf.config.list_logical_devices()]}")
    diff = check_agreement(
        np.random.default_rng(1).uniform(0, 255, (4, SIZE, SIZE, 1)).astype(np.float32),
        PaperAugment())
    print(f"max |difference| between TF variants on 0-255 data: {diff:.4f}")

    header = (f"{'method':<11} {'batch':>5} {'first call s':>12} {'median img/s':>13} "
              f"{'min-max img/s':>17}")
    print(header)
    print("-" * len(header))
    for batch_size in args.batch_sizes:
        for row in bench_batch(batch_size, args.repeats, args.min_images):
            print(f"{row['method']:<11} {row['batch']:>5} {row['first_call_s']:>12.2f} "
                  f"{row['median']:>13,.0f} {row['min']:>8,.0f}-{row['max']:<8,.0f}")


if __name__ == "__main__":
    main()
