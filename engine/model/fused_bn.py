"""Batch normalization on TensorFlow's fused kernel, for Keras 3 models.

Keras 3's ``BatchNormalization`` computes the batch moments and the
normalization from separate TensorFlow ops (``tf.nn.moments`` then
``tf.nn.batch_normalization``): in a training step some 25 ops per layer,
forward and backward (means, squared differences, broadcasts, products and
their gradients), many of them full passes over the activations. TensorFlow
has one kernel for the forward pass (``FusedBatchNormV3``) and one for its
gradient (``FusedBatchNormGradV3``), which Keras 2 (``tf_keras``) uses, and
which oneDNN's graph rewrite further merges with a following ReLU. On a CPU
this is the largest difference between a Keras 3 and a Keras 2 training step
of InceptionV3 (94 BatchNormalization layers; see
``benchmarks/profile_step.py``).

``FusedBatchNormalization`` is a drop-in subclass that calls the fused kernel
where it applies (TensorFlow backend, 4-D channels-last input, no mask, no
renorm, no cross-replica sync) and otherwise defers to Keras' own code; its
outputs, gradients and moving statistics follow Keras 3's semantics, not
Keras 2's (see ``_population_variance``). ``fuse_batchnorm`` swaps it into an
existing model, nested backbones included.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from engine.model import keras_internals

# Input dtypes with a FusedBatchNormV3 kernel; statistics are float32 for all.
_FUSED_DTYPES = ("float32", "float16", "bfloat16")
# cuDNN refuses epsilon below this (TensorFlow's own wrapper silently raises
# it); the layer keeps Keras' exact epsilon by not fusing such layers at all.
_MIN_FUSED_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="engine")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by ``FusedBatchNormV3``.

    Same arguments, weights, config and semantics as the parent:

    * training (``training=True`` and ``trainable=True``): normalizes with the
      batch mean and the biased batch variance, then updates
      ``moving = moving * momentum + batch * (1 - momentum)`` with that same
      biased variance, as Keras 3 does;
    * otherwise (inference, or a frozen layer): normalizes with the moving
      statistics;
    * float16/bfloat16 inputs keep float32 statistics and parameters, and the
      kernel accumulates in float32, as Keras' upcast does.

    Inputs that the fused kernel does not cover (other backends, ranks or
    axes, masks, renorm, synchronized statistics, float64, epsilon below
    cuDNN's minimum) go through ``keras.layers.BatchNormalization.call``.
    """

    def call(self, inputs: tf.Tensor, training: bool | None = None,
             mask: tf.Tensor | None = None) -> tf.Tensor:
        """Normalizes ``inputs``; see the class docstring for the modes."""
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        gamma, beta = self._affine_parameters(inputs.shape[-1])
        moving_mean = ops.cast(self.moving_mean, "float32")
        moving_variance = ops.cast(self.moving_variance, "float32")
        if training and self.trainable:
            outputs, mean, variance = _fused_training(inputs, gamma, beta, self.epsilon)
            variance = _population_variance(variance, inputs)
            # Keras 3's update, term for term, so the stored statistics match.
            self.moving_mean.assign(
                moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            outputs = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=moving_mean,
                variance=moving_variance, epsilon=self.epsilon,
                exponential_avg_factor=1.0, data_format="NHWC", is_training=False)[0]
        return ops.cast(outputs, self.compute_dtype)

    def _fusable(self, inputs: tf.Tensor, mask: tf.Tensor | None) -> bool:
        """Whether ``FusedBatchNormV3`` computes exactly what the parent would."""
        return (keras.backend.backend() == "tensorflow"
                and mask is None
                and not self.renorm
                and not self.synchronized
                and len(inputs.shape) == 4
                and self.axis in (-1, 3)
                and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES
                and self.epsilon >= _MIN_FUSED_EPSILON)

    def _affine_parameters(self, channels: int) -> tuple[tf.Tensor, tf.Tensor]:
        """(gamma, beta) as float32 tensors; ones/zeros when disabled.

        The kernel needs both; a constant 1 or 0 reproduces ``scale=False`` or
        ``center=False`` exactly (multiplying by 1.0 and adding 0.0 are exact).
        """
        gamma = (ops.cast(self.gamma, "float32") if self.scale
                 else ops.ones((channels,), dtype="float32"))
        beta = (ops.cast(self.beta, "float32") if self.center
                else ops.zeros((channels,), dtype="float32"))
        return gamma, beta


