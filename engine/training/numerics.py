"""The numerics of a run: precision, XLA and BatchNorm momentum, with their reasons.

``auto`` is decided by rules where the answer is known in advance (GPU compute
capability) and otherwise by a short measured probe of the real training
step, cached per machine in the engine's cache folder so that a whole sweep
(and every later run of the same shape) uses one choice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf

from engine import machine
from engine.config import TrainConfig
from engine.io import atomic_json, cache_dir


@dataclass(frozen=True)
class Choice:
    """A resolved setting and why it was chosen."""

    value: str
    reason: str


@dataclass(frozen=True)
class Numerics:
    """What ``auto`` became for a run (or for every trial of a sweep)."""

    precision: Choice
    xla: Choice
    bn_momentum: float | None  # None: Keras' 0.99
    bn_reason: str = "set"

    def to_json(self) -> dict:
        return {"precision": self.precision.value, "xla": self.xla.value, "reason": self.precision.reason,
                "xla_reason": self.xla.reason, "bn_momentum": 0.99 if self.bn_momentum is None else self.bn_momentum,
                "bn_momentum_reason": self.bn_reason}

    @classmethod
    def from_json(cls, data: dict) -> "Numerics":
        """Inverse of ``to_json`` (0.99 is Keras' own momentum: left to Keras)."""
        momentum = data["bn_momentum"]
        return cls(Choice(data["precision"], data["reason"]), Choice(data["xla"], data.get("xla_reason", "")),
                   None if momentum == 0.99 else float(momentum), data.get("bn_momentum_reason", ""))


# --- the probe cache ----------------------------------------------------------

def probe_key(key: str, precision: str, xla: str) -> str:
    """What a probe result is stored under: this CPU and TensorFlow, the
    model/size/batch ``key`` and the user's two settings."""
    return f"{machine.cpu_name()}|tf{tf.__version__}|{key}|{precision}|{xla}"


def shape_key(model: str, image_size: int, batch_size: int) -> str:
    return f"{model}|{image_size}|{batch_size}"


def cached_probe(key: str) -> dict | None:
    path = cache_dir() / "probe.json"
    if path.is_file():
        try:
            return json.loads(path.read_text()).get(key)
        except json.JSONDecodeError:
            return None
    return None


def store_probe(key: str, value: dict) -> None:
    path = cache_dir() / "probe.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        data = {}
    data[key] = value
    atomic_json(path, data)


def remember_rates(model: str, image_size: int, batch_size: int, rates: dict[str, float], source: str) -> None:
    """Stores measured ``{"precision/xla": img/s}`` as the probe result of
    ``--precision auto --xla auto`` at this shape (``engine bench`` measures
    them more carefully than the probe, so training then uses its verdict)."""
    store_probe(probe_key(shape_key(model, image_size, batch_size), "auto", "auto"),
                {"rates": rates, "when": time.strftime("%Y-%m-%d %H:%M") + f", {source}"})


# --- precision and XLA ----------------------------------------------------------

def gpu_precision(capability: tuple[int, int]) -> Choice:
    if capability >= (8, 0):
        return Choice("mixed_bfloat16", f"GPU compute capability {capability} >= 8.0: "
                                        "bf16 tensor cores, no loss scaling needed")
    if capability >= (7, 0):
        return Choice("mixed_float16", f"GPU compute capability {capability}: "
                                       "fp16 tensor cores with Keras loss scaling")
    return Choice("float32", f"GPU compute capability {capability} < 7.0: no tensor cores")


def auto_candidates(kind: str) -> list[str]:
    """What ``auto`` could choose on this device (``kind`` precision or xla):
    one value by rule on a GPU, the measured candidates on a CPU."""
    if machine.gpus():
        precision, xla = resolve("auto", "auto")  # GPU rules, no measuring
        return [precision.value if kind == "precision" else xla.value]
    if kind == "precision":
        return ["float32", "mixed_bfloat16"] if machine.bf16_cpu() else ["float32"]
    return ["off", "on"]


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
    devices = machine.gpus()
    if devices:
        capability = tf.config.experimental.get_device_details(devices[0]).get("compute_capability") or (0, 0)
        precision_choice = gpu_precision(capability) if precision == "auto" else Choice(precision, "set")
        xla_choice = Choice(xla, "set") if xla != "auto" else \
            Choice("on", "GPU: XLA fuses the many small ops of a training step")
        return precision_choice, xla_choice
    # CPU: bf16 only where the CPU has bf16 instructions (emulated it is ~10x
    # slower), and only if measured faster.
    precisions = [precision] if precision != "auto" else auto_candidates("precision")
    xlas = [xla] if xla != "auto" else ["off", "on"]
    pairs = [(p, x) for p in precisions for x in xlas]
    full_key = probe_key(key, precision, xla)
    found = cached_probe(full_key) if len(pairs) > 1 else None
    if len(pairs) == 1 or (measure is None and found is None):
        p, x = pairs[0]
        return (Choice(p, "set" if precision != "auto" else "CPU without bf16 instructions"),
                Choice(x, "set" if xla != "auto" else "no probe: XLA off"))
    if found is None:
        rates = {f"{p}/{x}": measure(p, x) for p, x in pairs}
        found = {"rates": rates, "when": time.strftime("%Y-%m-%d %H:%M")}
        store_probe(full_key, found)
    best = max(found["rates"], key=found["rates"].get)
    p, x = best.split("/")
    table = ", ".join(f"{k} {v:.2f} img/s" for k, v in found["rates"].items())
    reason = f"CPU probe ({found['when']}, cached): {table}"
    return (Choice(p, reason if precision == "auto" else "set"),
            Choice(x, reason if xla == "auto" else "set"))


def probe_rates(cfg: TrainConfig, channels: int):
    """``measure(precision, xla) -> img/s`` for the CPU probe: a few real
    training steps of the network at the run's shape, random weights."""
    import keras

    from engine.model import build

    def measure(precision: str, xla: str) -> float:
        keras.backend.clear_session()
        keras.config.set_dtype_policy(precision)
        try:
            net = build(replace(cfg.model, weights="none", channels=channels))
            net.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy",
                        jit_compile=xla == "on")
            size = cfg.model.image_size
            x = tf.random.uniform([cfg.batch_size, size, size, channels], 0, 255)
            y = tf.cast(tf.random.uniform([cfg.batch_size]) > 0.5, tf.float32)
            for _ in range(2):
                net.train_on_batch(x, y)  # compile and warm up
            times = []
            for _ in range(3):
                start = time.perf_counter()
                float(net.train_on_batch(x, y))  # the float() waits for the device
                times.append(time.perf_counter() - start)
            return cfg.batch_size / float(np.median(times))
        finally:
            keras.config.set_dtype_policy("float32")
            keras.backend.clear_session()
    return measure


