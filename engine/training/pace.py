"""How long training takes on this machine: the rates runs measured,
remembered per machine, and the one time estimator that ``engine compare
--dry-run``, ``engine bench --dry-run`` and the study bench's projection use.

One cache of measured rates, ``pace.json`` in the engine's cache folder, one
entry per ``Shape.key()`` (this CPU, TensorFlow version and the shape: stack,
model, image size, channels, batch, precision, XLA, processes), changed under
a lock beside it (trial processes record at once). An entry holds:

* what a finished training session measured (``record``): its training rate
  (img/s over whole epochs, first step excluded), its evaluation rate, its
  first step (tracing and compilation) and its per-epoch save cost;
  ``engine bench`` records its end-to-end rates there too;
* under ``probe`` (``record_probe``), the CPU probe's step rate and numerics
  check of that precision and XLA setting (``engine.training.numerics``),
  or the step rate ``engine bench`` measured for it. A probe entry carries
  ``PROBE_VERSION``; one of another version is never handed out (before
  version 2 the probe measured speed alone, and chose a precision whose
  training diverged). The ``probe.json`` of earlier engine versions is not
  read: the next probe measures again.

An estimate uses, in order: a measurement of the same shape; one of the same
model and numerics at another size or batch, scaled; the CPU probe's step
rate; and last a rough rate for this kind of CPU, said to be rough.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass

from engine import machine
from engine.io import atomic_json, cache_dir, locked

PACE_FILE = "pace.json"
# Probe results of another version are not reused (see the module docstring).
PROBE_VERSION = 2
# A reusing run's first step against a compiling one's, until one was
# measured (quick preset, AVX2 CPU: 1.1-2.8 s against 35 s; see run_seconds).
REUSE_FIRST_STEP = 0.06
# Trial processes on a CPU whose rate was not measured at that count: their
# total rate against one process' (2 one-core processes against one two-core
# process: 1.36x for the quick preset, AVX2 CPU; ~1.16x expected at 299 px
# from the thread-pool table in benchmarks/RESULTS.md).
PARALLEL_GAIN = 1.25
# Rate falls with image area roughly as area ** -0.62 on a CPU (InceptionV3,
# float32, 299 px against 96 px, measured on both CPU kinds): small images
# use the cores less well than the pixel count promises.
AREA_EXPONENT = 0.62
# pace.json's lock is held for one read-change-write of a small file
# (milliseconds), so it need not wait out the engine's 300 s for a trial's
# lock: a holder that died on another host (a cache shared over NFS) is taken
# over once its heartbeat (every sixth of this) is this old, well before a
# waiter gives up. One that died on this host is taken over at once.
LOCK_STALE_SECONDS = 30.0
LOCK_WAIT_SECONDS = 90.0


@dataclass(frozen=True)
class Shape:
    """What a training rate depends on, besides the machine."""

    model: str
    image_size: int
    channels: int
    batch: int
    precision: str
    xla: str
    stack: str = "engine"  # or "paper" (the paper's tf_keras stack, in the bench)
    processes: int = 1  # trial processes sharing the machine (engine compare --parallel N)

    def key(self) -> str:
        return "|".join([machine.cpu_name(), f"tf{machine.tensorflow_version()}", self.stack, self.model,
                         str(self.image_size), str(self.channels), str(self.batch), self.precision, self.xla,
                         str(self.processes)])


@dataclass(frozen=True)
class Pace:
    """Rates for one shape, and where they come from."""

    train_img_s: float
    eval_img_s: float
    first_step_s: float  # a run that traces and compiles its step
    save_s: float  # per epoch, on the training thread
    basis: str
    reuse_step_s: float | None = None  # a run reusing a compiled step (None: a share of first_step_s)

    @property
    def measured(self) -> bool:
        """From rates measured on this machine for this shape's process count (maybe scaled by size)."""
        return not self.basis.startswith(("the CPU probe", "a rough")) and "not measured" not in self.basis

    @property
    def reused_first_step_s(self) -> float:
        return self.first_step_s * REUSE_FIRST_STEP if self.reuse_step_s is None else self.reuse_step_s


def _load() -> dict:
    path = cache_dir() / PACE_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _store(shape: Shape, change) -> None:
    """Applies ``change(entry)`` to the entry of ``shape`` and writes the file,
    under the file's lock: the trial processes of ``--parallel N`` record
    their probes and rates at about the same moments, and without it one's
    read-change-write would drop the entry another wrote in between."""
    path = cache_dir() / PACE_FILE
    with locked(path.with_name(f".{PACE_FILE}.lock"), LOCK_WAIT_SECONDS, stale=LOCK_STALE_SECONDS,
                heartbeat=LOCK_STALE_SECONDS / 6):
        data = _load()
        entry = data.get(shape.key(), {})
        change(entry)
        entry["machine"] = [machine.cpu_name(), machine.tensorflow_version()]
        entry["shape"] = dataclasses.asdict(shape)
        data[shape.key()] = entry
        atomic_json(path, data)


