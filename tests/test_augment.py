"""The on-device augmentation against the paper's own stack (tf_keras + scipy)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage
from tf_keras.preprocessing.image import ImageDataGenerator
from tf_keras.src.preprocessing import image as keras_image

from engine.data.augment import (
    AUGMENT_POLICIES,
    PaperAugment,
    augment_seed,
    default_jit_for_augment,
    make_augment_fn,
    paper_augment,
    paper_transform_matrix,
    sample_paper_params,
    warp_bilinear_nearest,
)

# Non-square on purpose: Keras swaps axes internally, and a row/col mix-up
# only shows when rows != cols.
HEIGHT, WIDTH = 16, 20

PARAM_SETS = [
    {"theta": 13.0},
    {"tx": 2.5},
    {"ty": -3.25},
    {"shear": 0.15},
    {"shear": -17.0},
    {"zx": 0.85},
    {"zy": 1.15},
    {"theta": -19.0, "tx": -3.0, "ty": 4.0, "shear": 0.2, "zx": 1.2, "zy": 0.8},
    {"theta": 7.5, "tx": 1.25, "ty": -0.5, "shear": -0.1, "zx": 0.95, "zy": 1.05},
]


def full_params(params: dict) -> dict:
    """Keras parameter dict with identity defaults for what is not given."""
    return {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0, **params}


def engine_matrix(params: dict, height: int, width: int) -> np.ndarray:
    p = full_params(params)
    return paper_transform_matrix([p["theta"]], [p["tx"]], [p["ty"]], [p["shear"]],
                                  [p["zx"]], [p["zy"]], height, width).numpy()[0]


def keras_matrix(params: dict, height: int, width: int, monkeypatch) -> np.ndarray:
    """The matrix tf_keras hands to scipy, captured from the call itself."""
    calls = []

    def record(x, matrix, offset, **kwargs):
        calls.append((np.array(matrix), np.array(offset), kwargs))
        return x

    fake = types.SimpleNamespace(interpolation=types.SimpleNamespace(affine_transform=record))
    monkeypatch.setattr(keras_image, "ndimage", fake)
    image = np.zeros((height, width, 1), np.float32)
    ImageDataGenerator().apply_transform(image, full_params(params))
    monkeypatch.undo()
    assert len(calls) == 1
    matrix, offset, kwargs = calls[0]
    assert kwargs["order"] == 1 and kwargs["mode"] == "nearest"
    out = np.eye(3)
    out[:2, :2] = matrix
    out[:2, 2] = offset
    return out


def scipy_warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Reference: scipy order-1 'nearest' warp, one channel at a time."""
    return np.stack([ndimage.affine_transform(image[..., c], matrix[:2, :2], matrix[:2, 2],
                                              order=1, mode="nearest")
                     for c in range(image.shape[-1])], axis=-1)


def random_images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


@pytest.mark.parametrize("size", [(HEIGHT, WIDTH), (32, 32), (WIDTH, HEIGHT)])
@pytest.mark.parametrize("params", PARAM_SETS)
def test_matrix_equals_tf_keras(params, size, monkeypatch):
    expected = keras_matrix(params, *size, monkeypatch)
    np.testing.assert_allclose(engine_matrix(params, *size), expected, rtol=1e-5, atol=1e-5)


def test_height_shift_moves_columns_like_keras():
    # Keras's tx is drawn as a fraction of the height, yet after its axis swap
    # it shifts along columns: out[r, c] = in[r, c + tx].
    image = random_images((1, HEIGHT, WIDTH, 1))
    out = warp_bilinear_nearest(image, engine_matrix({"tx": 2.0}, HEIGHT, WIDTH)[None])
    np.testing.assert_array_equal(out[0, :, :-2], image[0, :, 2:])
    np.testing.assert_array_equal(out[0, :, -2:], np.repeat(image[0, :, -1:], 2, axis=1))


WARP_MATRICES = [
    np.array([[1.3, 0.4, -7.0], [-0.2, 0.8, 9.5], [0, 0, 1]]),
    np.array([[0.9, -0.3, 3.7], [0.35, 1.1, -2.2], [0, 0, 1]]),
    np.array([[2.5, 0.0, -20.0], [0.0, 3.0, -25.0], [0, 0, 1]]),  # mostly off the image
    np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.25], [0, 0, 1]]),
]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("index", range(len(WARP_MATRICES)))
def test_warp_matches_scipy(index, channels):
    matrix = WARP_MATRICES[index]
    image = random_images((HEIGHT, WIDTH, channels), seed=index)
    out = warp_bilinear_nearest(image[None], matrix[None]).numpy()[0]
    assert np.abs(out - scipy_warp(image, matrix)).max() < 1e-3


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("params", PARAM_SETS)
def test_warp_matches_image_data_generator(params, channels):
    image = random_images((HEIGHT, WIDTH, channels), seed=3)
    expected = ImageDataGenerator().apply_transform(image, full_params(params))
    matrix = engine_matrix(params, HEIGHT, WIDTH)
    out = warp_bilinear_nearest(image[None], matrix[None]).numpy()[0]
    assert np.abs(out - expected).max() < 1e-3


