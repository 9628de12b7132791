"""``engine bench``: training and input throughput per batch size, precision and
XLA setting, side by side with the paper's Keras stack, in one process.

The protocol follows timm's ``benchmark.py`` and NVIDIA's DeepLearningExamples:

* every measurement is warmed up first; its first call (tracing, XLA
  compilation, the first decode of the records) is timed and reported apart
  as compile time, never mixed into a rate;
* a timed repeat ends only once its last result is on the host (a loss or a
  pixel sum turned into a Python float): asynchronous dispatch cannot hide work;
* the repeats of all measurements are interleaved round by round (A B C A B C
  ...), so the shared machine's slow spells hit every setting alike and every
  speedup is a ratio from one run;
* a repeat far from the median of the others (``outlier_ratio``) is flagged
  and left out of the median and spread, not averaged in;
* a measurement that runs out of memory becomes an ``OOM`` row and the bench
  goes on.

Each timed repeat starts a fresh input iterator (a fresh ``fit`` epoch for
``e2e``), so its start-up (shuffle-buffer fill, first augmented chunk) is
inside the clock: input and e2e rates are, if anything, understated. A
long-lived iterator would instead fill its buffers while other measurements
run and count that work as free.
"""

from __future__ import annotations

import contextlib
import gc
import io
import math
import os
import resource
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.config import BenchConfig, ModelConfig, TrainConfig
from engine.errors import UserError

ENGINE, BASELINE = "engine", "baseline"
# float32 2048x2048 matmul GFLOP/s of the 2-core reference CPU, which the
# rates in estimate_seconds were measured on (benchmarks/RESULTS.md).
REFERENCE_MATMUL_GFLOPS = 468.0
# Host memory below which no measurement starts (a judgement: the grid preset
# with four settings alive filled 21.5 of 24 GB before reaching batch 32).
LOW_MEMORY_MB = 3072.0


@dataclass
class Measure:
    """One row of the bench: what it times, how, and what it measured.

    ``prepare()`` runs before the clock starts and returns the timed function,
    which processes ``images`` images and returns once the result is on the host;
    it may return a function to call once the clock has stopped (tear-down).
    """

    mode: str
    batch: int
    stack: str
    precision: str
    xla: str
    images: int
    prepare: Callable[[], Callable[[], None]] | None = None
    status: str = "ok"
    error: str = ""
    compile_s: float | None = None
    seconds: list[float] = field(default_factory=list)
    peak_mb: float = 0.0
    device_peak_mb: float | None = None

    @property
    def setting(self) -> str:
        return f"{self.precision}/{self.xla}"


# --- timing statistics ------------------------------------------------------

def flag_outliers(values: list[float], ratio: float) -> list[bool]:
    """Flags each value more than ``ratio`` times above or below the median of
    all of them (with 3 or more values one wild repeat cannot move the median,
    and the median value itself is never flagged)."""
    if len(values) < 3:
        return [False] * len(values)
    reference = statistics.median(values)
    return [value > ratio * reference or value < reference / ratio for value in values]


def summarize(seconds: list[float], images: int, ratio: float) -> dict:
    """img/s median and spread over the repeats that are not outliers."""
    rates = [images / s for s in seconds]
    flags = flag_outliers(seconds, ratio)
    kept = [r for r, f in zip(rates, flags) if not f]
    if not kept:
        kept, flags = rates, [False] * len(rates)
    median = statistics.median(kept)
    return {"img_s": median, "img_s_min": min(kept), "img_s_max": max(kept),
            "spread_pct": 100 * (max(kept) - min(kept)) / median, "rates": rates,
            "outliers": [i for i, f in enumerate(flags) if f]}


# --- memory -----------------------------------------------------------------

