"""The numerics of a run: precision, XLA and BatchNorm momentum, with their reasons.

``auto`` is decided by rules where the answer is known in advance (GPU compute
capability) and otherwise by a short measured probe of the real training
step, cached per machine with the other measured rates (``pace.json``,
``engine.training.pace``: each precision/XLA setting's step rate and check
under its shape) so that a whole sweep (and every later run of the same
shape) uses one choice.

A reduced precision is chosen on a CPU only if it is faster **and** its
numerics pass a check: the probe trains the same initial weights on the same
real training batches in float32 and in the candidate, and the candidate's
losses must stay finite and close to float32's (``numerics_check``). Speed
alone once chose bf16 on Intel AMX CPUs, where TensorFlow 2.21's bf16
training diverged (benchmarks/RESULTS.md); there ``auto`` keeps float32.

The BatchNorm momentum is always a number: ``keras`` (and ``auto`` with
pretrained weights) is the backbone's own, which is not 0.99 for every
Keras application (``BACKBONE_BN_MOMENTUM``).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from engine import machine
from engine.config import TrainConfig
from engine.training import pace


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
    bn_momentum: float  # every backbone BatchNorm's; Keras' own default written out
    bn_reason: str = "set"

    def to_json(self) -> dict:
        return {"precision": self.precision.value, "xla": self.xla.value, "reason": self.precision.reason,
                "xla_reason": self.xla.reason, "bn_momentum": self.bn_momentum, "bn_momentum_reason": self.bn_reason}

    @classmethod
    def from_json(cls, data: dict, model: str | None = None) -> "Numerics":
        """Inverse of ``to_json``. Older versions stored the backbone's own
        momentum (then left to Keras) as 0.99 whatever the backbone, with a
        reason naming "Keras' 0.99"; given the ``model``, such a value reads
        as that backbone's own momentum, as those versions trained it."""
        momentum, reason = data.get("bn_momentum"), data.get("bn_momentum_reason", "")
        if momentum is None or (model in BACKBONE_BN_MOMENTUM and reason.startswith(KERAS_REASONS)):
            momentum = BACKBONE_BN_MOMENTUM.get(model, KERAS_BN_MOMENTUM)
        return cls(Choice(data["precision"], data["reason"]), Choice(data["xla"], data.get("xla_reason", "")),
                   float(momentum), reason)


# --- measured rates -------------------------------------------------------------

PROBE = "probe"  # the source of the results ``resolve`` measures itself


def probe_shape(cfg: TrainConfig, channels: int | None = None) -> pace.Shape:
    """The shape the probe's results of ``cfg`` are cached under (precision
    and XLA: each candidate's, filled in by ``resolve``)."""
    return pace.Shape(cfg.model.name, cfg.model.image_size, cfg.model.channels if channels is None else channels,
                      cfg.batch_size, cfg.precision, cfg.xla)


def remember_rates(shape: pace.Shape, rates: dict[str, float], source: str) -> None:
    """Stores measured step rates ``{"precision/xla": img/s}`` at ``shape``
    (its precision and XLA replaced by each setting's) as the probe's
    (``engine bench`` measures them more carefully than the probe, so
    training then uses its rates). The bench times steps, it does not check
    numerics: a reduced precision it found fastest is still checked by the
    next training run's probe, and a stored check is kept."""
    for name, rate in rates.items():
        precision, xla = name.split("/")
        pace.record_probe(replace(shape, precision=precision, xla=xla), step_img_s=rate, source=source)


# --- precision and XLA ----------------------------------------------------------

REDUCED = ("mixed_bfloat16", "mixed_float16")

# The numerics check compares a candidate's probe losses with float32's, from
# the same initial weights on the same batches, without dropout (its masks are
# drawn in the compute dtype, so they differ between precisions): every loss
# finite; the first step's loss (the forward pass alone, weights still equal)
# within FIRST_ABS + FIRST_REL x float32's; the mean loss over the steps (the
# backward pass and the updates too) within MEAN_ABS + MEAN_REL x float32's.
# Training is chaotic step by step, a mean is not: measured on 2 AVX2 cores,
# InceptionV3 from scratch at 75 px, batch 5, lr 1e-3: first step 1.028 against
# 1.077, mean 0.921 against 0.992; TinyCNN: within 0.01 at every step
# (benchmarks/RESULTS.md). bf16 keeps 8 bits of mantissa (0.4 % rounding).
FIRST_ABS, FIRST_REL = 0.05, 0.1
MEAN_ABS, MEAN_REL = 0.15, 0.25
PROBE_STEPS = 8    # training steps per candidate: the first 2 warm up and compile
PROBE_TIMED = 3    # the last 3 are timed
PROBE_MAX_LR = 1e-3  # the probe checks kernels, not the learning rate: an lr of 1e-2 may diverge in float32 too