def test_batch_elements_use_their_own_matrix():
    images = random_images((3, HEIGHT, WIDTH, 1), seed=4)
    matrices = np.stack([WARP_MATRICES[0], WARP_MATRICES[1], np.eye(3)])
    out = warp_bilinear_nearest(images, matrices).numpy()
    for b in range(3):
        assert np.abs(out[b] - scipy_warp(images[b], matrices[b])).max() < 1e-3


def test_identity_returns_input_exactly():
    for channels in (1, 3):
        images = np.random.default_rng(5).integers(0, 256, (2, HEIGHT, WIDTH, channels),
                                                   dtype=np.uint8)
        out = warp_bilinear_nearest(images, np.stack([engine_matrix({}, HEIGHT, WIDTH)] * 2))
        assert out.dtype == tf.float32
        np.testing.assert_array_equal(out.numpy(), images.astype(np.float32))
        still = PaperAugment(rotation_range=0, width_shift_range=0, height_shift_range=0,
                             shear_range=0, zoom_range=0)
        out = paper_augment(images, 1, 2, 3, still)
        np.testing.assert_array_equal(out.numpy(), images.astype(np.float32))


@pytest.mark.parametrize("channels", [1, 3])
def test_paper_augment_dtype_shape_and_range(channels):
    images = np.random.default_rng(6).integers(0, 256, (4, HEIGHT, WIDTH, channels),
                                               dtype=np.uint8)
    out = paper_augment(images, 11, 0, 0)
    assert out.dtype == tf.float32
    assert out.shape == images.shape
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
    assert not np.array_equal(out.numpy(), images.astype(np.float32))


def test_same_result_eager_tf_data_tf_function_and_xla():
    images = tf.constant(random_images((4, 32, 32, 1), seed=7))
    epoch, step = tf.constant(3), tf.constant(9)

    def augment(batch, epoch, step):
        return paper_augment(batch, 42, epoch, step)

    eager = augment(images, epoch, step).numpy()
    graph = tf.function(augment)(images, epoch, step)
    dataset = tf.data.Dataset.from_tensors(images).map(lambda b: augment(b, epoch, step))
    from_data = next(iter(dataset))
    xla = tf.function(augment, jit_compile=True)(images, epoch, step)

    # Grappler and XLA regroup float arithmetic, so pixels may move by float
    # rounding (~1e-4 here); a different draw would move them by tens.
    for out in (graph, from_data, xla):
        assert out.dtype == tf.float32 and out.shape == eager.shape
        assert np.abs(out.numpy() - eager).max() < 2e-3
    # Re-running a mode reproduces it bit for bit.
    np.testing.assert_array_equal(tf.function(augment)(images, epoch, step).numpy(),
                                  graph.numpy())


def test_parameters_bit_identical_in_every_mode():
    def draw(epoch, step):
        return sample_paper_params(augment_seed(5, epoch, step), 64, HEIGHT, WIDTH)

    epoch, step = tf.constant(1), tf.constant(2)
    eager = draw(epoch, step)
    graph = tf.function(draw)(epoch, step)
    xla = tf.function(draw, jit_compile=True)(epoch, step)
    from_data = next(iter(tf.data.Dataset.range(1).map(lambda _: draw(epoch, step))))
    for name in eager:
        for other in (graph, xla, from_data):
            np.testing.assert_array_equal(other[name].numpy(), eager[name].numpy())


def test_same_seed_epoch_step_same_augmentation():
    images = random_images((4, HEIGHT, WIDTH, 1), seed=8)
    reference = paper_augment(images, 42, 2, 7).numpy()
    np.testing.assert_array_equal(paper_augment(images, 42, 2, 7).numpy(), reference)
    for other in ((42, 2, 8), (42, 3, 7), (43, 2, 7)):
        assert np.abs(paper_augment(images, *other).numpy() - reference).max() > 1.0, other


def test_augment_seed_is_int32_and_keeps_64_bit_seeds_apart():
    seed = augment_seed(2**40 + 3, 1, 2)
    assert seed.dtype == tf.int32 and seed.shape == (2,)
    np.testing.assert_array_equal(augment_seed(2**40 + 3, 1, 2).numpy(), seed.numpy())
    assert not np.array_equal(augment_seed(3, 1, 2).numpy(), seed.numpy())


