"""Automatic precision and XLA: rules, the measured probe and its cache."""


from engine import machine
from engine.training import numerics


def test_explicit_settings_are_kept():
    precision, xla = numerics.resolve("mixed_bfloat16", "on")
    assert (precision.value, xla.value) == ("mixed_bfloat16", "on")
    assert precision.reason == xla.reason == "set"


def test_cpu_probe_picks_the_fastest_and_is_cached(monkeypatch):
    monkeypatch.setattr(machine, "gpus", lambda: [])
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    rates = {("float32", "off"): 4.6, ("float32", "on"): 2.4, ("mixed_bfloat16", "off"): 6.2,
             ("mixed_bfloat16", "on"): 3.0}
    calls = []

    def measure(precision, xla):
        calls.append((precision, xla))
        return rates[(precision, xla)]

    precision, xla = numerics.resolve("auto", "auto", measure, key="InceptionV3|299|5")
    assert (precision.value, xla.value) == ("mixed_bfloat16", "off")
    assert "mixed_bfloat16/off 6.20 img/s" in precision.reason
    assert sorted(calls) == sorted(rates)
    again, _ = numerics.resolve("auto", "auto", measure, key="InceptionV3|299|5")
    assert again.value == "mixed_bfloat16" and len(calls) == 4  # from the cache, no new probe


def test_cpu_without_bf16_only_probes_xla(monkeypatch):
    monkeypatch.setattr(machine, "gpus", lambda: [])
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2"})
    seen = []
    precision, xla = numerics.resolve("auto", "auto", lambda p, x: seen.append((p, x)) or (2.0 if x == "on" else 1.0),
                                    key="k")
    assert precision.value == "float32" and xla.value == "on"
    assert {p for p, _ in seen} == {"float32"}


def test_auto_xla_with_explicit_precision(monkeypatch):
    monkeypatch.setattr(machine, "gpus", lambda: [])
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512_bf16"})
    precision, xla = numerics.resolve("float32", "auto", lambda p, x: 1.0 if x == "on" else 3.0, key="k2")
    assert precision.value == "float32" and precision.reason == "set"
    assert xla.value == "off" and "probe" in xla.reason