# Intel AMX: TensorFlow 2.21's bf16 training diverged (oneDNN's AMX
# backward-weights convolution returned non-finite values, intermittently and
# only with more than one thread; benchmarks/RESULTS.md). A short probe can
# miss an intermittent fault, so ``auto`` does not consider bf16 there at all.
# ENGINE_ALLOW_AMX_BF16=1 lets it (the numerics check still applies): for
# checking a TensorFlow build that fixes the kernel.
AMX_REASON = ("Intel AMX CPU: bf16 training diverged there with TensorFlow 2.21 (oneDNN's AMX bf16 "
              "backward-weights convolution), so auto keeps float32; --precision mixed_bfloat16 forces it")


def amx_bf16_excluded() -> bool:
    return "amx_bf16" in machine.cpu_flags() and os.environ.get("ENGINE_ALLOW_AMX_BF16") != "1"


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
    if machine.gpu_capabilities():
        precision, xla = resolve("auto", "auto")  # GPU rules, no measuring
        return [precision.value if kind == "precision" else xla.value]
    if kind == "precision":
        return ["float32", "mixed_bfloat16"] if machine.bf16_cpu() and not amx_bf16_excluded() else ["float32"]
    return ["off", "on"]


def numerics_check(reference: list[float], candidate: list[float]) -> dict:
    """Whether a candidate precision's probe losses pass against float32's.

    Both lists are the losses of the same training steps from the same
    initial weights on the same batches. Passes when every candidate loss is
    finite, the first within ``FIRST_ABS + FIRST_REL * reference`` of
    float32's and the mean within ``MEAN_ABS + MEAN_REL * reference mean``.
    Returns ``{"ok": bool, "why": str}``; a reference that is itself
    non-finite cannot vouch for anything, so the candidate fails then too.
    """
    if not reference or len(candidate) != len(reference):
        return {"ok": False, "why": "no float32 reference losses to compare with"}
    for name, losses in (("float32's own loss", reference), ("loss", candidate)):
        bad = [step for step, loss in enumerate(losses, 1) if not math.isfinite(loss)]
        if bad:
            return {"ok": False, "why": f"{name} not finite at probe step {bad[0]} of {len(losses)}"}
    first, mean_c, mean_r = candidate[0], sum(candidate) / len(candidate), sum(reference) / len(reference)
    first_bound = FIRST_ABS + FIRST_REL * abs(reference[0])
    if abs(first - reference[0]) > first_bound:
        return {"ok": False, "why": f"first-step loss {first:.3f} against float32's {reference[0]:.3f} "
                                    f"(allowed +-{first_bound:.3f})"}
    mean_bound = MEAN_ABS + MEAN_REL * abs(mean_r)
    if abs(mean_c - mean_r) > mean_bound:
        return {"ok": False, "why": f"mean loss {mean_c:.3f} over {len(candidate)} probe steps against "
                                    f"float32's {mean_r:.3f} (allowed +-{mean_bound:.3f})"}
    return {"ok": True, "why": f"finite; first-step loss {first:.3f} against {reference[0]:.3f}, mean "
                               f"{mean_c:.3f} against {mean_r:.3f} over {len(candidate)} steps"}


def _reference_pair(pairs: list[tuple[str, str]]) -> tuple[str, str]:
    """The float32 pair a reduced precision's losses are compared with."""
    for pair in (("float32", "off"), ("float32", "on")):
        if pair in pairs:
            return pair
    return ("float32", "off")


