"""FusedBatchNormalization against Keras 3's own BatchNormalization."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.model import all_layers
from engine.model.fused_bn import FusedBatchNormalization, fuse_batchnorm

SHAPE = (4, 8, 8, 6)  # batch, height, width, channels: n = 256 per channel
MOMENTUM = 0.9  # far from the default 0.99 so a wrong update shows after a step


def inputs(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Per-channel offsets and scales, so channel mixing would show."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    return (rng.normal(size=shape) * rng.uniform(0.5, 3.0, channels)
            + rng.uniform(-2.0, 2.0, channels)).astype(np.float32)


def layer_pair(shape: tuple[int, ...] = SHAPE, **kwargs) -> tuple[keras.layers.Layer, FusedBatchNormalization]:
    """Keras' layer and the fused one, built, with the same non-trivial weights."""
    kwargs.setdefault("momentum", MOMENTUM)
    reference = keras.layers.BatchNormalization(**kwargs)
    fused = FusedBatchNormalization(**kwargs)
    reference.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(42)
    weights = []
    for weight in reference.weights:
        value = rng.uniform(0.5, 1.5, weight.shape)
        if "moving_mean" in weight.path or "beta" in weight.path:
            value -= 1.0
        weights.append(value.astype(np.float32))
    reference.set_weights(weights)
    fused.set_weights(weights)
    return reference, fused


def op_types(layer: keras.layers.Layer, shape: tuple[int | None, ...], training: bool,
             dtype: tf.DType = tf.float32) -> set[str]:
    """The op types of one traced call of ``layer``."""
    function = tf.function(lambda x: layer(x, training=training))
    graph = function.get_concrete_function(tf.TensorSpec(shape, dtype)).graph
    return {op.type for op in graph.get_operations()}