def reset_peak_memory() -> None:
    """Resets the process' peak RSS (Linux ``clear_refs`` 5) and the GPU's peak,
    so each measurement reports its own peak."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    import tensorflow as tf
    for gpu in tf.config.list_logical_devices("GPU"):
        with contextlib.suppress(ValueError, RuntimeError):
            tf.config.experimental.reset_memory_stats(gpu.name)


def peak_memory() -> tuple[float, float | None]:
    """(peak RSS of the process in MB since the last reset, peak GPU memory MB or None)."""
    peak = None
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
    if peak is None:  # not Linux: the whole process' peak
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import tensorflow as tf
    gpus = tf.config.list_logical_devices("GPU")
    device = None
    if gpus:
        with contextlib.suppress(ValueError, RuntimeError):
            device = tf.config.experimental.get_memory_info(gpus[0].name)["peak"] / 2 ** 20
    return peak, device


def out_of_memory(err: BaseException) -> bool:
    import tensorflow as tf
    return isinstance(err, (MemoryError, tf.errors.ResourceExhaustedError))


# --- settings ---------------------------------------------------------------

def candidates(value: str, kind: str) -> list[str]:
    """What ``auto`` could choose on this device (``kind`` precision or xla)."""
    from engine import device
    if value != "auto":
        return [value]
    if device.gpus():
        precision, xla = device.resolve("auto", "auto")  # GPU rules, no measuring
        return [precision.value if kind == "precision" else xla.value]
    if kind == "precision":
        return ["float32", "mixed_bfloat16"] if device.machine()["bf16_cpu"] else ["float32"]
    return ["off", "on"]


def settings(cfg: BenchConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(every engine setting to measure, the pool the compared setting is picked
    from: what ``auto``/``auto`` chooses among, or every setting without ``auto``)."""
    chosen: list[tuple[str, str]] = []
    for precision in cfg.precisions:
        for xla in cfg.xlas:
            for pair in ((p, x) for p in candidates(precision, "precision") for x in candidates(xla, "xla")):
                if pair not in chosen:
                    chosen.append(pair)
    if "auto" not in cfg.precisions and "auto" not in cfg.xlas:
        return chosen, chosen
    precisions = candidates("auto", "precision") if "auto" in cfg.precisions else list(cfg.precisions)
    xlas = candidates("auto", "xla") if "auto" in cfg.xlas else list(cfg.xlas)
    return chosen, [(p, x) for p in precisions for x in xlas if (p, x) in chosen]


def steps_for(images: int, batch: int, least: int = 2) -> int:
    return max(least, math.ceil(images / batch))


def epochs_for(steps: int, batch: int, manifest: dict) -> int:
    """Epochs of the training pipeline one timed repeat reaches into (each
    repeat starts a fresh iterator at epoch 0; each epoch is one more graph)."""
    per_epoch = manifest["splits"]["train"]["count"] // batch
    return math.ceil(steps / per_epoch) + 1


# --- the engine's measurements ----------------------------------------------

def device_name() -> str:
    """Where the training step runs (the bench times one device)."""
    import tensorflow as tf
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else "/CPU:0"


def train_config(cfg: BenchConfig, manifest: dict, batch: int) -> TrainConfig:
    model = ModelConfig(name=cfg.model, weights="none", image_size=cfg.image_size, channels=manifest["channels"])
    return TrainConfig(model=model, batch_size=batch, augment=cfg.augment, precision="float32", xla="off")