def resolve(precision: str, xla: str, measure=None, shape: pace.Shape | None = None,
            deterministic: bool = False) -> tuple[Choice, Choice]:
    """Resolves ``auto`` precision and XLA.

    Args:
        precision, xla: the user's settings (``auto`` or explicit).
        measure: ``measure(precision, xla) -> (images/s, losses)``, a short run
            of the real training step on real batches from fixed initial
            weights; used on CPU only, where the faster setting is not known
            in advance and a reduced precision must pass ``numerics_check``.
        shape: what the probe's results are cached under (model, image size,
            channels, batch; its precision and XLA are replaced by each
            candidate's); None: nothing is cached.
        deterministic: deterministic kernels were asked for; Keras compiles no
            XLA step then (not every XLA kernel is deterministic), so ``auto``
            XLA is off.
    """
    if deterministic and xla == "auto":
        precision_choice, _ = resolve(precision, "off", measure, shape)
        return precision_choice, Choice("off", "deterministic kernels: Keras compiles no XLA step with them")
    if precision != "auto" and xla != "auto":
        return Choice(precision, "set"), Choice(xla, "set")
    capabilities = machine.gpu_capabilities()  # (without starting TensorFlow for an estimate)
    if capabilities:
        return _gpu_choices(capabilities[0], precision, xla)
    # CPU: bf16 only where the CPU has bf16 instructions (emulated it is ~10x
    # slower), only if measured faster, and only if its numerics pass.
    precisions = [precision] if precision != "auto" else auto_candidates("precision")
    no_bf16 = AMX_REASON if amx_bf16_excluded() else "CPU without bf16 instructions"
    xlas = [xla] if xla != "auto" else ["off", "on"]
    pairs = [(p, x) for p in precisions for x in xlas]
    shapes = {f"{p}/{x}": replace(shape, precision=p, xla=x) for p, x in pairs} if shape and len(pairs) > 1 else {}
    rates, checks, stamps = _cached_probes(shapes)
    if len(pairs) == 1 or (measure is None and len(rates) < len(pairs)):
        p, x = pairs[0]
        return (Choice(p, "set" if precision != "auto" else no_bf16),
                Choice(x, "set" if xla != "auto" else "no probe: XLA off"))
    if measure is not None:
        _probe_missing(measure, pairs, precision, shapes, rates, checks, stamps)
    return _cpu_choices(precision, xla, xlas, rates, checks, stamps)


def _gpu_choices(capability: tuple[int, int], precision: str, xla: str) -> tuple[Choice, Choice]:
    """The GPU rules: precision by the first GPU's compute ``capability``, XLA on."""
    precision_choice = gpu_precision(capability) if precision == "auto" else Choice(precision, "set")
    xla_choice = Choice(xla, "set") if xla != "auto" else \
        Choice("on", "GPU: XLA fuses the many small ops of a training step")
    return precision_choice, xla_choice


def _cached_probes(shapes: dict[str, pace.Shape]) -> tuple[dict, dict, dict]:
    """The cached probe results at ``shapes`` (by ``"precision/xla"``): step
    rates, numerics checks, and when (and by what, if not the probe) each was measured."""
    found = {name: pace.probe_result(s) or {} for name, s in shapes.items()}
    rates = {name: r["step_img_s"] for name, r in found.items() if r.get("step_img_s")}
    checks = {name: r["check"] for name, r in found.items() if r.get("check")}
    stamps = {name: r["when"] + ("" if r["source"] == PROBE else f", {r['source']}")
              for name, r in found.items() if r.get("when")}
    return rates, checks, stamps


def _probe_missing(measure, pairs: list[tuple[str, str]], precision: str, shapes: dict[str, pace.Shape],
                   rates: dict, checks: dict, stamps: dict) -> None:
    """Measures the rates and checks the cache lacks, into ``rates``,
    ``checks`` and ``stamps``, and caches them at ``shapes``."""
    # A reduced precision chosen by auto needs its numerics checked; one the
    # user set is theirs (a divergence then names its precision).
    to_check = [(p, x) for p, x in pairs if precision == "auto" and p in REDUCED and f"{p}/{x}" not in checks]
    to_time = [(p, x) for p, x in pairs if f"{p}/{x}" not in rates]
    if not (to_check or to_time):
        return
    reference = _reference_pair(pairs)
    wanted = list(dict.fromkeys(to_time + ([reference] if to_check else []) + to_check))
    measured = {pair: measure(*pair) for pair in wanted}
    for pair in dict.fromkeys(to_time + to_check):
        name = f"{pair[0]}/{pair[1]}"
        if pair in to_time:
            rates[name] = measured[pair][0]
        if pair in to_check:
            checks[name] = numerics_check(measured[reference][1], measured[pair][1])
        if shapes:
            pace.record_probe(shapes[name], step_img_s=rates[name] if pair in to_time else None,
                              check=checks[name] if pair in to_check else None, source=PROBE)
        if pair in to_time:
            stamps[name] = time.strftime("%Y-%m-%d %H:%M")


