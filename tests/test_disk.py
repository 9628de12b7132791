"""The dry run's disk estimate counts the weights a built network has,
without building it: ``engine.training.disk``'s backbone sizes against the
networks ``engine.model.build`` makes."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import ModelConfig
from engine.model import build
from engine.training import disk


def built_counts(model: ModelConfig) -> tuple[int, int]:
    net = build(model)
    return (sum(int(np.prod(v.shape)) for v in net.weights),
            sum(int(np.prod(v.shape)) for v in net.trainable_weights))


@pytest.mark.parametrize("channels, hidden, freeze_base", [(1, 256, False), (3, 16, False), (1, 64, True)])
def test_tiny_cnn_counts_equal_the_built_network(channels, hidden, freeze_base):
    model = ModelConfig(name="TinyCNN", weights="none", image_size=32, channels=channels, hidden=hidden,
                        freeze_base=freeze_base)
    assert disk.weight_counts(model) == built_counts(model)


def test_inception_v3_counts_equal_the_built_network():
    model = ModelConfig(name="InceptionV3", weights="none", image_size=75, channels=1)
    assert disk.weight_counts(model) == built_counts(model)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(disk.BACKBONES) - {"TinyCNN", "InceptionV3"}))
def test_every_backbones_counts_equal_the_built_network(name):
    model = ModelConfig(name=name, weights="none", image_size=75, channels=3, hidden=128)
    assert disk.weight_counts(model) == built_counts(model)


def test_disk_of_a_run():
    """Adam keeps two slots per trainable weight; --select best keeps a second copy of the weights."""
    from engine.config import TrainConfig

    cfg = TrainConfig(model=ModelConfig(name="TinyCNN", weights="none", image_size=32), optimizer="adam", select="last")
    weights, trainable = (n * 4 / 2 ** 20 for n in disk.weight_counts(cfg.model))
    assert disk.run_disk_mb(cfg) == pytest.approx({"kept": weights + disk.LOGS_MB,
                                                    "checkpoint": 2 * (2 * weights + 2 * trainable)})
    best = disk.run_disk_mb(TrainConfig(model=cfg.model, optimizer="sgd", select="best"))
    assert best == pytest.approx({"kept": 2 * weights + disk.LOGS_MB, "checkpoint": 2 * (2 * weights + trainable)})