# --- BatchNorm momentum ----------------------------------------------------------

def auto_bn_momentum(steps_per_epoch: int) -> float:
    """BatchNorm momentum tied to the number of steps per epoch, for a network
    trained from scratch.

    Keras' 0.99 averages over ~100 steps and starts from mean 0 / variance 1:
    on short runs over small data without pretrained statistics (the quick
    preset, anyone with ``--weights none``) the moving statistics still carry
    that start after several epochs, and validation sits at chance while
    training accuracy is high. The momentum chosen leaves at most 1 % of the
    start after one epoch (m ** steps <= 0.01), kept within [0.9, 0.99] so it is
    never noisier than 10 steps nor slower than Keras' default.
    """
    return float(min(0.99, max(0.9, 0.01 ** (1.0 / max(steps_per_epoch, 1)))))


def bn_momentum(setting: str, steps_per_epoch: int, weights: str) -> tuple[float | None, str]:
    """The ``--bn-momentum`` setting resolved (None keeps Keras' 0.99), and why.

    ``auto`` is Keras' 0.99 with ImageNet or file weights, whose moving
    statistics already describe real images (the paper's setting); from
    scratch it is ``auto_bn_momentum`` of ``steps_per_epoch`` (a sweep passes
    its trial with the fewest steps, so every trial gets the same value).
    """
    if setting == "keras":
        return None, "set: Keras' 0.99"
    if setting != "auto":
        return float(setting), "set"
    if weights != "none":
        return None, f"auto: Keras' 0.99, the {weights} weights carry their own statistics"
    return auto_bn_momentum(steps_per_epoch), (f"auto: from scratch, at most 1 % of the initial statistics "
                                               f"left after one epoch of {steps_per_epoch} steps")


def likely(cfg: TrainConfig) -> tuple[str, str]:
    """The precision and XLA ``cfg`` will train with, found without measuring
    (set values, the GPU rules, the cached CPU probe's choice, else float32
    and XLA off): what a time estimate assumes."""
    precision, xla = resolve(cfg.precision, cfg.xla, None,
                             key=shape_key(cfg.model.name, cfg.model.image_size, cfg.batch_size),
                             deterministic=cfg.deterministic)
    return precision.value, xla.value


def choose(cfg: TrainConfig, channels: int, steps_per_epoch: int) -> Numerics:
    """Resolves the ``auto`` settings of ``cfg`` (probing the CPU if needed)."""
    precision, xla = resolve(cfg.precision, cfg.xla, probe_rates(cfg, channels),
                             key=shape_key(cfg.model.name, cfg.model.image_size, cfg.batch_size),
                             deterministic=cfg.deterministic)
    return Numerics(precision, xla, *bn_momentum(cfg.bn_momentum, steps_per_epoch, cfg.model.weights))