def _cpu_choices(precision: str, xla: str, xlas: list[str], rates: dict, checks: dict,
                 stamps: dict) -> tuple[Choice, Choice]:
    """The fastest setting measured whose numerics passed (float32 if none),
    with the probe's rates, rejections and dates as the reason."""
    eligible = {name: rate for name, rate in rates.items()
                if name.split("/")[0] not in REDUCED or precision != "auto" or checks.get(name, {}).get("ok")}
    if not eligible:
        eligible = {f"float32/{x}": 0.0 for x in xlas}
    best = max(eligible, key=eligible.get)
    p, x = best.split("/")
    table = ", ".join(f"{k} {v:.2f} img/s" for k, v in rates.items())
    rejected = "; ".join(f"{name} rejected: {check['why']}" for name, check in checks.items() if not check.get("ok"))
    unchecked = [name for name in rates if name not in eligible and name not in checks]
    reason = f"CPU probe ({'; '.join(dict.fromkeys(stamps.values()))}, cached): {table}"
    if rejected:
        reason += f"; {rejected}"
    if unchecked:
        reason += f"; {', '.join(unchecked)} not chosen: numerics not yet checked"
    if precision == "auto" and p == "float32" and amx_bf16_excluded():
        reason += f"; {AMX_REASON}"
    return (Choice(p, reason if precision == "auto" else "set"),
            Choice(x, reason if xla == "auto" else "set"))


