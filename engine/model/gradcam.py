"""Grad-CAM heatmaps from the backbone's last convolutional block."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image


def backbone_layer(net: keras.Model) -> keras.layers.Layer:
    """The nested backbone model: its output is the last convolutional block."""
    for layer in net.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError("the model has no nested backbone")


def heatmap(net: keras.Model, image: np.ndarray, label: int) -> np.ndarray:
    """Grad-CAM of one image (H, W, C) for class ``label``, in [0, 1], at feature-map size.

    The class score is P(label 1) for label 1 and 1 - P(label 1) for label 0,
    so the map shows what pushes the model toward the class it names. The
    engine's networks are a chain (stem, backbone, head), run layer by layer
    here so the backbone's output can be watched.
    """
    base = backbone_layer(net)
    x = tf.convert_to_tensor(image[None].astype(np.float32))
    features = None
    with tf.GradientTape() as tape:
        for layer in net.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, keras.layers.Concatenate):
                x = layer([x, x, x])
            else:
                x = layer(x, training=False)
            if layer is base:
                features = tf.cast(x, tf.float32)
                tape.watch(features)
                x = features
        score = x[:, 0] if label == 1 else 1.0 - x[:, 0]
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[0].numpy()
    top = cam.max()
    return cam / top if top > 0 else cam


def overlay(source: Path, cam: np.ndarray, out: Path, alpha: float = 0.45) -> None:
    """Writes the heatmap over the original image, at the original's size."""
    from matplotlib import colormaps

    original = Image.open(source)
    original = original.convert("RGB")
    cam_image = Image.fromarray(np.uint8(255 * cam)).resize(original.size, Image.Resampling.BILINEAR)
    colours = colormaps["jet"](np.asarray(cam_image) / 255.0)[..., :3]
    blended = (1 - alpha) * np.asarray(original, np.float32) / 255.0 + alpha * colours
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.uint8(np.clip(blended, 0, 1) * 255)).save(out)
