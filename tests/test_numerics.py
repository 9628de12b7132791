"""Automatic precision and XLA: rules, the measured probe, its numerics check and
its cache (``pace.json``, shared with the measured training rates); the
BatchNorm momentum as a number."""

import json
import math
import sys
from dataclasses import replace

import pytest

from engine import machine
from engine.io import cache_dir
from engine.training import numerics, pace

HEALTHY = [0.70, 0.66, 0.61, 0.65, 0.58, 0.55, 0.60, 0.52]


def at(model):
    """A probe's shape of its own (the cache folder is shared by the session's tests)."""
    return pace.Shape(model, 299, 1, 5, "auto", "auto")


def test_explicit_settings_are_kept():
    precision, xla = numerics.resolve("mixed_bfloat16", "on")
    assert (precision.value, xla.value) == ("mixed_bfloat16", "on")
    assert precision.reason == xla.reason == "set"


@pytest.fixture
def cpu(monkeypatch):
    """A CPU of the given flags, no GPU, no AMX override."""
    monkeypatch.setattr(machine, "gpu_capabilities", lambda: [])
    monkeypatch.delenv("ENGINE_ALLOW_AMX_BF16", raising=False)

    def flags(*names):
        monkeypatch.setattr(machine, "cpu_flags", lambda: set(names))
    return flags


def prober(rates, losses=None):
    """A ``measure`` of fixed rates and losses (default: float32's healthy curve) that records its calls."""
    calls = []

    def measure(precision, xla):
        calls.append((precision, xla))
        return rates[(precision, xla)], list((losses or {}).get((precision, xla), HEALTHY))
    return measure, calls


RATES = {("float32", "off"): 4.6, ("float32", "on"): 2.4, ("mixed_bfloat16", "off"): 6.2,
         ("mixed_bfloat16", "on"): 3.0}


def test_cpu_probe_picks_the_fastest_that_passes_and_is_cached(cpu):
    cpu("avx512f", "avx512_bf16")
    measure, calls = prober(RATES, {("mixed_bfloat16", "off"): [v + 0.01 for v in HEALTHY]})
    precision, xla = numerics.resolve("auto", "auto", measure, at("k-fast"))
    assert (precision.value, xla.value) == ("mixed_bfloat16", "off")
    assert "mixed_bfloat16/off 6.20 img/s" in precision.reason
    assert sorted(calls) == sorted(RATES)  # float32/off's losses serve as the reference
    again, _ = numerics.resolve("auto", "auto", measure, at("k-fast"))
    assert again.value == "mixed_bfloat16" and len(calls) == 4  # from the cache, no new probe
    # One cache: each setting's step rate sits in its pace.json entry, where a
    # time estimate finds it; a user's own settings reuse what auto measured.
    assert pace.estimate(replace(at("k-fast"), precision="float32", xla="on")).train_img_s == 2.4
    assert not (cache_dir() / "probe.json").exists()
    assert numerics.resolve("float32", "auto", measure, at("k-fast"))[1].value == "off" and len(calls) == 4


def test_a_faster_precision_whose_training_goes_non_finite_is_rejected(cpu, monkeypatch):
    cpu("avx512f", "avx512_bf16", "amx_bf16")
    monkeypatch.setenv("ENGINE_ALLOW_AMX_BF16", "1")  # let auto consider bf16 on AMX: the check must catch it
    broken = HEALTHY[:2] + [math.nan] * 6
    measure, _ = prober(RATES, {("mixed_bfloat16", "off"): broken, ("mixed_bfloat16", "on"): broken})
    precision, xla = numerics.resolve("auto", "auto", measure, at("k-broken"))
    assert precision.value == "float32" and xla.value == "off"
    assert "mixed_bfloat16/off rejected: loss not finite at probe step 3 of 8" in precision.reason
    # The verdict is cached with the rates: no later run picks the broken precision either.
    cached = pace.probe_result(replace(at("k-broken"), precision="mixed_bfloat16", xla="off"))
    assert cached["check"]["ok"] is False and cached["step_img_s"] == 6.2
    assert numerics.resolve("auto", "auto", None, at("k-broken"))[0].value == "float32"


