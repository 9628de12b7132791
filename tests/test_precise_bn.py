"""Precise BatchNorm statistics (``--bn-stats precise``) and the moving
averages' residual share: golden statistics on a tiny model, a TinyCNN run
that writes ``bn_seconds`` and resumes exactly."""

import json

import keras
import numpy as np
import pytest

import factories
from factories import KillAtEpoch, Killed
from engine.config import ModelConfig, TrainConfig
from engine.data import synthetic
from engine.errors import UserError
from engine.model.fused_bn import fuse_batchnorm
from engine.training import numerics, precise_bn
from engine import training as train

EPS = 1e-3  # Keras' BatchNormalization epsilon


def tiny_model(fused: bool) -> keras.Model:
    """BN on the raw input, a 1x1 conv, BN again, a frozen BN, then a head with dropout."""
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.BatchNormalization(name="bn_a")(inputs)
    x = keras.layers.Conv2D(3, 1, use_bias=False, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn_b")(x)
    x = keras.layers.BatchNormalization(name="bn_frozen")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    net = keras.Model(inputs, keras.layers.Dense(1, name="out")(x))
    rng = np.random.default_rng(0)
    net.get_layer("bn_a").set_weights([rng.uniform(0.5, 2, 2), rng.uniform(-1, 1, 2), np.zeros(2), np.ones(2)])
    net.get_layer("conv").set_weights([rng.normal(size=(1, 1, 2, 3))])
    net.get_layer("bn_frozen").set_weights([np.ones(3), np.zeros(3), np.full(3, 0.25), np.full(3, 4.0)])
    net.get_layer("bn_frozen").trainable = False
    return fuse_batchnorm(net) if fused else net


def population(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
    return flat.mean(0), flat.var(0)


@pytest.mark.parametrize("fused", [True, False])
def test_statistics_are_the_population_moments_of_each_layers_inputs(fused):
    net = tiny_model(fused)
    assert type(net.get_layer("bn_a")).__name__ == ("FusedBatchNormalization" if fused else "BatchNormalization")
    rng = np.random.default_rng(1)
    # Four whole batches of 5 uint8 images, channel means far from 0 and batch
    # means apart (a drift between batches), so that the mean of the batch
    # variances alone is clearly not the population variance.
    batches = [np.clip(rng.normal([180 + 10 * b, 30 - 5 * b], [20, 6], size=(5, 6, 6, 2)), 0, 255).astype(np.uint8)
               for b in range(4)]
    seed_state = [np.array(v) for v in net.get_layer("dropout").variables]
    info = precise_bn.reestimate(net, [(x, np.zeros(5)) for x in batches])
    assert info["layers"] == 2 and info["batches"] == 4 and info["images"] == 20

    # bn_a sees the raw images: the numpy population mean and variance over all 20.
    everything = np.concatenate(batches).astype(np.float64)
    mean_a, var_a = population(everything)
    np.testing.assert_allclose(net.get_layer("bn_a").moving_mean.numpy(), mean_a, rtol=1e-5)
    np.testing.assert_allclose(net.get_layer("bn_a").moving_variance.numpy(), var_a, rtol=1e-4)
    within = np.mean([population(x)[1] for x in batches], axis=0)  # E[batch variance] alone
    assert np.all(var_a > 1.05 * within)

    # bn_b sees the conv of bn_a's output, bn_a normalising each batch with its
    # own moments (training mode), by hand.
    gamma, beta = (w.astype(np.float64) for w in net.get_layer("bn_a").get_weights()[:2])
    kernel = net.get_layer("conv").get_weights()[0][0, 0].astype(np.float64)
    inputs_b = []
    for x in batches:
        m, v = population(x)
        inputs_b.append((((x - m) / np.sqrt(v + EPS)) * gamma + beta) @ kernel)
    mean_b, var_b = population(np.concatenate(inputs_b))
    np.testing.assert_allclose(net.get_layer("bn_b").moving_mean.numpy(), mean_b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(net.get_layer("bn_b").moving_variance.numpy(), var_b, rtol=1e-4)

    # A frozen layer keeps its statistics; dropout drew no random numbers.
    np.testing.assert_array_equal(net.get_layer("bn_frozen").moving_variance.numpy(), np.full(3, 4.0))
    for before, after in zip(seed_state, net.get_layer("dropout").variables):
        np.testing.assert_array_equal(before, np.array(after))
    # The training-mode pass runs with the layers' own momentum again.
    assert net.get_layer("bn_a").momentum == 0.99 and net.get_layer("dropout").rate == 0.5


def test_residual_share_and_estimation_batches():
    assert numerics.bn_residual(0.9, 20) == pytest.approx(0.1216, abs=1e-4)
    assert numerics.bn_residual(0.9, 5) == pytest.approx(0.5905, abs=1e-4)
    assert numerics.bn_residual(0.99, 100) == pytest.approx(0.3660, abs=1e-4)
    assert numerics.bn_residual(0.9, 0) == 1.0
    # The 0.9 floor keeps more than 1 % below 44 steps an epoch.
    assert numerics.bn_residual(numerics.auto_bn_momentum(43), 43) > 0.01
    assert numerics.auto_bn_momentum(44) > 0.9
    assert numerics.bn_residual(numerics.auto_bn_momentum(44), 44) == pytest.approx(0.01)
    assert precise_bn.estimation_batches(160, 32) == 5 and precise_bn.estimation_batches(5000, 32) == 31
    assert precise_bn.estimation_batches(20, 32) == 1
    with pytest.raises(UserError, match="--bn-stats"):
        TrainConfig(bn_stats="exact").validate()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return factories.synthetic_records(tmp_path_factory.mktemp("precise"), {"train": 64, "val": 24, "test": 24}, 64, 32,
                                       resize="area", patient_pattern=synthetic.FILENAME_PATTERN)




def rows(run):
    return train.run.read_history(run / "history.csv")


def test_precise_run_writes_its_cost_resumes_exactly_and_leaves_training_alone(records, tmp_path):
    def cfg(out, bn_stats):
        return TrainConfig(records=records, out=out, model=ModelConfig(name="TinyCNN", weights="none", image_size=32),
                           lr=3e-3, batch_size=16, epochs=3, precision="float32", xla="off", bootstrap=50,
                           deterministic=True, bn_momentum="keras", bn_stats=bn_stats)

    trainer = train.Trainer()  # the four runs share one compiled classifier and its traced passes
    whole = train.train(cfg(tmp_path / "whole", "precise"), trainer=trainer, quiet=True)
    moving = train.train(cfg(tmp_path / "moving", "moving"), trainer=trainer, quiet=True)
    with pytest.raises(Killed):
        train.train(cfg(tmp_path / "resumed", "precise"), trainer=trainer, quiet=True, callbacks=[KillAtEpoch(2)])
    resumed = train.train(cfg(tmp_path / "resumed", "precise"), trainer=trainer, quiet=True)
    assert trainer.compiles == 1

    history = rows(tmp_path / "whole")
    assert whole["status"] == "done" and all(row["bn_seconds"] > 0 for row in history)
    assert "bn_seconds" not in rows(tmp_path / "moving")[0]
    assert whole["bn_stats"]["value"] == "precise" and whole["bn_stats"]["images"] == 64
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert saved["bn_stats"] == "precise"
    # Training never reads the statistics: the same training losses as with
    # the moving averages; validation reads them: different val losses (at
    # momentum 0.99 the moving averages still hold most of their start).
    np.testing.assert_allclose([r["loss"] for r in history], [r["loss"] for r in rows(tmp_path / "moving")],
                               rtol=1e-6)
    assert abs(history[-1]["val_loss"] - rows(tmp_path / "moving")[-1]["val_loss"]) > 1e-3
    # A run killed after 2 epochs resumes from the checkpoint (which holds the
    # precise statistics) exactly as the uninterrupted run went on.
    again = rows(tmp_path / "resumed")
    assert len(again) == 3
    for key in ("loss", "val_loss", "val_auc"):
        np.testing.assert_allclose([r[key] for r in again], [r[key] for r in history], rtol=1e-5, err_msg=key)
    assert resumed["test"]["metrics"] == whole["test"]["metrics"]
