"""Device facts and the automatic precision / XLA choices.

``auto`` is decided by rules where the answer is known in advance (GPU compute
capability) and otherwise by a short measured probe, cached per machine in the
engine's cache folder so a whole sweep uses one choice.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass

import tensorflow as tf

from engine.embedded import cache_dir


@dataclass(frozen=True)
class Choice:
    """A resolved setting and why it was chosen."""

    value: str
    reason: str


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def machine() -> dict:
    """What a result needs to say about where it was measured."""
    details = []
    for gpu in gpus():
        info = tf.config.experimental.get_device_details(gpu)
        details.append({"name": info.get("device_name", gpu.name),
                        "compute_capability": info.get("compute_capability")})
    import keras
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "gpus": details,
            "bf16_cpu": bool(cpu_flags() & {"avx512_bf16", "amx_bf16"}),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version()}


def probe_cache_path():
    return cache_dir() / "probe.json"


def probe_key(key: str, precision: str, xla: str) -> str:
    """What a probe result is stored under: this CPU and TensorFlow, the
    model/size/batch ``key`` and the user's two settings."""
    return f"{cpu_name()}|tf{tf.__version__}|{key}|{precision}|{xla}"


def cached_probe(key: str) -> dict | None:
    path = probe_cache_path()
    if path.is_file():
        try:
            return json.loads(path.read_text()).get(key)
        except json.JSONDecodeError:
            return None
    return None


def store_probe(key: str, value: dict) -> None:
    path = probe_cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = value
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def resolve(precision: str, xla: str, measure=None, key: str = "",
            deterministic: bool = False) -> tuple[Choice, Choice]:
    """Resolves ``auto`` precision and XLA.

    Args:
        precision, xla: the user's settings (``auto`` or explicit).
        measure: ``measure(precision, xla) -> images/s``, a short timing of the
            real training step; used on CPU only, where the faster setting is
            not known in advance.
        key: what the probe result is cached under (model, size, batch).
        deterministic: deterministic kernels were asked for; Keras compiles no
            XLA step then (not every XLA kernel is deterministic), so ``auto``
            XLA is off.
    """
    if deterministic and xla == "auto":
        precision_choice, _ = resolve(precision, "off", measure, key)
        return precision_choice, Choice("off", "deterministic kernels: Keras compiles no XLA step with them")
    if precision != "auto" and xla != "auto":
        return Choice(precision, "set"), Choice(xla, "set")
    devices = gpus()
    if devices:
        capability = tf.config.experimental.get_device_details(devices[0]).get("compute_capability") or (0, 0)
        if precision == "auto":
            if capability >= (8, 0):
                precision_choice = Choice("mixed_bfloat16", f"GPU compute capability {capability} >= 8.0: "
                                          "bf16 tensor cores, no loss scaling needed")
            elif capability >= (7, 0):
                precision_choice = Choice("mixed_float16", f"GPU compute capability {capability}: "
                                          "fp16 tensor cores with Keras loss scaling")
            else:
                precision_choice = Choice("float32", f"GPU compute capability {capability} < 7.0: "
                                          "no tensor cores")
        else:
            precision_choice = Choice(precision, "set")
        xla_choice = Choice(xla, "set") if xla != "auto" else \
            Choice("on", "GPU: XLA fuses the many small ops of a training step")
        return precision_choice, xla_choice
    # CPU: bf16 only where the CPU has bf16 instructions, and only if faster.
    bf16 = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    precisions = [precision] if precision != "auto" else (["float32", "mixed_bfloat16"] if bf16 else ["float32"])
    xlas = [xla] if xla != "auto" else ["off", "on"]
    candidates = [(p, x) for p in precisions for x in xlas]
    if len(candidates) == 1 or measure is None:
        p, x = candidates[0]
        return (Choice(p, "set" if precision != "auto" else "CPU without bf16 instructions"),
                Choice(x, "set" if xla != "auto" else "no probe: XLA off"))
    full_key = probe_key(key, precision, xla)
    found = cached_probe(full_key)
    if found is None:
        rates = {f"{p}/{x}": measure(p, x) for p, x in candidates}
        found = {"rates": rates, "when": time.strftime("%Y-%m-%d %H:%M")}
        store_probe(full_key, found)
    best = max(found["rates"], key=found["rates"].get)
    p, x = best.split("/")
    table = ", ".join(f"{k} {v:.2f} img/s" for k, v in found["rates"].items())
    reason = f"CPU probe ({found['when']}, cached): {table}"
    return (Choice(p, reason if precision == "auto" else "set"),
            Choice(x, reason if xla == "auto" else "set"))