def probe_batches(cfg: TrainConfig, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` batches of real, un-augmented training images at the run's
    batch size, in record order (cycled if the split is short): the probe
    checks numerics on what the run will see, not on random tensors, whose
    statistics no trained network meets."""
    from engine.data import pipeline

    ds = pipeline.dataset(cfg.records, "train", cfg.batch_size, training=False, config=cfg.data)
    whole = [(x.numpy(), y.numpy()) for x, y in ds if x.shape[0] == cfg.batch_size]
    if not whole:
        raise ValueError(f"no full batch of {cfg.batch_size} in {cfg.records}")
    return [whole[i % len(whole)] for i in range(count)]


def probe_rates(cfg: TrainConfig, channels: int, batches=None):
    """``measure(precision, xla) -> (img/s, losses)`` for the CPU probe:
    ``PROBE_STEPS`` real training steps of the network at the run's shape on
    ``batches`` (default: ``probe_batches`` of ``cfg``), every candidate from
    the same initial weights (random: the kernels are checked, not the
    pretrained start), without dropout (see ``numerics_check``), Adam at the
    run's lr capped at ``PROBE_MAX_LR``."""
    import keras

    from engine.model import build
    from engine.training.seeding import seed_run

    initial: list = []

    def measure(precision: str, xla: str) -> tuple[float, list[float]]:
        nonlocal batches
        if batches is None:
            batches = probe_batches(cfg, PROBE_STEPS)
        keras.backend.clear_session()
        keras.config.set_dtype_policy(precision)
        try:
            seed_run(cfg.seed)
            net = build(replace(cfg.model, weights="none", channels=channels, dropout=0.0))
            if not initial:
                initial.extend(net.get_weights())
            net.set_weights(initial)  # variables are float32 under every policy
            net.compile(optimizer=keras.optimizers.Adam(min(cfg.lr, PROBE_MAX_LR)), loss="binary_crossentropy",
                        jit_compile=xla == "on")
            losses, times = [], []
            for x, y in batches:
                start = time.perf_counter()
                losses.append(float(net.train_on_batch(x.astype(np.float32), y.astype(np.float32))))
                times.append(time.perf_counter() - start)  # the float() above waits for the device
            return cfg.batch_size / float(np.median(times[-PROBE_TIMED:])), losses
        finally:
            keras.config.set_dtype_policy("float32")
            keras.backend.clear_session()
    return measure


# --- BatchNorm momentum ----------------------------------------------------------

KERAS_BN_MOMENTUM = 0.99  # Keras' BatchNormalization default
# Each backbone's own BatchNorm momentum as keras.applications builds it (Keras
# 3.15; TinyCNN is engine.model.networks'): what ``keras`` keeps.
BACKBONE_BN_MOMENTUM = MappingProxyType({
    "InceptionV3": 0.99, "ResNet50": 0.99, "DenseNet121": 0.99, "TinyCNN": 0.99,
    "EfficientNetV2B0": 0.9, "MobileNetV2": 0.999, "MobileNetV3Small": 0.999})
# How older versions' sweep.json gave the backbone's own momentum (see Numerics.from_json).
KERAS_REASONS = ("set: Keras' 0.99", "auto: Keras' 0.99")


def bn_residual(momentum: float, steps: int) -> float:
    """The share of a moving average's starting value left after ``steps``
    updates at ``momentum`` (``momentum ** steps``): of the initial mean 0 /
    variance 1 from scratch, or of the ImageNet statistics. Keras' 0.99 keeps
    37 % after 100 steps; 0.9 keeps 12 % after 20, 35 % after 10, 59 % after 5."""
    return float(momentum) ** max(int(steps), 0)


def auto_bn_momentum(steps_per_epoch: int) -> float:
    """BatchNorm momentum tied to the number of steps per epoch, for a network
    trained from scratch.

    Keras' 0.99 averages over ~100 steps and starts from mean 0 / variance 1:
    on short runs over small data without pretrained statistics (the quick
    preset, anyone with ``--weights none``) the moving statistics still carry
    that start after several epochs, and validation sits at chance while
    training accuracy is high. The momentum chosen is 0.01 ** (1 / steps),
    which leaves 1 % of the start after one epoch (``bn_residual``), kept
    within [0.9, 0.99] so it is never noisier than ~10 steps nor slower than
    Keras' default. The floor breaks that promise below 44 steps per epoch
    (0.9 ** 44 = 0.0097): after one epoch of 20 steps 12 % of the start is
    left, of 10 steps 35 %, of 5 steps 59 %, and the share differs by batch
    size. ``--bn-stats precise`` (engine.training.precise_bn) removes that
    dependence on the step count.
    """
    return float(min(0.99, max(0.9, 0.01 ** (1.0 / max(steps_per_epoch, 1)))))


def bn_momentum(setting: str, steps_per_epoch: int, weights: str, model: str) -> tuple[float, str]:
    """The ``--bn-momentum`` setting resolved to a number, and why.

    ``keras`` is the ``model`` backbone's own momentum as Keras builds it
    (``BACKBONE_BN_MOMENTUM``: 0.99 for InceptionV3). ``auto`` is that too
    with ImageNet or file weights, whose moving statistics already describe
    real images (the paper's setting); from scratch it is
    ``auto_bn_momentum`` of ``steps_per_epoch`` (a sweep passes its trial
    with the fewest steps, so every trial gets the same value).
    """
    own = BACKBONE_BN_MOMENTUM[model]
    if setting == "keras":
        return own, f"set: {model}'s own {own:g} (Keras)"
    if setting != "auto":
        return float(setting), "set"
    if weights != "none":
        return own, f"auto: {model}'s own {own:g} (Keras), the {weights} weights carry their own statistics"
    return auto_bn_momentum(steps_per_epoch), (f"auto: from scratch, at most 1 % of the initial statistics "
                                               f"left after one epoch of {steps_per_epoch} steps")


def likely(cfg: TrainConfig) -> tuple[str, str]:
    """The precision and XLA ``cfg`` will train with, found without measuring
    (set values, the GPU rules, the cached CPU probe's choice, else float32
    and XLA off): what a time estimate assumes."""
    precision, xla = resolve(cfg.precision, cfg.xla, None, probe_shape(cfg), deterministic=cfg.deterministic)
    return precision.value, xla.value


def choose(cfg: TrainConfig, channels: int, steps_per_epoch: int) -> Numerics:
    """Resolves the ``auto`` settings of ``cfg`` (probing the CPU if needed)."""
    precision, xla = resolve(cfg.precision, cfg.xla, probe_rates(cfg, channels), probe_shape(cfg, channels),
                             deterministic=cfg.deterministic)
    return Numerics(precision, xla, *bn_momentum(cfg.bn_momentum, steps_per_epoch, cfg.model.weights,
                                                 cfg.model.name))