def _fused_training(inputs: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor,
                    epsilon: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Training-mode FusedBatchNormV3: (outputs, batch mean, unbiased variance).

    The input goes in at its own dtype (no upcast to float32 as in Keras'
    unfused path): the kernel converts to float32 internally for the
    statistics and the normalization, so bf16/fp16 inputs give float32
    moments without materialising a float32 copy of the activations.
    ``exponential_avg_factor=1`` makes it return this batch's moments rather
    than its own running average, which would use the unbiased variance.
    """
    empty = tf.constant([], dtype=tf.float32)
    outputs, mean, variance = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=gamma, offset=beta, mean=empty, variance=empty,
        epsilon=epsilon, exponential_avg_factor=1.0, data_format="NHWC",
        is_training=True)[:3]
    return outputs, mean, variance


def _population_variance(unbiased: tf.Tensor, inputs: tf.Tensor) -> tf.Tensor:
    """The biased (divide-by-n) variance from the kernel's unbiased one.

    In training the fused kernel normalizes with the biased variance but
    returns the Bessel-corrected one (n / (n - 1), n = batch * height *
    width), whatever the device (the contract Keras 2 relies on; checked on
    CPU and under XLA in tests/test_fused_bn.py). Keras 3 stores the biased variance in
    ``moving_variance`` (``tf.nn.moments``), while Keras 2 stored the
    corrected one; undoing the correction keeps Keras 3's semantics, so the
    moving statistics match an unfused Keras 3 model's.
    """
    static = inputs.shape[:-1]
    if static.is_fully_defined():
        # Known shape (the usual case in a compiled train step): one multiply.
        n = float(static.num_elements())
        return unbiased * ((n - 1.0) / max(n, 1.0))
    n = tf.cast(tf.size(inputs, out_type=tf.int64) // tf.cast(tf.shape(inputs)[-1], tf.int64),
                tf.float32)
    # The kernel corrects by n / max(n - 1, 1), so n = 1 (variance 0) stays 0.
    return unbiased * ((n - 1.0) / tf.maximum(n, 1.0))


def _clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A fresh copy of ``layer``, fused where it is a BatchNormalization.

    Nested Functional models are rebuilt through ``_clone_model`` so their
    BatchNormalization layers are replaced too.
    """
    # A Functional model is the one kind whose graph ``clone_model`` can rebuild
    # with new input tensors (Keras 2's Sequential was one too, hence the guard).
    if keras_internals.is_functional(layer) and not isinstance(layer, keras.Sequential):
        return _clone_model(layer)
    if isinstance(layer, keras.Sequential):
        return keras.models.clone_model(layer, clone_function=_clone_layer)
    config = layer.get_config()
    if type(layer) is keras.layers.BatchNormalization:
        return FusedBatchNormalization.from_config(config)
    return layer.__class__.from_config(config)


def _clone_model(model: keras.Model) -> keras.Model:
    """A Functional model rebuilt with ``_clone_layer``, input names kept.

    ``clone_model`` would name new inputs after their symbolic tensors
    (``keras_tensor_N``); inputs named like the source's keep dict-keyed
    feeding (``model.fit({"image": ...})``) working.
    """
    # Each input tensor is the output of one of the model's InputLayers, which
    # holds the name (the tensor's own name is ``keras_tensor_N`` unless given).
    names = {id(layer.output): layer.name for layer in model.layers
             if isinstance(layer, keras.layers.InputLayer)}
    inputs = keras.tree.map_structure(
        lambda tensor: keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=names[id(tensor)]),
        model.input)
    return keras.models.clone_model(model, input_tensors=inputs, clone_function=_clone_layer)


def _copy_state(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    """Copies trainable flags and weights from ``source`` into its clone.

    Parents go first: setting ``trainable`` on a model sets it on all its
    layers, and the children's own flags must win afterwards, as in the
    source. Layers of a (nested) model are matched by name, which is unique
    within a Functional model and kept by the clone (input layers, which
    hold no state, are skipped).
    """
    target.trainable = source.trainable
    sublayers = getattr(source, "layers", None)
    if isinstance(source, keras.Model) and sublayers is not None:
        targets = {layer.name: layer for layer in target.layers}
        for layer in sublayers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            _copy_state(layer, targets[layer.name])
        return
    target.set_weights(source.get_weights())


def fuse_batchnorm(model: keras.Model) -> keras.Model:
    """``model`` with every BatchNormalization replaced by the fused one.

    Args:
        model: a Functional or Sequential Keras 3 model; nested Functional or
            Sequential models (e.g. a ``keras.applications`` backbone) are
            rebuilt too. Subclassed models cannot be cloned by Keras.

    Returns:
        A new model with the same layer names, configs (momentum, epsilon,
        dtype policies), trainable flags and weights; its outputs equal the
        source's up to float rounding. The source model is left unchanged. A
        compiled model's clone is compiled from the same compile config.

    On a CPU the gain grows with the feature maps: a float32 InceptionV3
    train step at 299 px takes ~10% less CPU time (~20% under
    mixed_bfloat16), while at 75 px and batch 2 the fused kernel's fixed
    cost per call makes the step ~2% slower. Under XLA it changes nothing:
    XLA fuses Keras' separate ops by itself.
    """
    if isinstance(model, keras.Sequential):
        clone = keras.models.clone_model(model, clone_function=_clone_layer)
    else:
        clone = _clone_model(model)
    _copy_state(model, clone)
    return clone
