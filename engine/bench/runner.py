"""``engine bench``: training and input throughput per batch size, precision and
XLA setting, side by side with the paper's Keras stack, in one process
(the protocol is ``engine.bench.protocol``; the two stacks are
``engine_stack`` and ``paper_stack``; what is written, ``report``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from engine import machine, training
from engine.bench import engine_stack, flops, paper_stack, report
from engine.bench.protocol import ENGINE, PAPER, Measure, fail, run_measures, steps_for
from engine.config import BenchConfig
from engine.data.embedded import synthetic_root
from engine.data.manifest import load_manifest
from engine.errors import UserError
from engine.progress import progress
from engine.study.inputs import records_folder


def candidates(value: str, kind: str) -> list[str]:
    """What ``value`` stands for (``kind`` precision or xla): itself, or for
    ``auto`` every setting it could choose on this device."""
    return training.auto_candidates(kind) if value == "auto" else [value]


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


def build_measures(cfg: BenchConfig, folder: Path, manifest: dict, engine_settings: list[tuple[str, str]],
                   paper_images: Path | None, on_note: Callable[[str], None]) -> tuple[list[Measure], dict]:
    """Every measurement of the run, and the build time of each model."""
    measures: list[Measure] = []
    build_s: dict[str, float] = {}
    # One trainer for every engine row, as one sweep process has: the
    # augmentation is traced once for all batch sizes, and a setting whose
    # graph is the previous one's reuses its compiled step.
    trainer = training.Trainer()
    if "input" in cfg.modes:
        measures += engine_stack.engine_input_measures(cfg, folder, manifest, trainer)
    for precision, xla in engine_settings:
        start = time.perf_counter()
        try:
            measures += engine_stack.engine_measures(cfg, folder, manifest, precision, xla, trainer)
        except Exception as err:  # noqa: BLE001  (a setting this device cannot build is a row, not a crash)
            for batch in cfg.batch_sizes:
                for mode in ("step", "e2e"):
                    if mode in cfg.modes:
                        row = Measure(mode, batch, ENGINE, precision, xla, 0)
                        fail(row, err)
                        measures.append(row)
        build_s[f"engine {precision}/{xla}"] = time.perf_counter() - start
        on_note(f"built engine {precision}/{xla} in {build_s[f'engine {precision}/{xla}']:.1f} s")
    if paper_images is not None:
        start = time.perf_counter()
        try:
            measures += paper_stack.paper_measures(cfg, paper_images, on_note)
        except Exception as err:  # noqa: BLE001  (as for the engine's settings)
            for batch in cfg.batch_sizes:
                for mode in cfg.modes:
                    row = Measure(mode, batch, PAPER, "-" if mode == "input" else "float32",
                                  "-" if mode == "input" else "off", 0)
                    fail(row, err)
                    measures.append(row)
        build_s["paper float32/off"] = time.perf_counter() - start
    return measures, build_s


def resolve_data(cfg: BenchConfig, quiet: bool) -> tuple[Path, dict]:
    folder = records_folder(cfg.records, cfg.image_size, quiet=quiet)
    manifest = load_manifest(folder)
    if manifest["image_size"][0] != cfg.image_size:
        raise UserError(f"{folder} holds {manifest['image_size'][0]}-px images; pass --image-size "
                        f"{manifest['image_size'][0]} or build records at {cfg.image_size} px")
    count = manifest["splits"].get("train", {}).get("count", 0)
    too_big = [b for b in cfg.batch_sizes if b > count]
    if too_big:
        raise UserError(f"batch size {too_big[0]} is larger than the train split ({count} images)")
    return folder, manifest


def want_paper(cfg: BenchConfig, on_note: Callable[[str], None]) -> bool:
    """Whether the paper's stack is timed: when asked, else when tf_keras is installed."""
    if cfg.paper_stack is False:
        return False
    if paper_stack.paper_available():
        return True
    if cfg.paper_stack:
        raise UserError("timing the paper's stack needs tf_keras: pip install 'engine[paper]'")
    on_note("the paper's stack is not timed: tf_keras is not installed (pip install 'engine[paper]')")
    return False