def test_sampled_parameters_fill_their_ranges():
    n = 20_000
    config = PaperAugment()
    params = {k: v.numpy() for k, v in
              sample_paper_params(augment_seed(0, 0, 0), n, HEIGHT, WIDTH, config).items()}
    bounds = {
        "theta": (-20.0, 20.0),
        "tx": (-0.2 * HEIGHT, 0.2 * HEIGHT),  # height shift, in rows
        "ty": (-0.2 * WIDTH, 0.2 * WIDTH),  # width shift, in columns
        "shear": (-0.2, 0.2),  # degrees, not radians
        "zx": (0.8, 1.2),
        "zy": (0.8, 1.2),
    }
    assert set(params) == set(bounds)
    for name, (low, high) in bounds.items():
        values = params[name]
        width = high - low
        assert values.shape == (n,), name
        assert values.min() >= low and values.max() <= high, name
        # With 20k uniform draws the extremes are within 1e-3 of the range
        # with overwhelming probability, and the mean's standard error is
        # 0.2% of the range.
        assert values.min() < low + 1e-3 * width and values.max() > high - 1e-3 * width, name
        assert abs(values.mean() - (low + high) / 2) < 0.01 * width, name
    # zx and zy are separate draws, not one shared zoom.
    assert abs(np.corrcoef(params["zx"], params["zy"])[0, 1]) < 0.05


def test_overridden_ranges_are_used():
    config = PaperAugment(rotation_range=5.0, zoom_range=0.0)
    params = sample_paper_params(augment_seed(0, 0, 0), 2000, HEIGHT, WIDTH, config)
    assert 4.9 < float(tf.reduce_max(tf.abs(params["theta"]))) <= 5.0
    np.testing.assert_array_equal(params["zx"].numpy(), np.ones(2000, np.float32))


def test_invalid_config_rejected():
    with pytest.raises(ValueError, match="width_shift_range"):
        PaperAugment(width_shift_range=3)
    with pytest.raises(ValueError, match="rotation_range"):
        PaperAugment(rotation_range=-1)


def test_unknown_policy():
    with pytest.raises(ValueError, match="choose one of: none, paper, randaugment, augmix$"):
        make_augment_fn("cutmix", jit_compile=False, image_size=32, channels=1, seed=0)


def test_none_policy_only_casts():
    fn = make_augment_fn("none", jit_compile=False, image_size=(HEIGHT, WIDTH), channels=1, seed=0)
    images = np.random.default_rng(9).integers(0, 256, (3, HEIGHT, WIDTH, 1), dtype=np.uint8)
    out = fn(images, 0, 0)
    assert out.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), images.astype(np.float32))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_paper_policy_is_paper_augment(jit_compile):
    fn = make_augment_fn("paper", jit_compile=jit_compile, image_size=(HEIGHT, WIDTH),
                         channels=3, seed=21)
    images = np.random.default_rng(10).integers(0, 256, (2, HEIGHT, WIDTH, 3), dtype=np.uint8)
    expected = paper_augment(images, 21, 4, 5).numpy()
    out = fn(images, 4, 5)
    assert out.dtype == tf.float32 and out.shape == images.shape
    # Compiled separately, so equal to eager up to float rounding.
    assert np.abs(out.numpy() - expected).max() < 2e-3
    # A new step reuses the trace (tensor arguments) and changes the draw.
    assert np.abs(fn(images, 4, 6).numpy() - expected).max() > 1.0


def test_policy_rejects_wrong_image_shape():
    fn = make_augment_fn("paper", jit_compile=False, image_size=32, channels=1, seed=0)
    with pytest.raises(ValueError, match=r"\[B, 32, 32, 1\]"):
        fn(np.zeros((2, 32, 32, 3), np.uint8), 0, 0)


def test_default_jit_for_augment():
    assert default_jit_for_augment("CPU") and default_jit_for_augment("gpu")
    assert default_jit_for_augment("TPU")
    assert not default_jit_for_augment("METAL")


@pytest.mark.parametrize("policy", ["randaugment", "augmix"])
def test_keras_cv_policies_on_grayscale(policy):
    fn = make_augment_fn(policy, jit_compile=True, image_size=32, channels=1, seed=3)
    images = np.random.default_rng(11).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)
    out = fn(images, 0, 0)
    assert out.dtype == tf.float32
    assert out.shape == (2, 32, 32, 1)
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0


def test_policy_names():
    from engine import config

    assert AUGMENT_POLICIES == ("none", "paper", "randaugment", "augmix")
    assert AUGMENT_POLICIES is config.AUGMENT_POLICIES  # one list: the configs accept what is implemented
    with pytest.raises(ValueError, match="unknown augmentation policy 'mixup'"):
        make_augment_fn("mixup", image_size=32, channels=1, seed=0)
