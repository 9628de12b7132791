"""Precise BatchNorm statistics (``--bn-stats precise``): PreciseBN, as in Wu
& Johnson, "Rethinking 'Batch' in BatchNorm" (2021).

Before each validation pass, and so for the model the final scoring uses,
every trainable BatchNorm layer's population mean and variance are estimated
again from forward passes over training images and written into its
``moving_mean`` / ``moving_variance``, replacing the exponential moving
averages kept during training.

Why: a moving average still holds ``momentum ** steps`` of its starting
values (mean 0 / variance 1 from scratch, or ImageNet's) after ``steps``
updates (``numerics.bn_residual``). On short runs over few images (the quick
preset: 5 to 20 steps an epoch) that residue is large and differs by batch
size, so a batch-size study would compare BatchNorm artefacts as well as
training. Precise statistics depend on the weights and the images only, not
on how many steps led there.

How, and the choices made:

* **Images**: the first ``PRECISE_IMAGES`` (or all) images of the training
  split in record order (the records builder shuffles them, so both classes
  and every source are in it), whole batches of the run's batch size, **not
  augmented**. The statistics serve to score un-augmented validation and
  test images, so they describe the activations un-augmented images produce
  (the paper's augmentation shifts, rotates and zooms with a constant fill,
  which moves the pixel statistics); and the same images every time, so a
  resumed run re-estimates exactly what the uninterrupted one did.
* **Forward passes**: BatchNorm in training mode, each layer normalising with
  its own batch's moments as it did in training, so each layer sees the kind
  of inputs it saw in training (PreciseBN's and fvcore's ``update_bn_stats``'
  choice; a pass in inference mode would feed each layer inputs normalised
  with upstream estimates not yet made). Dropout is off, so no random
  numbers are drawn and the run's random streams are left as they were. At
  the run's batch size, because a layer's inputs depend on the batch moments
  of the layers before it.
* **Batch moments, exactly**: each layer runs with momentum 0 in these
  passes, so its moving statistics become that batch's own mean and biased
  variance (the fused kernel's or Keras' own, ``engine.model.fused_bn``),
  read back after each batch.
* **Averaging**: equal weight per batch (every batch is whole, so equal
  weight per image): mean = E[batch mean], variance = E[batch variance] +
  Var[batch mean] (over batches, divided by their count). With equal batches
  that is exactly the variance of the layer's inputs over all the images
  used; the mean of the batch variances alone would leave out the spread
  between batch means. Summed in float64 on the host: E[x^2] - E[x]^2 in
  float32 loses digits when a channel's mean is large against its spread.
* **Stored**: the estimates stay in the moving statistics, so ``best.keras``,
  ``last.keras`` and the checkpoint hold the statistics validation used.
  Training does not read them (in training BatchNorm normalises with batch
  moments), so continuing from them changes no weight, and a resumed run,
  which loads them from the checkpoint, continues exactly as the
  uninterrupted one.

Frozen BatchNorm layers (``--freeze-base``, ``--trainable-from``) keep their
statistics: Keras runs them in inference mode, as the run trained them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from engine.model import all_layers

# Training images the statistics are estimated from (all of them when the
# split is smaller: the quick preset's 160, the paper's 500). A bound on the
# cost, one forward pass per image and validation, on large sets; per channel
# of a 1x1 feature map (InceptionV3's last blocks at 75 px) it is still 1,000
# samples.
PRECISE_IMAGES = 1000


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every trainable BatchNorm layer of ``model``, nested models included,
    in call order of their model's layer list."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.trainable:
                found.append(layer)
        elif isinstance(layer, keras.Model):
            found += batchnorm_layers(layer) if layer.trainable else []
    return found


def estimation_batches(count: int, batch_size: int, images: int = PRECISE_IMAGES) -> int:
    """Whole batches of ``batch_size`` among the first ``images`` of ``count``
    training images (at least one: a split smaller than ``images`` is used whole)."""
    return max(min(count, images) // batch_size, 1)


def moments_fn(net: keras.Model, layers: list | None = None):
    """A traced function: one batch of uint8 images through ``net`` with its
    BatchNorm ``layers`` (default ``batchnorm_layers(net)``) in training mode
    at momentum 0 and dropout off; returns each layer's batch mean and biased
    variance. Tracing InceptionV3 costs seconds: the ``Trainer`` keeps this
    function for the network its trials share, so each validation does not
    trace it again."""
    layers = batchnorm_layers(net) if layers is None else layers
    dropouts = [layer for layer in all_layers(net) if isinstance(layer, keras.layers.Dropout)]

    # One trace for every batch size (unknown batch dimension), as the training step.
    shape = [None, *keras.tree.flatten(net.input)[0].shape[1:]]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8)])
    def moments(images):
        # Momentum 0 and rate 0 hold only while this function is traced: the
        # values are constants of this graph, and the training step, traced
        # with the layers' own values, keeps them.
        momenta = [layer.momentum for layer in layers]
        rates = [layer.rate for layer in dropouts]
        for layer in layers:
            layer.momentum = 0.0
        for layer in dropouts:
            layer.rate = 0.0
        try:
            net(tf.cast(images, tf.float32), training=True)
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum
            for layer, rate in zip(dropouts, rates):
                layer.rate = rate
        # Read after the updates: tf.function orders a variable's reads after
        # its writes in program order.
        return ([tf.identity(layer.moving_mean) for layer in layers],
                [tf.identity(layer.moving_variance) for layer in layers])

    return moments


def reestimate(net: keras.Model, batches: Iterable, moments=None) -> dict:
    """Sets every trainable BatchNorm layer's moving statistics to the
    population statistics of its inputs over ``batches`` (see the module
    docstring).

    Args:
        net: the network (its first input takes the images).
        batches: whole batches of uint8 images, or (images, labels) pairs, all
            of one size.
        moments: ``moments_fn(net)`` traced before (the ``Trainer`` keeps
            one); default: traced here.

    Returns:
        ``{"layers": n, "batches": k, "images": i, "seconds": s}``.
    """
    start = time.perf_counter()
    layers = batchnorm_layers(net)
    if not layers:
        return {"layers": 0, "batches": 0, "images": 0, "seconds": 0.0}
    # Momentum 0 multiplies the old statistics by 0, which keeps a NaN: start from zeros.
    for layer in layers:
        layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
        layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
    moments = moments_fn(net, layers) if moments is None else moments
    mean_sum = [np.zeros(layer.moving_mean.shape, np.float64) for layer in layers]
    square_sum = [np.zeros(layer.moving_mean.shape, np.float64) for layer in layers]
    count = images = 0
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        means, variances = moments(tf.cast(x, tf.uint8))
        # A host sync per batch (a few KB of moments): the sums are float64.
        for i, (mean, variance) in enumerate(zip(means, variances)):
            mean = mean.numpy().astype(np.float64)
            mean_sum[i] += mean
            square_sum[i] += variance.numpy().astype(np.float64) + mean * mean
        count += 1
        images += int(x.shape[0])
    if count == 0:
        raise ValueError("no batch to estimate BatchNorm statistics from")
    for layer, total, squares in zip(layers, mean_sum, square_sum):
        mean = total / count
        # E[var_b + mean_b^2] - E[mean_b]^2 = E[var_b] + Var[mean_b]; never below 0.
        variance = np.maximum(squares / count - mean * mean, 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
    return {"layers": len(layers), "batches": count, "images": images,
            "seconds": time.perf_counter() - start}