def run(cfg: BenchConfig, *, quiet: bool = False, on_note: Callable[[str], None] | None = None) -> dict:
    """Measures everything ``cfg`` asks for; writes ``bench.json`` and
    ``bench.png`` in ``cfg.out`` and returns the JSON content."""
    cfg.validate()
    note = on_note or (lambda s: None)
    started = time.perf_counter()
    embedded = cfg.records is None
    folder, manifest = resolve_data(cfg, quiet)
    cfg = replace(cfg, records=folder)
    engine_settings, auto_pool = settings(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    paper_images = None
    if want_paper(cfg, note):
        # The embedded set's generated PNGs are its source images: the paper's
        # stack reads and resizes them as it would a downloaded folder. A
        # user's records are exported (already resized, which favours the paper's stack).
        paper_images = synthetic_root() / "images" / "train" if embedded else \
            paper_stack.export_class_folder(folder, manifest, cfg.out / "paper-images")
    measures, build_s = build_measures(cfg, folder, manifest, engine_settings, paper_images, note)
    macs = model_macs(cfg, manifest)
    peaks = {p: device_peak(p) for p in sorted({m.precision for m in measures if m.mode != "input"})}

    def save(complete: bool) -> dict:
        # Written after every round too: an interrupted bench keeps what it measured.
        result = report.assemble(cfg, manifest, measures, build_s, auto_pool, macs, peaks,
                                       seconds=time.perf_counter() - started, complete=complete)
        report.write(result, cfg.out)
        return result

    total = len(measures) * (1 + cfg.repeats)
    with progress(total, "Benchmarking", "runs", quiet=quiet) as advance:
        run_measures(measures, cfg.repeats, advance, note, on_round=lambda: save(False))
    result = save(True)
    remember_choice(cfg, result, manifest["channels"])
    remember_rates(cfg, result, manifest["channels"])
    return result


def device_peak(precision: str) -> dict | None:
    """The peak of the one device the bench times (``flops.peak`` sums all GPUs)."""
    names = [gpu["name"] for gpu in machine.gpu_details()]
    return flops.gpu_peak(names[0], precision) if names else flops.peak(precision)


def model_macs(cfg: BenchConfig, manifest: dict) -> int:
    """Multiply-adds of one image through the engine's network (float32 build)."""
    from engine.model import build

    return flops.model_macs(build(engine_stack.train_config(cfg, cfg.records, manifest, 1).model))


def remember_choice(cfg: BenchConfig, result: dict, channels: int) -> None:
    """Stores the measured step rates as the CPU probe result training's ``auto``
    reads, so ``engine train`` picks what the bench found fastest without probing."""
    if machine.gpus() or "step" not in cfg.modes or "auto" not in cfg.precisions or "auto" not in cfg.xlas:
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
            shape = training.PaceShape(cfg.model, cfg.image_size, channels, batch, "auto", "auto")
            training.remember_rates(shape, rates, "engine bench")


def estimate_seconds(cfg: BenchConfig) -> tuple[float, int]:
    """A rough duration of the run from training's one estimator
    (``training.estimate_pace``: rates measured on this machine when there
    are, else a rough rate for this kind of CPU); the input rates are the
    reference machine's (benchmarks/RESULTS.md). Returns (seconds, number of
    measurements)."""
    engine_settings, _ = settings(cfg)
    area = (cfg.image_size / 299) ** 2
    seconds, count = 0.0, 0
    rounds = 1 + cfg.repeats
    step_modes = [m for m in ("step", "e2e") if m in cfg.modes]
    for batch in cfg.batch_sizes:
        if "input" in cfg.modes:
            seconds += rounds * steps_for(cfg.input_images, batch) * batch * area / 3800
            count += 1
        for precision, xla in engine_settings:
            pace = training.estimate_pace(training.PaceShape(cfg.model, cfg.image_size, 1, batch, precision, xla))
            seconds += len(step_modes) * rounds * steps_for(cfg.step_images, batch) * batch / pace.train_img_s
            seconds += pace.first_step_s if step_modes else 0  # step and e2e share one trace
            count += len(step_modes)
    if cfg.paper_stack is not False and paper_stack.paper_available():
        paper_modes = step_modes if paper_stack.has_model(cfg.model) else []
        for batch in cfg.batch_sizes:
            pace = training.estimate_pace(paper_shape(cfg, batch))
            seconds += len(paper_modes) * rounds * steps_for(cfg.step_images, batch) * batch / pace.train_img_s
            seconds += 5 if paper_modes else 0
            count += len(paper_modes)
            if "input" in cfg.modes:
                seconds += rounds * steps_for(cfg.input_images // 8, batch) * batch * area / 140
                count += 1
    seconds += 30 + 3 * len(engine_settings)  # start-up, peak probe, building the models
    return seconds, count


def paper_shape(cfg: BenchConfig, batch: int) -> "training.PaceShape":
    """The paper's stack as the time estimator knows it: float32, no XLA, RGB."""
    return training.PaceShape(cfg.model, cfg.image_size, 3, batch, "float32", "off", stack=PAPER)


def remember_rates(cfg: BenchConfig, result: dict, channels: int) -> None:
    """The measured end-to-end rates, for later time estimates (``training.pace``)."""
    for r in result["rows"]:
        if r["mode"] == "e2e" and r["status"] == "ok" and r.get("img_s"):
            shape = paper_shape(cfg, r["batch"]) if r["stack"] != ENGINE else \
                training.PaceShape(cfg.model, cfg.image_size, channels, r["batch"], r["precision"], r["xla"])
            training.record_pace(shape, train_img_s=r["img_s"], source="engine bench e2e")


def dry_run_text(cfg: BenchConfig) -> str:
    """What ``cfg`` would measure and a rough time for it on this machine."""
    seconds, count = estimate_seconds(cfg)
    engine_settings, _ = settings(cfg)
    basis = training.estimate_pace(training.PaceShape(cfg.model, cfg.image_size, 1, cfg.batch_sizes[0],
                                                      *engine_settings[0])).basis if engine_settings else "-"
    paper = "yes" if cfg.paper_stack is not False and paper_stack.paper_available() else "no"
    return (f"engine settings: {', '.join(f'{p}/{x}' for p, x in engine_settings)}; batch sizes "
            f"{', '.join(map(str, cfg.batch_sizes))}; modes {', '.join(cfg.modes)}; the paper's stack {paper}\n"
            f"{count} measurements x ({cfg.repeats} repeats + warm-up): roughly {seconds / 60:.0f} min "
            f"(training rates: {basis})")


def load(out: Path) -> dict | None:
    import json

    path = out / "bench.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is not valid JSON; run engine bench again") from None