def test_a_precision_far_from_float32_is_rejected(cpu):
    cpu("avx512_bf16")
    off = [v + 0.5 for v in HEALTHY]
    measure, _ = prober(RATES, {("mixed_bfloat16", "off"): off, ("mixed_bfloat16", "on"): off})
    precision, _ = numerics.resolve("auto", "auto", measure, at("k-far"))
    assert precision.value == "float32" and "first-step loss 1.200 against float32's 0.700" in precision.reason


def test_numerics_check_bounds():
    ok = numerics.numerics_check(HEALTHY, [v + 0.04 for v in HEALTHY])
    assert ok["ok"], ok
    # first step: 0.05 + 0.1 * 0.70 = 0.12 allowed
    assert numerics.numerics_check(HEALTHY, [0.70 + 0.11] + HEALTHY[1:])["ok"]
    assert not numerics.numerics_check(HEALTHY, [0.70 + 0.13] + HEALTHY[1:])["ok"]
    # mean: float32's is 0.60875, allowed 0.15 + 0.25 * 0.60875 = 0.3022; the first step kept equal
    drift = [HEALTHY[0]] + [v + 0.34 for v in HEALTHY[1:]]  # mean +0.2975
    assert numerics.numerics_check(HEALTHY, drift)["ok"]
    drift = [HEALTHY[0]] + [v + 0.35 for v in HEALTHY[1:]]  # mean +0.30625
    assert "mean loss" in numerics.numerics_check(HEALTHY, drift)["why"]
    assert not numerics.numerics_check([math.inf] + HEALTHY[1:], HEALTHY)["ok"]  # no reference, no pass
    assert not numerics.numerics_check(HEALTHY, HEALTHY[:3])["ok"]


