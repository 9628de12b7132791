"""On-device, stateless image augmentation, including the paper's exact policy.

The study trained with Keras 2's
``ImageDataGenerator(rotation_range=20, zoom_range=0.2, shear_range=0.2,
width_shift_range=0.2, height_shift_range=0.2)``, which draws parameters with
NumPy's global generator and warps each image on the host with
``scipy.ndimage.affine_transform(order=1, mode="nearest")``. This module
reproduces that transform exactly, but batched in TensorFlow so it runs on the
accelerator, and with stateless randomness keyed by (run seed, epoch, step):
the same step always draws the same parameters, whether it runs eagerly, in
a graph, in ``tf.data``, under XLA, or after a resume (pixels then agree to
float rounding across execution modes, and exactly within one).

What ``ImageDataGenerator`` really does (``tf_keras`` 2.21,
``preprocessing/image.py``), reproduced here on purpose, quirks included:

* ``theta ~ U(-20, 20)`` degrees; ``shear ~ U(-0.2, 0.2)`` in *degrees*
  (``apply_affine_transform`` applies ``deg2rad`` to it), so the paper's shear
  is almost nothing; ``zx, zy ~ U(0.8, 1.2)`` independently, values above 1
  zoom out.
* ``tx = U(-h, h) * rows`` (height shift) and ``ty = U(-w, w) * cols`` (width
  shift).
* The matrix ``rotation @ shift @ shear @ zoom`` is built in an (x, y) frame,
  offset to the centre with ``o_x = rows / 2 - 0.5`` on its first axis and
  ``o_y = cols / 2 - 0.5`` on its second, and then its two axes are swapped
  before it is handed to scipy in (row, col) order. The net effect in (row,
  col) terms: ``tx`` (a fraction of the *height*) moves the image along
  *columns*, ``ty`` along rows, ``zx`` scales columns, and on a non-square
  image the centre of the transform sits at row ``cols / 2 - 0.5``, column
  ``rows / 2 - 0.5`` instead of the image centre.
  On the paper's square 299x299 inputs these are all invisible; on other
  shapes they are what the paper's code would have done.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from engine.config import AUGMENT_POLICIES

__all__ = [
    "AUGMENT_POLICIES",
    "AugmentFn",
    "PaperAugment",
    "augment_seed",
    "default_jit_for_augment",
    "make_augment_fn",
    "paper_augment",
    "paper_transform_matrix",
    "sample_paper_params",
    "warp_bilinear_nearest",
]

AugmentFn = Callable[[tf.Tensor, "int | tf.Tensor", "int | tf.Tensor"], tf.Tensor]

# Folded into the run seed first so that augmentation draws never coincide
# with another stateless stream derived from the same run seed (shuffling,
# dropout...). Any fixed int32 works; this one spells "aug".
_AUGMENT_STREAM = 0x617567

# Philox is requested explicitly: "auto_select" may pick ThreeFry under XLA
# on TPU, which would make the augmentation depend on the device.
_RNG_ALG = "philox"


@dataclasses.dataclass(frozen=True)
class PaperAugment:
    """Ranges of the paper's ``ImageDataGenerator`` (the defaults).

    Attributes:
        rotation_range: Rotation bound in degrees; theta ~ U(-r, r).
        width_shift_range: Fraction of the width; ty ~ U(-r, r) * cols.
        height_shift_range: Fraction of the height; tx ~ U(-r, r) * rows.
        shear_range: Shear bound in degrees (Keras's unit, not radians).
        zoom_range: zx, zy ~ U(1 - r, 1 + r), drawn independently.
    """

    rotation_range: float = 20.0
    width_shift_range: float = 0.2
    height_shift_range: float = 0.2
    shear_range: float = 0.2
    zoom_range: float = 0.2

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 0:
                raise ValueError(f"{field.name} must be >= 0")
        # Keras reads shifts >= 1 as pixels rather than fractions; only the
        # fractional form is supported here, so reject the other outright.
        for name in ("width_shift_range", "height_shift_range", "zoom_range"):
            if getattr(self, name) >= 1:
                raise ValueError(f"{name} must be a fraction below 1")


def augment_seed(seed: int, epoch: int | tf.Tensor, step: int | tf.Tensor) -> tf.Tensor:
    """Derives the stateless seed of one training step.

    Args:
        seed: The run seed (any Python int; its low 64 bits are used).
        epoch: Epoch index, a Python int or an integer scalar tensor.
        step: Step index within the epoch (or global step), likewise.

    Returns:
        A shape-[2] int32 tensor for ``tf.random.stateless_*`` ops; equal
        inputs give equal seeds, in any execution mode.
    """
    # int32 because XLA only accepts int32 seeds for stateless ops. The run
    # seed is split into two 32-bit halves so distinct 64-bit seeds stay
    # distinct.
    bits = int(seed) & 0xFFFF_FFFF_FFFF_FFFF
    halves = np.array([bits & 0xFFFF_FFFF, bits >> 32], dtype=np.uint32).view(np.int32)
    key = tf.constant(halves, dtype=tf.int32)
    key = tf.random.experimental.stateless_fold_in(key, tf.constant(_AUGMENT_STREAM, tf.int32),
                                                   alg=_RNG_ALG)
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(epoch, tf.int32), alg=_RNG_ALG)
    return tf.random.experimental.stateless_fold_in(key, tf.cast(step, tf.int32), alg=_RNG_ALG)


def run_epoch_key(run_seed: int | tf.Tensor, epoch: int | tf.Tensor) -> tf.Tensor:
    """One int32 key from (run seed, epoch), for augmentation functions built with
    seed 0: the run seed can then be a tensor (a compiled step serves trials of
    several seeds), and the key is the same wherever the augmentation runs."""
    pair = tf.stack([tf.cast(run_seed, tf.int32), tf.constant(0, tf.int32)])
    return tf.random.experimental.stateless_fold_in(pair, tf.cast(epoch, tf.int32), alg=_RNG_ALG)[0]


def _stateless_unit_uniform(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Stateless U[0, 1) float32 draws, bit-identical with and without XLA.

    ``tf.random.stateless_uniform`` for floats is not: XLA turns the same
    Philox bits into floats differently from the TensorFlow kernels (checked
    on TF 2.21 CPU), so the same step would augment differently once
    compiled. The raw uint32 bits do agree, so the float conversion is done
    here: the top 24 bits, scaled by 2**-24, are exact in float32.
    """
    bits = tf.random.stateless_uniform(shape, seed=seed, minval=None, maxval=None,
                                       dtype=tf.uint32, alg=_RNG_ALG)
    return tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)),
                   tf.float32) * (2.0 ** -24)


