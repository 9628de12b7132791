"""The model layer: the network and what looks inside it.

``networks`` builds a ``keras.applications`` backbone with the paper's head,
``fused_bn`` swaps Keras 3's BatchNormalization for TensorFlow's fused kernel,
``gradcam`` explains one prediction, ``keras_internals`` holds every private
Keras and TensorFlow API the engine uses (the training layer's included).
Imports the data layer and the base modules.
"""

from engine.model.networks import BACKBONES, all_layers, backbone, build

__all__ = ["BACKBONES", "all_layers", "backbone", "build"]