def record(shape: Shape, *, train_img_s: float | None = None, eval_img_s: float | None = None,
           first_step_s: float | None = None, save_s: float | None = None, reuse_step_s: float | None = None,
           source: str = "") -> None:
    """Remembers measured rates of ``shape`` on this machine (given ones replace
    the stored ones; the others are kept)."""
    def change(entry: dict) -> None:
        for name, value in (("train_img_s", train_img_s), ("eval_img_s", eval_img_s),
                            ("first_step_s", first_step_s), ("save_s", save_s), ("reuse_step_s", reuse_step_s)):
            if value is not None and value > 0:
                entry[name] = round(float(value), 4)
        entry["when"] = time.strftime("%Y-%m-%d %H:%M")
        entry["source"] = source
    _store(shape, change)


def record_probe(shape: Shape, *, step_img_s: float | None = None, check: dict | None = None,
                 source: str) -> None:
    """Remembers the step rate and/or the numerics check (``{"ok", "why"}``)
    the CPU probe or the bench (``source``) measured for ``shape``: given ones
    replace the stored ones, the others are kept unless of another probe
    version. ``when`` and ``source`` are the step rate's."""
    def change(entry: dict) -> None:
        probe = entry.get("probe", {})
        if probe.get("version") != PROBE_VERSION:
            probe = {"version": PROBE_VERSION}
        if step_img_s is not None or "when" not in probe:
            probe["when"] = time.strftime("%Y-%m-%d %H:%M")
            probe["source"] = source
        if step_img_s is not None:
            probe["step_img_s"] = round(float(step_img_s), 4)
        if check is not None:
            probe["check"] = dict(check)
        entry["probe"] = probe
    _store(shape, change)


def probe_result(shape: Shape) -> dict | None:
    """The probe part of ``shape``'s entry (``step_img_s``, ``check``,
    ``when``, ``source``), of this probe version, or None. Without one for
    these channels, one at another channel count is used: a time estimate
    may not know the records' channels, and they change the first
    convolution only."""
    data = _load()
    exact = data.get(shape.key(), {}).get("probe")
    if exact and exact.get("version") == PROBE_VERSION:
        return exact
    here, wanted = [machine.cpu_name(), machine.tensorflow_version()], dataclasses.asdict(shape)
    for entry in data.values():
        other, probe = entry.get("shape", {}), entry.get("probe") or {}
        if entry.get("machine") == here and probe.get("version") == PROBE_VERSION and \
                all(other.get(k) == v for k, v in wanted.items() if k != "channels"):
            return probe
    return None


def record_history(shape: Shape, history: list[dict], val_images: int, source: str, compiled: bool = True) -> None:
    """Records the rates of a training session from its ``history.csv`` rows
    (the rows this session trained: the medians over its epochs); its first
    step as a compiling one, or (``compiled`` False) as a reusing one's."""
    if not history:
        return
    rates = [h["images_per_second"] for h in history if h.get("images_per_second")]
    evals = [val_images / h["val_seconds"] for h in history if h.get("val_seconds")]
    saves = [h["save_seconds"] for h in history if h.get("save_seconds") is not None]
    firsts = [h["first_step_seconds"] for h in history if h.get("first_step_seconds")]
    record(shape, train_img_s=statistics.median(rates) if rates else None,
           eval_img_s=statistics.median(evals) if evals else None,
           save_s=statistics.median(saves) if saves else None,
           first_step_s=firsts[-1] if firsts and compiled else None,
           reuse_step_s=firsts[-1] if firsts and not compiled else None, source=source)


def rough_train_rate(shape: Shape) -> float:
    """Training img/s to expect with nothing measured: InceptionV3 at 299 px
    on 2 cores of each CPU kind (benchmarks/RESULTS.md), scaled by the image
    area, the core count and a GPU's ~50x. A rough figure."""
    if machine.bf16_cpu():  # AVX-512 with BF16 (AMD Zen 4 class)
        rate = 15.5 if shape.precision == "mixed_bfloat16" else 10.0
    elif "avx512f" in machine.cpu_flags():
        rate = 8.0
    else:  # AVX2 only (AMD Zen 3 class): float32 (1.65-1.67 img/s at batch 5 in two study benches); bf16
        rate = 0.16 if shape.precision == "mixed_bfloat16" else 1.6  # there is emulated, ~10x slower
    if shape.stack == "paper":  # tf_keras float32: its step measured ~1.1x slower than the engine's float32
        rate = (10.0 if "avx512f" in machine.cpu_flags() else 1.6) / 1.1
    if shape.xla == "on":
        rate *= 0.6  # XLA measured slower for this network on both CPU kinds
    rate *= (299 / shape.image_size) ** (2 * AREA_EXPONENT)
    if shape.model != "InceptionV3":
        rate *= 3
    rate *= max(machine.cpu_cores(), 1) / 2
    return rate * (50 if machine.gpu_capabilities() else 1)


