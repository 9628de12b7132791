"""The classifier: a ``keras.applications`` backbone and the paper's head.

Input: float32 images in 0-255 with 1 or 3 channels (uint8 batches are cast
on the device by the augmentation). A grayscale image becomes 3 channels only
here, at the stem, so decoding and augmentation handle a third of the data.
Output: one sigmoid in float32 = P(label 1) = P(normal) under the engine's
alphabetical label convention (covid = 0, normal = 1), as in the paper.
"""

from __future__ import annotations

from pathlib import Path

import keras

from engine.config import MODEL_MIN_SIDE, ModelConfig
from engine.model.fused_bn import fuse_batchnorm
from engine.errors import UserError

# name -> preprocess_input mode of keras.applications; mode "none": the
# backbone rescales inside (include_preprocessing=True). The names and their
# smallest input side are engine.config.MODEL_MIN_SIDE, which the configs
# check before any work.
BACKBONES = {
    "InceptionV3": "tf",
    "ResNet50": "caffe",
    "EfficientNetV2B0": "none",
    "MobileNetV3Small": "none",
    "MobileNetV2": "tf",
    "DenseNet121": "torch",
    # A few conv + BatchNorm blocks: for tests and quick checks on a CPU.
    "TinyCNN": "tf",
}
assert set(BACKBONES) == set(MODEL_MIN_SIDE), "engine.config.MODEL_MIN_SIDE lists other backbones"


@keras.saving.register_keras_serializable(package="engine")
class Preprocess(keras.layers.Layer):
    """The backbone's ``preprocess_input`` as a layer (InceptionV3: x / 127.5 - 1).

    A registered layer rather than a Lambda so saved models load in Keras'
    safe mode, and so the preprocessing travels with the model to ``predict``.
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, x):
        return keras.applications.imagenet_utils.preprocess_input(x, mode=self.mode)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def backbone(config: ModelConfig) -> keras.Model:
    """The backbone without its top, weights loaded as asked."""
    # The config's own rules again, for the size it holds now (taken from the
    # records after the command line's config was checked); no work is lost.
    config.validate()
    mode = BACKBONES[config.name]
    weights = config.weights
    path = None
    if weights not in ("imagenet", "none"):
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"--weights {weights}: no such file (use imagenet, none or a weights file)")
    kwargs = {"include_top": False, "input_shape": (config.image_size, config.image_size, 3)}
    if mode == "none":
        # These embed their own rescaling; the engine feeds them 0-255 like the rest.
        kwargs["include_preprocessing"] = True
    if config.name == "TinyCNN":
        if weights == "imagenet":
            raise UserError("TinyCNN has no ImageNet weights: use --weights none or a weights file")
        model = tiny_cnn(config)
    else:
        model = application(config, kwargs)
    if path is not None:
        try:
            model.load_weights(str(path))
        except Exception as err:  # noqa: BLE001 - h5py and Keras raise many types
            raise UserError(f"--weights {path} does not fit {config.name} without top: "
                            f"{str(err).splitlines()[0]}") from None
    return model


def application(config: ModelConfig, kwargs: dict) -> keras.Model:
    """A ``keras.applications`` backbone; ImageNet weights via Keras' download cache."""
    weights = config.weights
    try:
        return getattr(keras.applications, config.name)(
            weights="imagenet" if weights == "imagenet" else None, **kwargs)
    except Exception as err:  # noqa: BLE001 - Keras raises plain Exception on download failure
        if weights == "imagenet" and ("fetch" in str(err).lower() or "url" in str(err).lower()):
            raise UserError(f"ImageNet weights for {config.name} cannot be downloaded (offline?): "
                            f"pass --weights PATH to a Keras '*_notop.h5' file, or --weights none "
                            f"to train from scratch") from None
        raise


def tiny_cnn(config: ModelConfig) -> keras.Model:
    """Four conv-BN-relu-pool blocks: the mechanics of a backbone (BatchNorm
    included) at a fraction of the cost; ``--weights PATH`` loads as usual."""
    inputs = keras.Input((config.image_size, config.image_size, 3))
    x = inputs
    for i, filters in enumerate((16, 32, 48, 64)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    return keras.Model(inputs, x, name="tiny_cnn")


def set_trainable(base: keras.Model, config: ModelConfig) -> None:
    """Freezes the backbone, or its layers before ``trainable_from``."""
    if config.freeze_base:
        base.trainable = False
        return
    if config.trainable_from:
        names = [layer.name for layer in base.layers]
        if config.trainable_from not in names:
            raise UserError(f"--trainable-from {config.trainable_from!r} is not a layer of "
                            f"{config.name} (e.g. {names[len(names) // 2]})")
        start = names.index(config.trainable_from)
        for layer in base.layers[:start]:
            layer.trainable = False


def build(config: ModelConfig, synchronized_bn: bool = False) -> keras.Model:
    """Backbone + head: GAP -> dense relu -> dropout -> dense(1, sigmoid) in float32.

    Args:
        config: the network.
        synchronized_bn: compute BatchNorm statistics over the global batch
            across replicas (tf.distribute), so that several devices train
            like one: the paper's batches of 5 split over GPUs would otherwise
            normalise with 2-3 images each.
    """
    base = backbone(config)
    set_trainable(base, config)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if config.bn_momentum is not None:
                layer.momentum = config.bn_momentum
            layer.synchronized = synchronized_bn
    inputs = keras.Input((config.image_size, config.image_size, config.channels), name="image")
    x = inputs
    if config.channels == 1:
        # Grayscale becomes RGB only here, after the cheap 1-channel stages.
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    mode = BACKBONES[config.name]
    if mode != "none":
        x = Preprocess(mode, name="preprocess")(x)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(config.hidden, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    # The output stays float32 under mixed precision: a bf16/fp16 sigmoid loses
    # the resolution the loss and the clinical metrics need near 0 and 1.
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="p_label1")(x)
    net = keras.Model(inputs, outputs, name=f"{config.name}_binary")
    if config.fused_bn and not synchronized_bn:
        # Keras 3 computes BatchNorm from ~25 separate ops per layer in a
        # training step; the fused kernel is one op each way (see
        # engine.model.fused_bn). Synchronised statistics need Keras' own path.
        # Swapped in after every layer is initialised, so the seeded initial
        # weights do not depend on this choice.
        net = fuse_batchnorm(net)
    return net


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of ``model``, those of a nested model (the backbone) right
    after it, depth first: ``model.layers`` lists the nested model, not its layers."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found += all_layers(layer)
    return found