def sample_paper_params(seed: tf.Tensor, batch_size: int | tf.Tensor,
                        height: int | tf.Tensor, width: int | tf.Tensor,
                        config: PaperAugment = PaperAugment()) -> dict[str, tf.Tensor]:
    """Draws one set of ``ImageDataGenerator`` parameters per image.

    Args:
        seed: Shape-[2] int32 stateless seed, e.g. from ``augment_seed``.
        batch_size: Number of images B.
        height: Image rows.
        width: Image columns.
        config: Ranges; the paper's by default.

    Returns:
        Keras-named float32 tensors of shape [B]: ``theta`` and ``shear`` in
        degrees, ``tx`` and ``ty`` in pixels, ``zx`` and ``zy`` as factors.
    """
    # One [B, 6] draw rather than six calls: a single seed, and every
    # parameter is an independent column.
    u = 2.0 * _stateless_unit_uniform(tf.stack([batch_size, 6]), seed) - 1.0
    rows = tf.cast(height, tf.float32)
    cols = tf.cast(width, tf.float32)
    return {
        "theta": u[:, 0] * config.rotation_range,
        "tx": u[:, 1] * (config.height_shift_range * rows),
        "ty": u[:, 2] * (config.width_shift_range * cols),
        "shear": u[:, 3] * config.shear_range,
        "zx": 1.0 + u[:, 4] * config.zoom_range,
        "zy": 1.0 + u[:, 5] * config.zoom_range,
    }