def test_amx_keeps_float32_without_probing_bf16(cpu):
    cpu("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    assert numerics.auto_candidates("precision") == ["float32"]
    measure, calls = prober(RATES)
    precision, xla = numerics.resolve("auto", "auto", measure, at("k-amx"))
    assert precision.value == "float32" and "Intel AMX" in precision.reason
    assert {p for p, _ in calls} == {"float32"}
    # Without measuring (what a time estimate assumes) the same, and says why.
    assert "Intel AMX" in numerics.resolve("auto", "off")[0].reason


def test_a_probe_result_from_before_the_check_is_not_reused(cpu):
    cpu("avx512_bf16")
    for name, rate in (("mixed_bfloat16/off", 99.0), ("float32/off", 1.0)):
        precision, xla = name.split("/")
        pace.record_probe(replace(at("k-old"), precision=precision, xla=xla), step_img_s=rate, source="test")
    path = cache_dir() / pace.PACE_FILE
    data = json.loads(path.read_text())
    for entry in data.values():  # what a probe of version 1 (speed alone) stored
        if entry["shape"]["model"] == "k-old":
            entry["probe"] = {"version": 1, "step_img_s": entry["probe"]["step_img_s"], "when": "2026-12-01",
                              "source": "probe"}
    path.write_text(json.dumps(data))
    measure, calls = prober(RATES)
    precision, _ = numerics.resolve("auto", "auto", measure, at("k-old"))
    assert len(calls) == 4 and "99.00" not in precision.reason


def test_cpu_without_bf16_only_probes_xla(cpu):
    cpu("avx2")
    measure, calls = prober({("float32", "off"): 1.0, ("float32", "on"): 2.0})
    precision, xla = numerics.resolve("auto", "auto", measure, at("k"))
    assert precision.value == "float32" and xla.value == "on"
    assert {p for p, _ in calls} == {"float32"}


def test_auto_xla_with_explicit_precision(cpu):
    cpu("avx512_bf16")
    measure, _ = prober({("float32", "on"): 1.0, ("float32", "off"): 3.0})
    precision, xla = numerics.resolve("float32", "auto", measure, at("k2"))
    assert precision.value == "float32" and precision.reason == "set"
    assert xla.value == "off" and "probe" in xla.reason


def test_the_probe_trains_real_batches_in_both_precisions(tmp_path):
    """The real probe: TinyCNN on real records, float32 and (emulated here) bf16 from
    the same weights; the check passes, and a float32 rerun repeats its losses exactly."""
    import factories
    from dataclasses import replace

    from engine.config import TrainConfig
    from engine.data.manifest import load_manifest

    records = factories.synthetic_records(tmp_path, {"train": 20, "val": 4, "test": 4}, 32)
    manifest = load_manifest(records)
    cfg = TrainConfig(records=records, lr=1e-3, batch_size=4)
    cfg = replace(cfg, model=replace(cfg.model, name="TinyCNN", weights="none", image_size=32,
                                     channels=manifest["channels"]))
    measure = numerics.probe_rates(cfg, manifest["channels"])
    rate, reference = measure("float32", "off")
    _, bf16 = measure("mixed_bfloat16", "off")
    assert rate > 0 and len(reference) == numerics.PROBE_STEPS
    assert measure("float32", "off")[1] == reference
    assert bf16 != reference  # another arithmetic, really run
    assert numerics.numerics_check(reference, bf16)["ok"]


def test_bn_momentum_is_always_a_number():
    assert numerics.bn_momentum("keras", 100, "none", "InceptionV3") == (0.99, "set: InceptionV3's own 0.99 (Keras)")
    assert numerics.bn_momentum("auto", 100, "imagenet", "MobileNetV2")[0] == 0.999
    assert numerics.bn_momentum("0.97", 100, "imagenet", "InceptionV3") == (0.97, "set")
    chosen = numerics.Numerics(numerics.Choice("float32", "set"), numerics.Choice("off", "set"), 0.9, "set")
    assert numerics.Numerics.from_json(chosen.to_json()) == chosen
    # An older sweep.json wrote a backbone's own momentum as 0.99 whatever the backbone.
    old = {"precision": "float32", "reason": "set", "xla": "off", "bn_momentum": 0.99,
           "bn_momentum_reason": "auto: Keras' 0.99, the imagenet weights carry their own statistics"}
    assert numerics.Numerics.from_json(old).bn_momentum == 0.99
    assert numerics.Numerics.from_json(old, model="EfficientNetV2B0").bn_momentum == 0.9
    assert numerics.Numerics.from_json(dict(old, bn_momentum_reason="set"), model="EfficientNetV2B0").bn_momentum \
        == 0.99


def test_every_backbone_has_its_own_bn_momentum():
    from engine.config import MODEL_MIN_SIDE

    assert set(numerics.BACKBONE_BN_MOMENTUM) == set(MODEL_MIN_SIDE)


@pytest.mark.slow
def test_backbone_bn_momentum_table_is_keras_own():
    """The backbones whose own momentum is not Keras' 0.99 default, built as Keras
    builds them (5 s on 2 cores: worth it when Keras is upgraded)."""
    import keras

    for name, momentum in numerics.BACKBONE_BN_MOMENTUM.items():
        if momentum != numerics.KERAS_BN_MOMENTUM:
            net = getattr(keras.applications, name)(include_top=False, weights=None, input_shape=(32, 32, 3))
            assert {layer.momentum for layer in net.layers
                    if isinstance(layer, keras.layers.BatchNormalization)} == {momentum}, name


def test_gpu_rules_take_the_first_gpus_capability(monkeypatch):
    monkeypatch.setattr(machine, "gpu_capabilities", lambda: [(8, 6), (7, 0)])
    precision, xla = numerics.resolve("auto", "auto")
    assert (precision.value, xla.value) == ("mixed_bfloat16", "on")
    monkeypatch.setattr(machine, "gpu_capabilities", lambda: [(7, 5)])
    assert numerics.resolve("auto", "off")[0].value == "mixed_float16"
    monkeypatch.setattr(machine, "gpu_capabilities", lambda: [(6, 1)])
    assert numerics.resolve("auto", "off")[0].value == "float32"


def test_gpu_capabilities_without_starting_tensorflow(monkeypatch, tmp_path):
    """A dry run finds the GPUs from nvidia-smi, as CUDA_VISIBLE_DEVICES leaves them."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, 8.6'\necho '1, 7.5'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert machine.gpu_capabilities() == [(8, 6), (7, 5)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert machine.gpu_capabilities() == [(7, 5)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert machine.gpu_capabilities() == []
    fake.unlink()
    assert machine.gpu_capabilities() == []