def engine_measures(cfg: BenchConfig, folder: Path, manifest: dict, precision: str, xla: str) -> list[Measure]:
    """The engine's rows for one precision/XLA setting: one classifier built and
    compiled as training compiles it, traced once per batch shape."""
    import keras
    import tensorflow as tf

    from engine import model as model_lib, pipeline, train

    modes = [m for m in ("step", "e2e") if m in cfg.modes]
    if not modes:
        return []
    first = train_config(cfg, manifest, cfg.batch_sizes[0])
    count = manifest["splits"]["train"]["count"]
    keras.config.set_dtype_policy(precision)
    try:
        net = model_lib.build(first.model)
        classifier = train.make_classifier(first, manifest, net, max(1, count // cfg.batch_sizes[0]), xla)
    finally:
        keras.config.set_dtype_policy("float32")
    augment_fn = train.pipeline_augment_fn(cfg.augment, manifest)
    size, channels = cfg.image_size, manifest["channels"]
    rng = np.random.default_rng(0)
    measures = []
    for batch in cfg.batch_sizes:
        steps = steps_for(cfg.step_images, batch)
        if "step" in modes:
            # One batch already on the device, as the pipeline delivers it:
            # float32 when tf.data augmented it (CPU), else uint8 (the same
            # trace as e2e, so one compilation serves both).
            pixels = rng.integers(0, 256, (batch, size, size, channels), dtype=np.uint8)
            with tf.device(device_name()):
                x = tf.identity(pixels.astype(np.float32) if augment_fn is not None else pixels)
                y = tf.identity(np.arange(batch, dtype=np.int32) % 2)

            def step(classifier=classifier, x=x, y=y, steps=steps):
                def timed():
                    for _ in range(steps):
                        logs = classifier.train_on_batch(x, y)  # numpy: waits for the device
                    float(logs[0])
                return timed
            measures.append(Measure("step", batch, ENGINE, precision, xla, steps * batch, step))
        if "e2e" in modes:
            ds = pipeline.dataset(folder, "train", batch, training=True, manifest=manifest,
                                  end_epoch=epochs_for(steps, batch, manifest), augment_fn=augment_fn)

            def e2e(classifier=classifier, ds=ds, steps=steps):
                # Training's step function (fit and train_on_batch share it)
                # fed by the pipeline, each loss on the host as training's
                # per-batch callbacks have it. Not fit() per repeat: short
                # fit() calls measured ending on ~5.2 s boundaries at times, a
                # stall a run pays once. The iterator starts inside the clock
                # and is destroyed after it (joining its threads takes ~0.2 s).
                it = iter(ds)

                def timed():
                    for _ in range(steps):
                        logs = classifier.train_on_batch(*next(it))
                    float(logs[0])
                return timed
            measures.append(Measure("e2e", batch, ENGINE, precision, xla, steps * batch, e2e))
    return measures


def engine_input_measures(cfg: BenchConfig, folder: Path, manifest: dict) -> list[Measure]:
    """Records -> augmented batches on the device, no model, placed as training places it."""
    import tensorflow as tf

    from engine import pipeline, train

    in_data = train.augment_placement() == "data"
    augment_fn = train.shared_augment_fn(cfg.augment, manifest) if cfg.augment != "none" else None
    target = device_name()
    measures = []
    for batch in cfg.batch_sizes:
        steps = steps_for(cfg.input_images, batch)
        ds = pipeline.dataset(folder, "train", batch, training=True, manifest=manifest,
                              end_epoch=epochs_for(steps, batch, manifest), augment_fn=augment_fn if in_data else None)

        def prepare(ds=ds, steps=steps):
            it = iter(ds)  # started inside the clock, destroyed after it (see e2e)

            def timed():
                for i in range(steps):
                    images, _ = next(it)
                    with tf.device(target):
                        images = tf.identity(images)
                        if augment_fn is not None and not in_data:
                            images = augment_fn(images, 0, i)
                        total = tf.reduce_sum(tf.cast(images[:, 0, 0, 0], tf.float32))
                float(total)  # batches are produced in order: the last one done means all done
            return timed
        measures.append(Measure("input", batch, ENGINE, "-", "-", steps * batch, prepare))
    return measures


# --- the paper's stack ------------------------------------------------------

def baseline_available() -> bool:
    try:
        import scipy  # noqa: F401  (ImageDataGenerator's affine transforms)
        import tf_keras  # noqa: F401
    except ImportError:
        return False
    return True


def paper_model(name: str, size: int):
    """The paper's network: tf_keras InceptionV3 (or ``name`` from tf_keras'
    applications), float32, no XLA, GAP -> 256 relu -> sigmoid."""
    import tf_keras

    base = getattr(tf_keras.applications, name)(include_top=False, weights=None, input_shape=(size, size, 3))
    x = tf_keras.layers.GlobalAveragePooling2D()(base.output)
    x = tf_keras.layers.Dense(256, activation="relu")(x)
    out = tf_keras.layers.Dense(1, activation="sigmoid")(x)
    model = tf_keras.Model(base.input, out)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-4), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def paper_flow(images: Path, size: int, batch: int):
    """The paper's input: ``ImageDataGenerator`` with its augmentation over a class folder, RGB."""
    from tf_keras.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(rotation_range=20, zoom_range=0.2, shear_range=0.2,
                                   width_shift_range=0.2, height_shift_range=0.2)
    with contextlib.redirect_stdout(io.StringIO()):  # "Found N images belonging to 2 classes."
        return generator.flow_from_directory(str(images), target_size=(size, size), batch_size=batch,
                                             class_mode="binary", interpolation="nearest", seed=0)


def baseline_measures(cfg: BenchConfig, images: Path, on_note: Callable[[str], None]) -> list[Measure]:
    import tf_keras
    from tf_keras.utils import OrderedEnqueuer

    size = cfg.image_size
    modes = set(cfg.modes)
    if {"step", "e2e"} & modes and not hasattr(tf_keras.applications, cfg.model):
        on_note(f"the paper's stack has no {cfg.model}: its training rows are left out")
        modes -= {"step", "e2e"}
    model = paper_model(cfg.model, size) if {"step", "e2e"} & modes else None
    rng = np.random.default_rng(0)
    measures = []
    for batch in cfg.batch_sizes:
        flow = paper_flow(images, size, batch)
        if "input" in modes:
            steps = steps_for(cfg.input_images // 8, batch)

            def prepare_input(flow=flow, steps=steps):
                def timed():
                    for _ in range(steps):
                        x, _ = next(flow)
                    float(x[:, 0, 0, 0].sum())
                return timed
            measures.append(Measure("input", batch, BASELINE, "-", "-", steps * batch, prepare_input))
        steps = steps_for(cfg.step_images, batch)
        if "step" in modes:
            px = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
            py = (np.arange(batch) % 2).astype(np.float32)

            def prepare_step(px=px, py=py, steps=steps):
                def timed():
                    for _ in range(steps):
                        loss = model.train_on_batch(px, py)[0]
                    float(loss)
                return timed
            measures.append(Measure("step", batch, BASELINE, "float32", "off", steps * batch, prepare_step))
        if "e2e" in modes:
            def prepare_e2e(flow=flow, steps=steps):
                # What the paper's fit() runs: tf_keras' OrderedEnqueuer with
                # fit's defaults (one worker thread, a queue of 10 batches)
                # producing ImageDataGenerator batches in the background,
                # overlapped with the steps. fit() itself is not called per
                # repeat: a short fit() measured ending on a ~5.2 s boundary
                # (its enqueuer polls with a 5 s timeout), 4.7 s of steps
                # taking 5.2 s, a stall a real run pays per fit, not per few steps.
                enqueuer = OrderedEnqueuer(flow, use_multiprocessing=False, shuffle=False)
                enqueuer.start(workers=1, max_queue_size=10)
                batches = enqueuer.get()

                def timed():
                    try:
                        for _ in range(steps):
                            loss = model.train_on_batch(*next(batches))[0]
                        float(loss)
                    except BaseException:
                        enqueuer.stop()
                        raise
                    return enqueuer.stop  # after the clock: joining its thread is not a step
                return timed
            measures.append(Measure("e2e", batch, BASELINE, "float32", "off", steps * batch, prepare_e2e))
    return measures


def export_class_folder(folder: Path, manifest: dict, out: Path, limit: int = 500) -> Path:
    """The train split's images as ``out/<class>/*.png`` for ``flow_from_directory``,
    so the paper's stack reads the same images as the engine."""
    import tensorflow as tf

    from engine import records

    names = {v: k for k, v in manifest["label_map"].items()}
    if out.exists():
        shutil.rmtree(out)
    for name in names.values():
        (out / name).mkdir(parents=True)
    ds = tf.data.TFRecordDataset([str(p) for p in records.shard_paths(folder, "train", manifest)])
    ds = ds.map(records.parse_fn(manifest)).take(limit)
    for i, (image, label) in enumerate(ds):
        path = out / names[int(label)] / f"{i:05d}.png"
        path.write_bytes(tf.io.encode_png(image).numpy())
    return out


# --- the run ----------------------------------------------------------------

class HostMemoryLow(MemoryError):
    """Raised before a measurement when the host is nearly out of memory."""


def check_host_memory(floor_mb: float = LOW_MEMORY_MB) -> None:
    """On a CPU, running out of memory means the kernel kills the process, not
    an exception: a measurement is not started with less than ``floor_mb`` left."""
    available = available_memory_mb()
    if available is not None and available < floor_mb:
        raise HostMemoryLow(f"skipped: {available:,.0f} MB of host memory left (< {floor_mb:,.0f} MB)")


def run_once(measure: Measure) -> float | None:
    """One timed call of ``measure`` (its peak memory recorded); None when it
    failed, which marks the row (an out-of-memory error becomes ``OOM``)."""
    if measure.status != "ok":  # failed before, or a setting that could not be built
        return None
    try:
        check_host_memory()
        timed = measure.prepare()
        reset_peak_memory()
        start = time.perf_counter()
        teardown = timed()
        seconds = time.perf_counter() - start
        if teardown is not None:
            teardown()
    except Exception as err:  # noqa: BLE001  (any failure becomes the row's status)
        fail(measure, err)
        return None
    peak, device_peak = peak_memory()
    measure.peak_mb = max(measure.peak_mb, peak)
    if device_peak is not None:
        measure.device_peak_mb = max(measure.device_peak_mb or 0.0, device_peak)
    return seconds  # `timed` and its iterator are torn down after the clock


def warm_up(measure: Measure) -> None:
    """First call, timed apart as the compile time."""
    measure.compile_s = run_once(measure)


def time_once(measure: Measure) -> None:
    seconds = run_once(measure)
    if seconds is not None:
        measure.seconds.append(seconds)


def fail(measure: Measure, err: BaseException) -> None:
    measure.status = "OOM" if out_of_memory(err) else "error"
    measure.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
    measure.prepare = None  # drop the closures: their tensors and iterators
    gc.collect()


def run_measures(measures: list[Measure], repeats: int, on_progress: Callable[[int], None] = lambda n: None,
                 on_note: Callable[[str], None] = lambda s: None, on_round: Callable[[], object] = lambda: None,
                 ) -> None:
    """Warm-up of every measurement, then ``repeats`` interleaved rounds."""
    for m in measures:
        warm_up(m)
        on_progress(1)
        on_note(f"warm-up {m.stack} {m.mode} {m.setting} batch {m.batch}: "
                + (f"{m.compile_s:.1f} s" if m.status == "ok" else f"{m.status} ({m.error})"))
    for _ in range(repeats):
        on_round()
        for m in measures:
            time_once(m)
            on_progress(1)


def build_measures(cfg: BenchConfig, folder: Path, manifest: dict, engine_settings: list[tuple[str, str]],
                   baseline_images: Path | None, on_note: Callable[[str], None]) -> tuple[list[Measure], dict]:
    """Every measurement of the run, and the build time of each model."""
    measures: list[Measure] = []
    build_s: dict[str, float] = {}
    if "input" in cfg.modes:
        measures += engine_input_measures(cfg, folder, manifest)
    for precision, xla in engine_settings:
        start = time.perf_counter()
        try:
            measures += engine_measures(cfg, folder, manifest, precision, xla)
        except Exception as err:  # noqa: BLE001  (a setting this device cannot build is a row, not a crash)
            for batch in cfg.batch_sizes:
                for mode in ("step", "e2e"):
                    if mode in cfg.modes:
                        row = Measure(mode, batch, ENGINE, precision, xla, 0)
                        fail(row, err)
                        measures.append(row)
        build_s[f"engine {precision}/{xla}"] = time.perf_counter() - start
        on_note(f"built engine {precision}/{xla} in {build_s[f'engine {precision}/{xla}']:.1f} s")
    if baseline_images is not None:
        start = time.perf_counter()
        try:
            measures += baseline_measures(cfg, baseline_images, on_note)
        except Exception as err:  # noqa: BLE001  (as for the engine's settings)
            for batch in cfg.batch_sizes:
                for mode in cfg.modes:
                    row = Measure(mode, batch, BASELINE, "-" if mode == "input" else "float32",
                                  "-" if mode == "input" else "off", 0)
                    fail(row, err)
                    measures.append(row)
        build_s["baseline float32/off"] = time.perf_counter() - start
    return measures, build_s


def resolve_data(cfg: BenchConfig, quiet: bool) -> tuple[Path, dict]:
    from engine import records
    from engine.embedded import synthetic_records

    if cfg.records is None:
        folder, _ = synthetic_records(image_size=cfg.image_size, quiet=quiet)
    else:
        folder = cfg.records
    manifest = records.load_manifest(folder)
    if manifest["image_size"][0] != cfg.image_size:
        raise UserError(f"{folder} holds {manifest['image_size'][0]}-px images; pass --image-size "
                        f"{manifest['image_size'][0]} or build records at {cfg.image_size} px")
    count = manifest["splits"].get("train", {}).get("count", 0)
    too_big = [b for b in cfg.batch_sizes if b > count]
    if too_big:
        raise UserError(f"batch size {too_big[0]} is larger than the train split ({count} images)")
    return folder, manifest


def want_baseline(cfg: BenchConfig, on_note: Callable[[str], None]) -> bool:
    if cfg.baseline is False:
        return False
    if baseline_available():
        return True
    if cfg.baseline:
        raise UserError("--baseline needs tf_keras and scipy: pip install 'engine[baseline]'")
    on_note("no baseline: tf_keras is not installed (pip install 'engine[baseline]' to time the paper's stack)")
    return False


def run(cfg: BenchConfig, *, quiet: bool = False, on_note: Callable[[str], None] | None = None) -> dict:
    """Measures everything ``cfg`` asks for; writes ``bench.json`` and
    ``bench.png`` in ``cfg.out`` and returns the JSON content."""
    from engine import bench_report
    from engine.embedded import synthetic_root
    from engine.progress import progress

    cfg.validate()
    note = on_note or (lambda s: None)
    started = time.perf_counter()
    embedded = cfg.records is None
    folder, manifest = resolve_data(cfg, quiet)
    cfg = replace(cfg, records=folder)
    engine_settings, auto_pool = settings(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    baseline_images = None
    if want_baseline(cfg, note):
        # The embedded set's generated PNGs are its source images: the paper's
        # stack reads and resizes them as it would a downloaded folder. A
        # user's records are exported (already resized, which favours the baseline).
        baseline_images = synthetic_root() / "images" / "train" if embedded else \
            export_class_folder(folder, manifest, cfg.out / "baseline-images")
    measures, build_s = build_measures(cfg, folder, manifest, engine_settings, baseline_images, note)
    macs = model_macs(cfg, manifest)
    peaks = {p: device_peak(p) for p in sorted({m.precision for m in measures if m.mode != "input"})}

    def save(complete: bool) -> dict:
        # Written after every round too: an interrupted bench keeps what it measured.
        result = bench_report.assemble(cfg, manifest, measures, build_s, auto_pool, macs, peaks,
                                       seconds=time.perf_counter() - started, complete=complete)
        bench_report.write(result, cfg.out)
        return result

    total = len(measures) * (1 + cfg.repeats)
    with progress(total, "Benchmarking", "runs", quiet=quiet) as advance:
        run_measures(measures, cfg.repeats, advance, note, on_round=lambda: save(False))
    result = save(True)
    remember_choice(cfg, result)
    return result


def device_peak(precision: str) -> dict | None:
    """The peak of the one device the bench times (``flops.peak`` sums all GPUs)."""
    from engine import flops

    names = flops.gpu_names()
    return flops.gpu_peak(names[0], precision) if names else flops.peak(precision)


def model_macs(cfg: BenchConfig, manifest: dict) -> int:
    """Multiply-adds of one image through the engine's network (float32 build)."""
    from engine import flops, model as model_lib

    return flops.model_macs(model_lib.build(train_config(cfg, manifest, 1).model))


def remember_choice(cfg: BenchConfig, result: dict) -> None:
    """Stores the measured step rates as the CPU probe result training's ``auto``
    reads, so ``engine train`` picks what the bench found fastest without probing."""
    from engine import device

    if device.gpus() or "step" not in cfg.modes or "auto" not in cfg.precisions or "auto" not in cfg.xlas:
        return
    pool = set(result["compared_from"])
    for batch in cfg.batch_sizes:
        # Judged as the bench marks its choice: end to end when measured.
        for mode in ("e2e", "step"):
            rates = {r["setting"]: r["img_s"] for r in result["rows"] if r["stack"] == ENGINE and r["mode"] == mode
                     and r["batch"] == batch and r["status"] == "ok" and r["setting"] in pool}
            if len(rates) == len(pool):
                break
        if len(rates) == len(pool) and len(pool) > 1:
            device.store_probe(device.probe_key(f"{cfg.model}|{cfg.image_size}|{batch}", "auto", "auto"),
                               {"rates": rates, "when": time.strftime("%Y-%m-%d %H:%M") + ", engine bench"})


def estimate_seconds(cfg: BenchConfig, scale: float) -> tuple[float, int]:
    """A rough duration of the run: the reference machine's measured rates
    (benchmarks/RESULTS.md) scaled by image area and by ``scale`` (this
    machine's speed relative to it). Returns (seconds, number of measurements)."""
    engine_settings, _ = settings(cfg)
    area = (cfg.image_size / 299) ** 2
    # Training img/s of InceptionV3 at 299 px on the 2-core reference CPU
    # (XLA is slower there), and first-call seconds per batch shape.
    rates = {("float32", "off"): 10.0, ("float32", "on"): 6.5, ("mixed_bfloat16", "off"): 15.5,
             ("mixed_bfloat16", "on"): 6.3}
    compile_s = {"off": 6.0, "on": 18.0}
    seconds, count = 0.0, 0
    rounds = 1 + cfg.repeats
    step_modes = [m for m in ("step", "e2e") if m in cfg.modes]
    for batch in cfg.batch_sizes:
        if "input" in cfg.modes:
            seconds += rounds * steps_for(cfg.input_images, batch) * batch * area / (3800 * scale)
            count += 1
        for precision, xla in engine_settings:
            rate = rates.get((precision, xla), 10.0) * scale / area
            seconds += len(step_modes) * rounds * steps_for(cfg.step_images, batch) * batch / rate
            seconds += compile_s[xla] if step_modes else 0  # step and e2e share one trace
            count += len(step_modes)
    if cfg.baseline is not False and baseline_available():
        import tf_keras
        paper_modes = step_modes if hasattr(tf_keras.applications, cfg.model) else []
        for batch in cfg.batch_sizes:
            seconds += len(paper_modes) * rounds * steps_for(cfg.step_images, batch) * batch / (7.5 * scale / area)
            seconds += 5 if paper_modes else 0
            count += len(paper_modes)
            if "input" in cfg.modes:
                seconds += rounds * steps_for(cfg.input_images // 8, batch) * batch * area / (140 * scale)
                count += 1
    seconds += 30 + 3 * len(engine_settings)  # start-up, peak probe, building the models
    return seconds, count


def load(out: Path) -> dict | None:
    import json

    path = out / "bench.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is not valid JSON; run engine bench again") from None


def available_memory_mb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20 if pages else None