def _stack_matrices(a: tf.Tensor, b: tf.Tensor, c: tf.Tensor,
                    d: tf.Tensor, e: tf.Tensor, f: tf.Tensor) -> tf.Tensor:
    """[[a, b, c], [d, e, f], [0, 0, 1]] for each batch element → [B, 3, 3]."""
    zero = tf.zeros_like(a)
    one = tf.ones_like(a)
    flat = tf.stack([a, b, c, d, e, f, zero, zero, one], axis=-1)
    return tf.reshape(flat, [-1, 3, 3])


def paper_transform_matrix(theta_deg: tf.Tensor, tx: tf.Tensor, ty: tf.Tensor,
                           shear_deg: tf.Tensor, zx: tf.Tensor, zy: tf.Tensor,
                           height: int | tf.Tensor, width: int | tf.Tensor) -> tf.Tensor:
    """Composes Keras 2's affine matrix, ready for an output→input warp.

    Mirrors ``apply_affine_transform``: ``rotation @ shift @ shear @ zoom``,
    offset to the centre, then the (x, y)→(row, col) axis swap. The result
    maps homogeneous output (row, col) coordinates to input coordinates,
    i.e. it is what tf_keras passes to ``scipy.ndimage.affine_transform``.

    Args:
        theta_deg: Rotation in degrees, shape [B] (scalars broadcast).
        tx: Keras's ``tx`` in pixels (its height shift), shape [B].
        ty: Keras's ``ty`` in pixels (its width shift), shape [B].
        shear_deg: Shear in degrees, shape [B].
        zx: Zoom factor on Keras's x axis, shape [B].
        zy: Zoom factor on Keras's y axis, shape [B].
        height: Image rows.
        width: Image columns.

    Returns:
        float32 tensor [B, 3, 3].
    """
    params = [tf.cast(p, tf.float32) for p in (theta_deg, tx, ty, shear_deg, zx, zy)]
    shape = tf.shape(params[0])
    for p in params[1:]:
        shape = tf.broadcast_dynamic_shape(shape, tf.shape(p))
    theta, tx, ty, shear, zx, zy = (tf.broadcast_to(p, shape) for p in params)
    one = tf.ones_like(theta)
    zero = tf.zeros_like(theta)

    theta = theta * (math.pi / 180.0)
    shear = shear * (math.pi / 180.0)
    cos_t, sin_t = tf.cos(theta), tf.sin(theta)
    rotation = _stack_matrices(cos_t, -sin_t, zero, sin_t, cos_t, zero)
    shift = _stack_matrices(one, zero, tx, zero, one, ty)
    shearing = _stack_matrices(one, -tf.sin(shear), zero, zero, tf.cos(shear), zero)
    zoom = _stack_matrices(zx, zero, zero, zero, zy, zero)
    matrix = rotation @ shift @ shearing @ zoom

    # transform_matrix_offset_center(matrix, rows, cols): rows go on the
    # first (x) axis, before the axis swap below.
    o_x = tf.cast(height, tf.float32) / 2.0 - 0.5
    o_y = tf.cast(width, tf.float32) / 2.0 - 0.5
    offset = _stack_matrices(one, zero, o_x * one, zero, one, o_y * one)
    reset = _stack_matrices(one, zero, -o_x * one, zero, one, -o_y * one)
    matrix = offset @ matrix @ reset

    # M' = P M P with P swapping the first two axes, as Keras does for
    # channels-last images (col_axis > row_axis).
    swap = [1, 0, 2]
    return tf.gather(tf.gather(matrix, swap, axis=1), swap, axis=2)