def estimate(shape: Shape) -> Pace:
    """The rates to expect for ``shape`` on this machine (see the module docstring)."""
    data = _load()
    exact = data.get(shape.key())
    if exact and exact.get("train_img_s"):
        return _pace(exact, 1.0, f"measured here ({exact['when']}, {exact.get('source') or 'a run'})")
    # The same model and numerics at another size or batch: scaled by area.
    here = [machine.cpu_name(), machine.tensorflow_version()]
    near = []
    for entry in data.values():
        other = entry.get("shape", {})
        if entry.get("machine") == here and entry.get("train_img_s") and all(
                other.get(k, 1) == getattr(shape, k)
                for k in ("stack", "model", "channels", "precision", "xla", "processes")):
            near.append((abs(other["image_size"] - shape.image_size), abs(other["batch"] - shape.batch),
                         other["image_size"], entry))
    # Only from a size close enough for the area rule to hold (it is rough
    # across a 4x change of side); farther, the per-kind rate below is better.
    near = [n for n in near if 2 / 3 <= n[2] / shape.image_size <= 3 / 2]
    if near:
        *_, size, entry = min(near, key=lambda n: (n[0], n[1]))
        scale = (size / shape.image_size) ** (2 * AREA_EXPONENT)
        return _pace(entry, scale, f"scaled from a measurement at {size} px, batch {entry['shape']['batch']} "
                                   f"({entry['when']})")
    if shape.processes > 1:
        # Not measured at this many processes: one process' rates shared out.
        alone = estimate(dataclasses.replace(shape, processes=1))
        share = PARALLEL_GAIN / shape.processes
        return dataclasses.replace(alone, train_img_s=alone.train_img_s * share,
                                   eval_img_s=alone.eval_img_s * share,
                                   basis=f"{alone.basis}, shared by {shape.processes} processes "
                                         f"(x{PARALLEL_GAIN:g} in all, not measured)")
    probe = _probe_rate(shape)
    if probe:
        return Pace(probe, 3 * probe, _rough_first_step(shape), 0.0, "the CPU probe's step rate")
    rate = rough_train_rate(shape)
    return Pace(rate, 3 * rate, _rough_first_step(shape), 0.0, "a rough rate for this kind of CPU")


def _pace(entry: dict, scale: float, basis: str) -> Pace:
    train = entry["train_img_s"] * scale
    return Pace(train, entry.get("eval_img_s", 3 * entry["train_img_s"]) * scale,
                entry.get("first_step_s", 20.0), entry.get("save_s", 0.0), basis, entry.get("reuse_step_s"))


def _rough_first_step(shape: Shape) -> float:
    # Tracing and compiling InceptionV3's step measured 8-25 s on 2 CPU cores,
    # more under XLA.
    return (20.0 if shape.model == "InceptionV3" else 5.0) * (2.5 if shape.xla == "on" else 1.0)


def _probe_rate(shape: Shape) -> float | None:
    """The step rate the CPU probe (or the bench) measured for this shape and numerics."""
    found = probe_result(shape)
    return float(found["step_img_s"]) if found and found.get("step_img_s") else None


def run_seconds(shape: Shape, *, epochs: int, train_images: int, val_images: int, test_images: int = 0,
                compile_first: bool = True, pace: Pace | None = None) -> float:
    """Wall time of one training run: its epochs (training at the training
    rate, validation at the evaluation rate, the per-epoch save), its first
    step when its graph is new, the final scoring of val and test and the two
    saved models."""
    pace = pace or estimate(shape)
    steps = train_images // shape.batch
    epoch = steps * shape.batch / pace.train_img_s + val_images / pace.eval_img_s + pace.save_s
    final = (val_images + test_images) / pace.eval_img_s + (4.0 if shape.model == "InceptionV3" else 0.5)
    # A run that reuses a compiled step pays a second or two for its first
    # step (the new input iterator), one that compiles pays the tracing.
    first = pace.first_step_s if compile_first else pace.reused_first_step_s
    return epochs * epoch + first + final