def assert_close(actual, expected, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(np.asarray(actual, np.float32), np.asarray(expected, np.float32),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("scale,center", [(True, True), (False, True), (True, False),
                                          (False, False)])
def test_training_outputs_and_moving_statistics_match_keras(scale: bool, center: bool):
    reference, fused = layer_pair(scale=scale, center=center)
    assert [w.path.split("/")[-1] for w in fused.weights] == \
        [w.path.split("/")[-1] for w in reference.weights]
    for step in range(3):
        x = inputs(step)
        assert_close(fused(x, training=True), reference(x, training=True))
    # Keras 3 stores the biased (divide-by-n) batch variance, not the kernel's
    # Bessel-corrected one: a 256-sample channel would differ by 0.4%.
    assert_close(fused.moving_mean, reference.moving_mean, 1e-6)
    assert_close(fused.moving_variance, reference.moving_variance, 1e-6)


@pytest.mark.parametrize("scale,center", [(True, True), (False, False)])
def test_inference_outputs_match_keras(scale: bool, center: bool):
    reference, fused = layer_pair(scale=scale, center=center)
    x = inputs(1)
    for training in (False, None):
        assert_close(fused(x, training=training), reference(x, training=training))
    # Inference leaves the moving statistics alone.
    assert_close(fused.moving_mean, reference.moving_mean, 0)
    assert_close(fused.moving_variance, reference.moving_variance, 0)


def test_single_sample_per_channel_keeps_zero_variance():
    """n = 1: the kernel's n / (n - 1) correction must not divide by zero."""
    shape = (1, 1, 1, 3)
    reference, fused = layer_pair(shape)
    x = inputs(2, shape)
    assert_close(fused(x, training=True), reference(x, training=True))
    assert_close(fused.moving_variance, reference.moving_variance, 1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_gradients_match_keras(training: bool):
    reference, fused = layer_pair()
    x = tf.constant(inputs(3))
    # A non-uniform upstream gradient, or d/dx of a plain sum would vanish.
    weights = tf.constant(inputs(4))
    grads = []
    for layer in (reference, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=training) * weights)
        grads.append(tape.gradient(loss, [x, *layer.trainable_variables]))
    for expected, actual in zip(*grads):
        assert_close(actual, expected, 1e-4)


def test_frozen_layer_runs_in_inference_mode():
    reference, fused = layer_pair()
    reference.trainable = False
    fused.trainable = False
    moving = [w.numpy().copy() for w in fused.non_trainable_weights]
    x = inputs(5)
    assert_close(fused(x, training=True), fused(x, training=False), 0)
    assert_close(fused(x, training=True), reference(x, training=True))
    for before, weight in zip(moving, fused.non_trainable_weights):
        np.testing.assert_array_equal(weight.numpy(), before)


@pytest.mark.parametrize("policy,tol", [("mixed_bfloat16", 2e-2), ("mixed_float16", 2e-3)])
def test_mixed_precision_keeps_float32_statistics(policy: str, tol: float):
    reference, fused = layer_pair(dtype=policy)
    assert fused.moving_mean.dtype == "float32" and fused.gamma.dtype == "float32"
    for step in range(2):
        x = inputs(6 + step)
        out, expected = fused(x, training=True), reference(x, training=True)
        assert out.dtype == expected.dtype == tf.as_dtype(policy.split("_")[1])
        # Both round the same float32 normalisation to 8 (bf16) or 11 (fp16)
        # significant bits; at most one unit in the last place apart.
        assert_close(out, expected, tol)
    # Statistics come from the same low-precision inputs, accumulated in
    # float32 by both: equal up to float32 rounding.
    assert_close(fused.moving_mean, reference.moving_mean, 1e-5)
    assert_close(fused.moving_variance, reference.moving_variance, 1e-5)
    x = inputs(8)
    assert_close(fused(x, training=False), reference(x, training=False), tol)


def test_fused_kernel_is_used_for_4d_channels_last_inputs():
    _, fused = layer_pair()
    for training in (True, False):
        types = op_types(fused, (None, 8, 8, 6), training)
        assert "FusedBatchNormV3" in types
        assert "Mean" not in types  # no separate moments


def test_unknown_batch_size_gives_the_same_statistics():
    """A symbolic batch dimension takes the dynamic-shape variance path."""
    reference, fused = layer_pair()
    call = tf.function(lambda x: fused(x, training=True),
                       input_signature=[tf.TensorSpec((None, 8, 8, 6), tf.float32)])
    x = inputs(18)
    assert_close(call(x), reference(x, training=True))
    assert_close(fused.moving_variance, reference.moving_variance, 1e-6)


@pytest.mark.parametrize("kwargs,shape", [
    ({}, (4, 6)),                       # rank 2: no fused kernel
    ({"axis": 1}, (4, 6, 8, 8)),        # channels first
    ({"renorm": True}, SHAPE),          # renorm has its own statistics
    ({"epsilon": 1e-6}, SHAPE),         # below cuDNN's minimum epsilon
])
def test_other_cases_fall_back_to_keras(kwargs: dict, shape: tuple[int, ...]):
    reference, fused = layer_pair(shape, **kwargs)
    assert "FusedBatchNormV3" not in op_types(fused, shape, True)
    x = inputs(9, shape)
    assert_close(fused(x, training=True), reference(x, training=True))
    assert_close(fused.moving_variance, reference.moving_variance, 1e-6)


def test_mask_falls_back_to_keras():
    reference, fused = layer_pair()
    x = inputs(10)
    mask = np.random.default_rng(0).uniform(size=SHAPE[:-1]) > 0.3
    assert_close(fused(x, training=True, mask=mask), reference(x, training=True, mask=mask))
    assert_close(fused.moving_variance, reference.moving_variance, 1e-6)


def test_xla_compiles_the_fused_kernel():
    """FusedBatchNormV3 and its gradient have XLA kernels (tf2xla)."""
    reference, fused = layer_pair()
    x = tf.constant(inputs(11))

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(fused(x, training=True)) * x)
        return tape.gradient(loss, x)

    grad = step(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.square(reference(x, training=True)) * x)
    assert_close(grad, tape.gradient(loss, x), 1e-4)
    # XLA returns the Bessel-corrected variance too; the layer undoes it alike.
    assert_close(fused.moving_variance, reference.moving_variance, 1e-6)
    assert_close(fused.moving_mean, reference.moving_mean, 1e-6)


def small_model(freeze: bool = False) -> keras.Model:
    """A Functional model around a nested Functional backbone with BN."""
    backbone_in = keras.Input((8, 8, 3), name="backbone_in")
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv0")(backbone_in)
    x = keras.layers.BatchNormalization(scale=False, momentum=0.5, epsilon=1e-2, name="bn0")(x)
    x = keras.layers.Activation("relu", name="relu0")(x)
    x = keras.layers.Conv2D(5, 3, strides=2, use_bias=False, name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    # A non-linearity between bn1 and head_bn: a BN straight after another
    # in training mode zeroes the first one's beta gradient, and Adam would
    # then amplify rounding noise into different updates.
    x = keras.layers.Activation("tanh", name="tanh1")(x)
    backbone = keras.Model(backbone_in, x, name="backbone")
    if freeze:
        backbone.trainable = False
        backbone.get_layer("bn1").trainable = True
    image = keras.Input((8, 8, 3), name="image")
    x = backbone(image)
    x = keras.layers.BatchNormalization(momentum=0.8, name="head_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="out")(x)
    model = keras.Model(image, outputs, name="classifier")
    # Non-default moving statistics, so inference outputs depend on them.
    for weight in model.non_trainable_weights:
        weight.assign(np.random.default_rng(len(weight.path)).uniform(0.5, 1.5, weight.shape))
    return model


def bn_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("freeze", [False, True])
def test_fuse_batchnorm_keeps_structure_weights_and_outputs(freeze: bool):
    model = small_model(freeze)
    fused = fuse_batchnorm(model)
    assert [type(layer) for layer in bn_layers(model)] == [keras.layers.BatchNormalization] * 3
    assert [type(layer) for layer in bn_layers(fused)] == [FusedBatchNormalization] * 3
    assert fused.name == model.name
    assert [layer.name for layer in all_layers(fused)] == [layer.name for layer in all_layers(model)]
    for old, new in zip(all_layers(model), all_layers(fused)):
        assert new.trainable == old.trainable, old.name
        if isinstance(old, keras.layers.BatchNormalization):
            assert (new.momentum, new.epsilon, new.scale, new.center) == \
                (old.momentum, old.epsilon, old.scale, old.center)
    assert [w.path for w in fused.weights] == [w.path for w in model.weights]
    for old, new in zip(model.weights, fused.weights):
        np.testing.assert_array_equal(new.numpy(), old.numpy())
    assert len(fused.trainable_weights) == len(model.trainable_weights)
    x = inputs(12, (4, 8, 8, 3))
    assert_close(fused(x, training=False), model(x, training=False))
    assert_close(fused(x, training=True), model(x, training=True))
    for old, new in zip(model.non_trainable_weights, fused.non_trainable_weights):
        assert_close(new, old, 1e-6)
    # Inputs keep their names (clone_model alone would rename them), which
    # dict-keyed feeding relies on.
    assert fused.input.name == model.input.name == "image"
    assert fused.get_layer("backbone").input.name == "backbone_in"


def test_fuse_batchnorm_handles_sequential_models():
    block = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.BatchNormalization(name="bn")], name="block")
    image = keras.Input((8, 8, 3), name="image")
    model = keras.Model(image, keras.layers.BatchNormalization(name="top_bn")(block(image)))
    for source in (block, model):
        fused = fuse_batchnorm(source)
        assert [type(layer) for layer in bn_layers(fused)] == \
            [FusedBatchNormalization] * len(bn_layers(source))
        x = inputs(17, (2, 8, 8, 3))
        assert_close(fused(x, training=True), source(x, training=True))


def test_fit_matches_unfused_model():
    """Adam on the same data: weights and statistics stay equal after fit."""
    keras.utils.set_random_seed(0)
    model = small_model()
    fused = fuse_batchnorm(model)
    x = inputs(13, (16, 8, 8, 3))
    y = (np.arange(16) % 2).astype(np.float32)[:, None]
    for m in (model, fused):
        m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy",
                  jit_compile=False)
        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for old, new in zip(model.weights, fused.weights):
        assert_close(new, old, 1e-4)