def warp_bilinear_nearest(images: tf.Tensor, matrices: tf.Tensor) -> tf.Tensor:
    """Bilinear warp with edge replication, equal to scipy's order=1 "nearest".

    For each output pixel (r, c), samples the input at
    ``matrices[b] @ (r, c, 1)``. Coordinates are clamped to the image before
    interpolating; for linear interpolation this is exactly scipy's
    ``mode="nearest"`` (edge pixels extended to infinity).

    Built from gathers and arithmetic only, so it compiles under XLA on any
    device (``ImageProjectiveTransformV3`` has no XLA kernel).

    Args:
        images: [B, H, W, C] images (cast to float32).
        matrices: [B, 3, 3] output→input maps in (row, col) order; the last
            row is ignored (affine only).

    Returns:
        float32 tensor [B, H, W, C].
    """
    images = tf.cast(images, tf.float32)
    matrices = tf.cast(matrices, tf.float32)
    dims = tf.shape(images)
    batch, height, width, channels = dims[0], dims[1], dims[2], dims[3]
    src_r, src_c = _source_coordinates(matrices, height, width)

    r0f = tf.floor(src_r)
    c0f = tf.floor(src_c)
    # Weights stay [B, HW, 1] to broadcast over channels.
    wr = (src_r - r0f)[..., None]
    wc = (src_c - c0f)[..., None]
    r0 = tf.cast(r0f, tf.int32)
    c0 = tf.cast(c0f, tf.int32)
    # After clamping, r0 + 1 only leaves the image when the weight is 0.
    r1 = tf.minimum(r0 + 1, height - 1)
    c1 = tf.minimum(c0 + 1, width - 1)

    # One flat [B*H*W, C] table indexed by global pixel numbers: measured
    # faster than a batch_dims=1 gather both with and without XLA on CPU.
    # int32 indices hold up to 2**31 pixels, ~24,000 images of 299x299.
    flat = tf.reshape(images, tf.stack([batch * height * width, channels]))
    first_pixel = (tf.range(batch) * (height * width))[:, None]

    def pixels(r: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
        return tf.gather(flat, first_pixel + r * width + c)

    # a + w * (b - a): an integer coordinate (w = 0) returns the pixel
    # itself bit for bit, so identity transforms are exact.
    top = pixels(r0, c0)
    top = top + wc * (pixels(r0, c1) - top)
    bottom = pixels(r1, c0)
    bottom = bottom + wc * (pixels(r1, c1) - bottom)
    out = top + wr * (bottom - top)
    return tf.reshape(out, dims)


def _source_coordinates(matrices: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The input (row, col) each output pixel samples, [B, H*W] each, clamped to the image."""
    rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32),
                             tf.range(width, dtype=tf.float32), indexing="ij")
    rows = tf.reshape(rows, [1, -1])
    cols = tf.reshape(cols, [1, -1])
    # float32 coordinates: around 300 px their rounding step is ~3e-5 px,
    # far below what changes an 8-bit pixel, so float64 would buy nothing.
    src_r = matrices[:, 0, 0:1] * rows + matrices[:, 0, 1:2] * cols + matrices[:, 0, 2:3]
    src_c = matrices[:, 1, 0:1] * rows + matrices[:, 1, 1:2] * cols + matrices[:, 1, 2:3]
    src_r = tf.clip_by_value(src_r, 0.0, tf.cast(height - 1, tf.float32))
    src_c = tf.clip_by_value(src_c, 0.0, tf.cast(width - 1, tf.float32))
    return src_r, src_c


def paper_augment(images: tf.Tensor, seed: int, epoch: int | tf.Tensor,
                  step: int | tf.Tensor, config: PaperAugment = PaperAugment()) -> tf.Tensor:
    """Applies the paper's ``ImageDataGenerator`` augmentation to a batch.

    Args:
        images: [B, H, W, C] uint8 or float batch; cast to float32 inside so
            the host can ship compact uint8 to the device.
        seed: Run seed.
        epoch: Epoch index (int or integer scalar tensor).
        step: Step index (int or integer scalar tensor).
        config: Ranges; the paper's by default.

    Returns:
        float32 [B, H, W, C] in the input's value range (bilinear
        interpolation only forms convex combinations of input pixels).

    The random parameters are bit-identical eagerly, in graphs, in
    ``tf.data`` and under XLA. Pixels agree to float rounding only: Grappler
    (in graphs) and XLA regroup constant multiplications and fuse float
    arithmetic, which moves the sampling coordinates by a few float32 ulps
    (measured < 1e-3 on 0-255 data at 32x32, < 0.02 at 299x299). A given execution
    mode is deterministic, so a resumed run reproduces its own results.
    """
    images = tf.cast(images, tf.float32)
    dims = tf.shape(images)
    params = sample_paper_params(augment_seed(seed, epoch, step), dims[0], dims[1], dims[2],
                                 config)
    matrices = paper_transform_matrix(params["theta"], params["tx"], params["ty"],
                                      params["shear"], params["zx"], params["zy"],
                                      dims[1], dims[2])
    return warp_bilinear_nearest(images, matrices)


def default_jit_for_augment(device_type: str) -> bool:
    """Whether the "paper" warp should be XLA-compiled on this device type.

    Args:
        device_type: ``"CPU"``, ``"GPU"`` or ``"TPU"`` (case-insensitive), as
            in ``tf.config.list_logical_devices()``.

    Returns:
        True on CPU, GPU and TPU; False on any other (pluggable) device type,
        whose XLA support is not a given.
    """
    # TPU: XLA is the only way to run at all. CPU, measured with
    # benchmarks/bench_augment.py (2 shared vCPUs, 299x299x1, median of 9):
    # the XLA-compiled gather warp runs ~4,100 img/s at batch 5 and ~4,500
    # at batch 64, against ~1,400-1,800 for ImageProjectiveTransformV3,
    # ~600-800 for the same gather warp without XLA (every op materialises
    # a [B, H*W] intermediate, which XLA fuses away) and ~520 for the
    # paper's scipy path. Compiling costs ~0.6-0.8 s per batch shape, repaid
    # within the first few hundred images. GPU: the unfused warp is ~20
    # small kernels per batch and the fused one a couple, so XLA is
    # expected to win there as well (not measured: no GPU on that machine).
    return device_type.upper() in ("CPU", "GPU", "TPU")


def _current_device_type() -> str:
    """The device type TensorFlow places ops on by default."""
    for device_type in ("TPU", "GPU"):
        if tf.config.list_logical_devices(device_type):
            return device_type
    return "CPU"


def _image_dims(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from an int (square) or a pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def _check_shape(images: tf.Tensor, height: int, width: int, channels: int) -> None:
    """Fails at trace time on a batch whose static shape contradicts the setup."""
    expected = [height, width, channels]
    got = images.shape[1:].as_list() if images.shape.rank == 4 else None
    if got is None or any(g is not None and g != e for g, e in zip(got, expected)):
        raise ValueError(f"expected images of shape [B, {height}, {width}, {channels}], "
                         f"got {images.shape}")


# The third-party policies, by their keras-cv layer.
_KERAS_CV_LAYERS = {"randaugment": "RandAugment", "augmix": "AugMix"}
# The configs accept exactly the policies implemented here (engine.config lists them).
assert set(AUGMENT_POLICIES) == {"none", "paper", *_KERAS_CV_LAYERS}, AUGMENT_POLICIES


def _keras_cv_layer(policy: str, seed: int, value_range: tuple[float, float]) -> Callable:
    """Builds the keras-cv layer of a third-party policy (imported lazily)."""
    import keras_cv  # Heavy import, only for the policies that need it.

    return getattr(keras_cv.layers, _KERAS_CV_LAYERS[policy])(value_range=value_range, seed=seed)


def make_augment_fn(policy: str, *, jit_compile: bool | None = None,
                    image_size: int | tuple[int, int], channels: int, seed: int,
                    config: PaperAugment = PaperAugment(),
                    value_range: tuple[float, float] = (0.0, 255.0)) -> AugmentFn:
    """Builds the augmentation callable of a training run.

    Policies:

    * ``"none"``: only the cast to float32.
    * ``"paper"``: ``paper_augment`` in its own ``tf.function`` (separate from
      the training step so its XLA choice is independent), stateless: the
      output depends only on (seed, epoch, step) and the images.
    * ``"randaugment"``, ``"augmix"``: ``keras_cv.layers.RandAugment`` /
      ``AugMix`` with default strengths. Both contain ops without XLA kernels
      (``HistogramFixedWidth`` in equalization, ``RandomGamma`` in AugMix's
      Dirichlet draw), so they always run in a plain ``tf.function`` and
      ``jit_compile`` is ignored. RandAugment rejects 1-channel images, so
      grayscale batches are tiled to 3 channels and averaged back to 1
      (every op treats three identical channels alike, so the average is
      the grayscale result); AugMix handles 1 channel natively. Their
      randomness is stateful: ``epoch`` and ``step`` are ignored, some
      draws ignore the layer seed and read the global one, so a fresh
      process repeats a run only under ``keras.utils.set_random_seed``, and
      a resumed run does not replay the same draws.

    None of the policies flips images: chest X-rays have a side.

    Args:
        policy: One of ``AUGMENT_POLICIES``.
        jit_compile: XLA for the "paper" policy; None picks
            ``default_jit_for_augment`` for the current device.
        image_size: Image (height, width), or one int for square images.
        channels: Channels per image (1 for grayscale, or 3).
        seed: Run seed.
        config: Ranges of the "paper" policy.
        value_range: Pixel range of the inputs, for the keras-cv policies.

    Returns:
        ``fn(images, epoch, step)`` → float32 images of the same shape.

    Raises:
        ValueError: On an unknown policy.
    """
    if policy not in AUGMENT_POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; "
                         f"choose one of: {', '.join(AUGMENT_POLICIES)}")
    height, width = _image_dims(image_size)
    if policy == "none":
        return _cast_only_fn(height, width, channels)
    if policy == "paper":
        return _paper_fn(seed, config, jit_compile, height, width, channels)
    return _keras_cv_fn(policy, seed, value_range, height, width, channels)


def _cast_only_fn(height: int, width: int, channels: int) -> AugmentFn:
    """The "none" policy: the batch's shape checked, its images cast to float32."""
    def cast_only(images: tf.Tensor, epoch: int | tf.Tensor = 0,
                  step: int | tf.Tensor = 0) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        _check_shape(images, height, width, channels)
        return tf.cast(images, tf.float32)
    return cast_only


def _paper_fn(seed: int, config: PaperAugment, jit_compile: bool | None, height: int, width: int,
              channels: int) -> AugmentFn:
    """The "paper" policy (see ``make_augment_fn``)."""
    if jit_compile is None:
        jit_compile = default_jit_for_augment(_current_device_type())

    # reduce_retracing: a smaller last batch must not retrace the graph
    # (XLA still compiles once per concrete shape, which is unavoidable).
    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def compiled(images: tf.Tensor, epoch: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        return paper_augment(images, seed, epoch, step, config)

    def paper(images: tf.Tensor, epoch: int | tf.Tensor, step: int | tf.Tensor) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        _check_shape(images, height, width, channels)
        # Tensors, not Python ints, so each new step reuses the trace.
        return compiled(images, tf.cast(epoch, tf.int32), tf.cast(step, tf.int32))
    return paper


def _keras_cv_fn(policy: str, seed: int, value_range: tuple[float, float], height: int, width: int,
                 channels: int) -> AugmentFn:
    """A third-party policy (see ``make_augment_fn``): its keras-cv layer in a plain ``tf.function``."""
    layer = _keras_cv_layer(policy, seed, value_range)
    tile_to_rgb = policy == "randaugment" and channels == 1

    @tf.function(jit_compile=False, reduce_retracing=True)
    def third_party(images: tf.Tensor) -> tf.Tensor:
        images = tf.cast(images, tf.float32)
        if tile_to_rgb:
            images = tf.tile(images, [1, 1, 1, 3])
        out = tf.cast(layer(images, training=True), tf.float32)
        if tile_to_rgb:
            out = tf.reduce_mean(out, axis=-1, keepdims=True)
        return out

    def keras_cv_policy(images: tf.Tensor, epoch: int | tf.Tensor = 0,
                        step: int | tf.Tensor = 0) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        _check_shape(images, height, width, channels)
        return third_party(images)
    return keras_cv_policy
