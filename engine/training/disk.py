"""What a training run keeps on disk, estimated without building its network.

A dry run sizes a sweep before anything is built or imported (TensorFlow
takes 10-15 s to start on a CPU), so the weight counts come from the
backbones' sizes below, not from a built network; ``tests/test_disk.py``
checks them against built networks. Imports no framework.
"""

from __future__ import annotations

from types import MappingProxyType

# Each backbone without its head (``keras.applications``' include_top=False,
# or the engine's TinyCNN), as ``engine.model.build`` makes it: all its
# weights, the non-trainable ones among them (BatchNorm's moving statistics),
# and the width of the features the head reads. The input's channels do not
# change them (grayscale is repeated to three channels before the backbone).
BACKBONES = MappingProxyType({
    "InceptionV3": (21_802_784, 34_432, 2048),
    "ResNet50": (23_587_712, 53_120, 2048),
    "EfficientNetV2B0": (5_919_312, 60_608, 1280),
    "MobileNetV3Small": (939_120, 12_112, 576),
    "MobileNetV2": (2_257_984, 34_112, 1280),
    "DenseNet121": (7_037_504, 83_648, 1024),
    "TinyCNN": (47_152, 320, 64),
})
# Optimizer state per trainable weight (slots: Adam's two moments, one for
# RMSprop's average and for SGD's momentum).
SLOTS = MappingProxyType({"adam": 2, "nadam": 2, "adamw": 2, "rmsprop": 1, "sgd": 1, "nesterov": 1})
# TensorBoard logs and the small files of a run (history, metrics, scores):
# ~30 KB measured per trial of the quick preset; rounded up for longer runs.
LOGS_MB = 0.5
FLOAT32 = 4 / 2 ** 20  # MB per weight: weights are stored as float32 whatever the training precision


def weight_counts(model) -> tuple[int, int]:
    """All weights and the trainable ones of the network ``model`` (a
    ``ModelConfig``) builds: its backbone and the paper's head (a hidden relu
    layer of ``model.hidden`` units and the sigmoid output). With
    ``trainable_from`` the trainable count is the whole backbone's: an upper
    bound (which layers it leaves frozen is known only once built)."""
    weights, frozen, features = BACKBONES[model.name]
    head = features * model.hidden + model.hidden + model.hidden + 1
    trainable = head if model.freeze_base else weights - frozen + head
    return weights + head, trainable


def run_disk_mb(cfg) -> dict[str, float]:
    """Disk a run of ``cfg`` takes: ``kept`` once finished (``last.keras``,
    ``best.keras`` with ``--select best``, logs; with ``--keep-checkpoints``
    the checkpoint too) and ``checkpoint``, what its resume checkpoint adds
    while it runs (up to two at once during a write)."""
    weights, trainable = (count * FLOAT32 for count in weight_counts(cfg.model))
    # Weights, optimizer state and the best epoch's weights kept beside them.
    checkpoint = 2 * weights + SLOTS.get(cfg.optimizer, 2) * trainable
    kept = weights * (2 if cfg.select == "best" else 1) + LOGS_MB
    if cfg.keep_checkpoints:
        kept += checkpoint
    return {"kept": kept, "checkpoint": 2 * checkpoint}