def test_fit_with_xla_matches_unfused_model():
    model = small_model()
    fused = fuse_batchnorm(model)
    x = inputs(14, (8, 8, 8, 3))
    y = (np.arange(8) % 2).astype(np.float32)[:, None]
    model.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=False)
    fused.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=True)
    for m in (model, fused):
        m.train_on_batch(x, y)
        m.train_on_batch(x, y)
    for old, new in zip(model.weights, fused.weights):
        assert_close(new, old, 1e-4)


def test_saves_and_loads_in_safe_mode(tmp_path):
    model = fuse_batchnorm(small_model())
    path = tmp_path / "fused.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [type(layer) for layer in bn_layers(loaded)] == [FusedBatchNormalization] * 3
    x = inputs(15, (2, 8, 8, 3))
    assert_close(loaded(x, training=False), model(x, training=False), 0)
    config = loaded.get_layer("head_bn").get_config()
    assert config["momentum"] == 0.8


def test_inception_v3_gets_all_94_layers_fused():
    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3))
    image = keras.Input((75, 75, 3))
    outputs = keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.GlobalAveragePooling2D()(base(image)))
    model = keras.Model(image, outputs)
    fused = fuse_batchnorm(model)
    assert len(bn_layers(fused)) == 94
    assert all(isinstance(layer, FusedBatchNormalization) for layer in bn_layers(fused))
    assert all(not layer.scale for layer in bn_layers(fused))  # InceptionV3's choice
    x = inputs(16, (2, 75, 75, 3))
    assert_close(fused(x, training=False), model(x, training=False), 1e-4)
