"""``engine bench --mode study``: a scaled study timed whole, the engine
against the paper's stack, and the full paper study projected from it.

Users run studies, not steps, so this times what they run. The engine's
trials go through ``engine compare``'s own path (``engine.study.sweep``: run
folders, per-epoch checkpoints, history, the report), all on one trainer as
a sweep's runner trains them: the learning rates at the first batch size as
one sweep, the other batch sizes at the first rate as another. With
``--parallel N`` they run again through ``engine.study.compare.run``, as
``engine compare --parallel N`` runs them (N trial processes). The paper's
stack runs each trial as the paper's script did
(``paper_stack.paper_trial``: a fresh tf_keras model, ``fit`` over
``flow_from_directory`` train and validation generators with the paper's
augmentation, float32, no XLA, the model saved at the end), on the same
299-px PNGs. Trials alternate between the stacks (E P E P ...), so a slow
spell of the shared machine hits both alike.

After each engine trial, with the same compiled step, two reference rates
are timed: end to end (the training pipeline feeding the compiled step) and
evaluation (the validation pass training runs every epoch). An engine epoch
is then judged against its compute: epoch wall time / (train images / end
to end rate + val images / evaluation rate), the loop's overhead.

Each trial's wall time is split into training steps, validation, checkpoint
and saves, and the rest (set-up, building the model, final scoring). From the
measured rates at every batch size, both stacks' time for the full paper
study (both axes: 8 distinct runs x 20 epochs at 500 train / 100 val images)
is projected for this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from engine import machine, training
from engine.bench import paper_stack
from engine.bench.protocol import ENGINE, PAPER  # the two stacks' one name each
from engine.config import BenchConfig, ModelConfig, SweepConfig, TrainConfig
from engine.data.manifest import load_manifest
from engine.errors import UserError
from engine.io import atomic_json, atomic_write
from engine.presets import PAPER_LRS
from engine.progress import progress

# The full study the projection is for: the paper's two axes.
PAPER_EPOCHS, PAPER_TRAIN, PAPER_VAL = 20, 500, 100
# Train-image counts tried, largest first, when the run is sized to its budget.
SIZES = (500, 400, 300, 250, 200, 160, 120, 100, 80, 60, 40)
# Images per end-to-end reference repeat (whole steps).
REFERENCE_IMAGES = 60
# Targets of the study ratio, per CPU kind (a GPU is judged as the BF16 kind).
TARGETS = {"bf16": (1.5, 2.0), "avx2": (1.2, 1.5)}


def numerics_of(cfg: BenchConfig) -> tuple[str, str]:
    """The engine's precision and XLA in the study: as a user runs it,
    ``auto`` precision unless one setting is given; XLA off unless one is
    given (measured slower for InceptionV3 on both CPU kinds, and its probe
    would cost minutes of the budget at 299 px)."""
    precision = cfg.precisions[0] if len(cfg.precisions) == 1 else "auto"
    xla = cfg.xlas[0] if len(cfg.xlas) == 1 else ("off" if not machine.gpus() else "auto")
    return precision, xla


def study_trials(cfg: BenchConfig) -> list[tuple[float, int]]:
    """(lr, batch) of every trial: the learning rates at the first batch size,
    then the other batch sizes at the first learning rate."""
    first = cfg.batch_sizes[0]
    return [(lr, first) for lr in cfg.lrs] + [(cfg.lrs[0], b) for b in cfg.batch_sizes[1:]]


def shape(cfg: BenchConfig, batch: int, stack: str, channels: int, precision: str, xla: str):
    if stack == PAPER:
        return training.PaceShape(cfg.model, cfg.image_size, 3, batch, "float32", "off", stack=PAPER)
    if precision == "auto" or xla == "auto":  # what auto would pick, as the training layer guesses it
        model = ModelConfig(name=cfg.model, weights="none", image_size=cfg.image_size)
        precision, xla = training.likely_numerics(TrainConfig(model=model, batch_size=batch, precision=precision,
                                                              xla=xla))
    return training.PaceShape(cfg.model, cfg.image_size, channels, batch, precision, xla)


def estimate_seconds(cfg: BenchConfig, train: int, val: int, channels: int = 1) -> float:
    """Wall time of the study bench with ``train``/``val`` images per trial,
    from the one estimator (``training.pace``)."""
    precision, xla = numerics_of(cfg)
    seconds = 60.0  # start-up, building the records and the image folders
    for i, (_, batch) in enumerate(study_trials(cfg)):
        engine = shape(cfg, batch, ENGINE, channels, precision, xla)
        # One traced step serves every batch size: only the first trial compiles.
        seconds += training.run_seconds(engine, epochs=cfg.epochs, train_images=train, val_images=val,
                                        compile_first=i == 0)
        pace = training.estimate_pace(engine)
        seconds += REFERENCE_IMAGES / pace.train_img_s + val / pace.eval_img_s + 5
        seconds += training.run_seconds(shape(cfg, batch, PAPER, 3, precision, xla), epochs=cfg.epochs,
                                        train_images=train, val_images=val)
    if cfg.parallel > 1:  # the engine's sweeps again, each as engine compare --parallel N estimates itself
        from engine.study import estimate, plan as plan_lib

        counts = {"train": train, "val": val, "channels": channels, "built": True}
        for sweep in (s for s in sweeps(cfg, None, precision, xla) if s is not None):
            seconds += estimate.estimate_seconds(sweep, plan_lib.trials(sweep), counts, cfg.parallel)[0]
    return seconds


def sized(cfg: BenchConfig, manifest: dict | None) -> tuple[int, int]:
    """Train and val images per trial: as given; a user's records' own counts;
    or, for the embedded set, the most (up to the paper's 500/100) whose
    estimated time fits ``budget_minutes``."""
    if manifest is not None:
        counts = manifest["splits"]
        return counts["train"]["count"], counts["val"]["count"]
    if cfg.train_images:
        return cfg.train_images, cfg.val_images or max(cfg.train_images // 5, 2)
    for train in SIZES:
        val = cfg.val_images or train // 5
        if estimate_seconds(cfg, train, val) <= cfg.budget_minutes * 60:
            return train, val
    return SIZES[-1], cfg.val_images or SIZES[-1] // 5


def dry_run_text(cfg: BenchConfig) -> str:
    manifest = load_manifest(cfg.records) if cfg.records else None
    train, val = sized(cfg, manifest)
    channels = manifest["channels"] if manifest else 1
    seconds = estimate_seconds(cfg, train, val, channels)
    precision, xla = numerics_of(cfg)
    trials = ", ".join(f"lr {lr:g} batch {b}" for lr, b in study_trials(cfg))
    basis = training.estimate_pace(shape(cfg, cfg.batch_sizes[0], ENGINE, channels, precision, xla)).basis
    return (f"study: {len(study_trials(cfg))} trials per stack ({trials}), {cfg.epochs} epochs, {train} train / "
            f"{val} val images at {cfg.image_size} px; engine {precision}/XLA {xla}, the paper's stack float32\n"
            f"roughly {seconds / 60:.0f} min (budget {cfg.budget_minutes:g} min; rates: {basis})")


# --- data ---------------------------------------------------------------------------

def prepare_data(cfg: BenchConfig, train: int, val: int, quiet: bool) -> tuple[Path, Path]:
    """(records folder, the same images as ``{train,val}/<class>/`` PNGs for
    the paper's stack). The embedded set: a seeded subset of its generated
    299-px PNGs, built into records here and linked for the paper's stack."""
    work = cfg.out / "study"
    if cfg.records is not None:
        manifest = load_manifest(cfg.records)
        images = work / "paper-images"
        for split in ("train", "val"):
            paper_stack.export_class_folder(cfg.records, manifest, images / split, limit=10 ** 9, split=split)
        return cfg.records, images
    from engine.study import inputs

    # A seeded, stratified subset of the generated 299-px PNGs, cached as the
    # embedded set's records are.
    folder = inputs.records_folder(None, cfg.image_size, subset=(train, val, 0), quiet=quiet)
    manifest = load_manifest(folder)
    images = work / f"paper-images-{train}-{val}"
    if not images.is_dir():
        tmp = images.with_name(images.name + ".tmp")
        for example in manifest["examples"]:
            link = tmp / example["split"] / example["class"] / Path(example["path"]).name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.symlink(example["path"], link)
        tmp.rename(images)
    return folder, images


# --- the trials ------------------------------------------------------------------------

def sweeps(cfg: BenchConfig, records: Path, precision: str, xla: str) -> tuple[SweepConfig, SweepConfig | None]:
    """The engine's two sweeps: learning rates at the first batch, other batches at the first rate."""
    base = TrainConfig(records=records, model=ModelConfig(name=cfg.model, weights="none", image_size=cfg.image_size),
                       epochs=cfg.epochs, augment=cfg.augment, precision=precision, xla=xla, bn_momentum="keras",
                       select="last", positive_class="auto")
    work = cfg.out / "study"
    lr_sweep = SweepConfig(axis="lr", preset="paper", lrs=cfg.lrs, batch_sizes=cfg.batch_sizes[:1],
                           optimizers=("adam",), base=replace(base, out=work / "engine-lr"))
    batch_sweep = None
    if len(cfg.batch_sizes) > 1:
        batch_sweep = SweepConfig(axis="batch", preset="paper", lrs=cfg.lrs[:1], batch_sizes=cfg.batch_sizes[1:],
                                  optimizers=("adam",), base=replace(base, out=work / "engine-batch"))
    return lr_sweep, batch_sweep


def engine_trial(sweep: SweepConfig, lr: float, batch: int, on_epoch: Callable[[], None], trainer) -> dict:
    """One engine trial through ``engine compare``'s path on ``trainer`` (the
    one every engine trial of the bench shares, as a sweep's runner does),
    timed, then its reference rates."""
    from engine.study import plan as plan_lib, sweep as sweep_lib
    from engine.study.collect import read_history

    trial = next(t for t in plan_lib.trials(sweep) if t.config.lr == lr and t.config.batch_size == batch)
    events = lambda kind, *_: on_epoch() if kind == "epoch" else None  # noqa: E731
    start = time.perf_counter()
    result = sweep_lib.run(replace(sweep, trial=trial.name), on_event=events, trainer=trainer)[0]
    wall = time.perf_counter() - start
    if result.get("status") != training.STATUS_DONE:
        raise UserError(f"engine trial {trial.name} ended {result.get('status')}: {result.get('reason', '')}")
    history = read_history(trial.config.out)
    choice = json.loads((sweep.base.out / "sweep.json").read_text())["choice"]
    run = training.prepare(replace(trial.config, out=None), trainer=trainer, quiet=True,
                           numerics=training.Numerics.from_json(choice))
    reference = reference_rates(run)
    return {"stack": ENGINE, "lr": lr, "batch": batch, "seconds": wall, "epochs": history,
            "final_save_seconds": result.get("final_save_seconds", 0.0), "reference": reference,
            "train_images": run.steps_per_epoch * batch, "val_images": run.manifest["splits"]["val"]["count"],
            "precision": choice["precision"], "xla": choice["xla"]}


def reference_rates(run) -> dict:
    """End-to-end and evaluation img/s of ``run``'s compiled step (already
    traced by the trial: nothing compiles here), each loss on the host."""
    batch = run.cfg.batch_size
    steps = max(2, REFERENCE_IMAGES // batch)
    it = iter(run.batches("train"))  # repeats: never runs out
    run.step(*next(it))  # the iterator's start-up and one step, outside the clock
    start = time.perf_counter()
    for _ in range(steps):
        run.step(*next(it))
    e2e = steps * batch / (time.perf_counter() - start)
    start = time.perf_counter()
    count = run.validate("val")
    evaluation = count / (time.perf_counter() - start)
    return {"e2e_img_s": e2e, "eval_img_s": evaluation}


def paper_trial(cfg: BenchConfig, images: Path, lr: float, batch: int, on_epoch: Callable[[], None]) -> dict:
    out = cfg.out / "study" / "paper" / f"lr{lr:g}_batch{batch}"
    result = paper_stack.paper_trial(images, out, model=cfg.model, size=cfg.image_size, batch=batch, lr=lr,
                                     epochs=cfg.epochs, on_epoch=on_epoch)
    return {"stack": PAPER, "lr": lr, "batch": batch, **result}


# --- analysis ----------------------------------------------------------------------------

def split_time(trial: dict) -> dict:
    """A trial's wall time as training steps, validation, checkpoint and saves, and the rest."""
    epochs = trial["epochs"]
    train = sum(e["train_seconds"] for e in epochs)
    val = sum(e["val_seconds"] for e in epochs)
    saves = sum(e.get("save_seconds") or 0.0 for e in epochs) + trial["final_save_seconds"]
    return {"seconds": trial["seconds"], "train": train, "val": val, "saves": saves,
            "rest": trial["seconds"] - train - val - saves}


def steady(trials: list[dict], key: str) -> list[float]:
    """``key`` over the epochs after each trial's first (which pays the first step)."""
    return [e[key] for t in trials for e in t["epochs"][1:] if e.get(key) is not None]


def rates(trials: list[dict]) -> dict:
    """Steady per-epoch rates and costs of one stack at one batch size."""
    train_images, val_images = trials[0]["train_images"], trials[0]["val_images"]
    train_s, val_s = steady(trials, "train_seconds"), steady(trials, "val_seconds")
    saves = steady(trials, "save_seconds") or [0.0]
    epoch_train = statistics.median(train_s)
    # The first epoch's excess over a steady one (tracing and compiling, when
    # the trial's graph was new), per trial in order.
    extras = [max(t["epochs"][0]["train_seconds"] - epoch_train, 0.0) for t in trials]
    return {"train_img_s": train_images / epoch_train, "val_img_s": val_images / statistics.median(val_s),
            "save_s": statistics.median(saves), "first_extra_s": extras,
            "train_img_s_range": [train_images / max(train_s), train_images / min(train_s)]}


def loop_overhead(trials: list[dict]) -> dict | None:
    """Engine epochs against their compute: steady epoch wall time over train
    images / end-to-end rate + val images / evaluation rate."""
    refs = [t["reference"] for t in trials if t.get("reference")]
    if not refs:
        return None
    e2e = statistics.median(r["e2e_img_s"] for r in refs)
    evaluation = statistics.median(r["eval_img_s"] for r in refs)
    ideal = trials[0]["train_images"] / e2e + trials[0]["val_images"] / evaluation
    walls = [e["train_seconds"] + e["val_seconds"] + (e.get("save_seconds") or 0.0)
             for t in trials for e in t["epochs"][1:]]
    ratio = statistics.median(walls) / ideal
    return {"e2e_img_s": e2e, "eval_img_s": evaluation, "ideal_epoch_s": ideal,
            "epoch_s": statistics.median(walls), "ratio": ratio, "ratio_range": [min(walls) / ideal,
                                                                                 max(walls) / ideal],
            "repeats": len(refs), "epochs": len(walls)}


def fixed_cost(trials: list[dict]) -> float:
    """Per-trial seconds outside the steady epochs: set-up, the first step's
    excess, final saves and scoring."""
    return statistics.median(split_time(t)["rest"] + t["final_save_seconds"] for t in trials)


def project(trials: list[dict], stack: str, first_batch: int) -> dict:
    """Both axes of the paper study (6 learning rates at the first batch, the
    other batch sizes at 1e-4; 8 distinct runs, 20 epochs, 500/100 images)
    on this machine, from the measured rates."""
    mine = [t for t in trials if t["stack"] == stack]
    batches = sorted({t["batch"] for t in mine}, key=lambda b: (b != first_batch, b))
    runs = [(lr, first_batch) for lr in PAPER_LRS] + [(1e-4, b) for b in batches if b != first_batch]
    seconds, seen = 0.0, set()
    for _, batch in runs:
        at = [t for t in mine if t["batch"] == batch]
        r = rates(at)
        epoch = PAPER_TRAIN / r["train_img_s"] + PAPER_VAL / r["val_img_s"] + r["save_s"]
        seconds += PAPER_EPOCHS * epoch + fixed_cost(at)
        extras = r["first_extra_s"]
        if stack == PAPER:  # a fresh model per trial: every trial compiles
            seconds += statistics.median(extras)
        else:  # one compiled step per batch shape, reused by the later trials at it
            seconds += extras[0] if batch not in seen else extras[-1]
        seen.add(batch)
    return {"runs": len(runs), "seconds": seconds}


def cpu_kind() -> str:
    flags = machine.cpu_flags()
    if machine.gpus() or "avx512_bf16" in flags:
        return "bf16"
    return "avx2"


def analyse(trials: list[dict], cfg: BenchConfig, report_seconds: float, parallel: dict | None = None) -> dict:
    out = {"trials": [], "per_batch": [], "projection": {}}
    for t in trials:
        out["trials"].append({"stack": t["stack"], "lr": t["lr"], "batch": t["batch"], **split_time(t)})
    totals = {s: sum(t["seconds"] for t in trials if t["stack"] == s) for s in (ENGINE, PAPER)}
    totals[ENGINE] += report_seconds
    out["study_seconds"] = totals
    out["study_ratio"] = totals[PAPER] / totals[ENGINE] if totals[ENGINE] else None
    for batch in sorted({t["batch"] for t in trials}):
        row = {"batch": batch}
        for stack in (ENGINE, PAPER):
            at = [t for t in trials if t["stack"] == stack and t["batch"] == batch]
            if at:
                row[stack] = rates(at)
        row["loop"] = loop_overhead([t for t in trials if t["stack"] == ENGINE and t["batch"] == batch])
        out["per_batch"].append(row)
    for stack in (ENGINE, PAPER):
        out["projection"][stack] = project(trials, stack, cfg.batch_sizes[0])
    out["projection"]["ratio"] = out["projection"][PAPER]["seconds"] / out["projection"][ENGINE]["seconds"]
    kind = cpu_kind()
    target, goal = TARGETS[kind]
    loops = [r["loop"]["ratio"] for r in out["per_batch"] if r.get("loop")]
    out["targets"] = [
        {"what": f"study ratio (paper's stack / engine), {kind} kind", "target": target, "goal": goal,
         "value": out["study_ratio"], "met": (out["study_ratio"] or 0) >= target},
        {"what": "engine epoch wall / its compute (end-to-end + evaluation rates), worst batch", "target": 1.05,
         "value": max(loops) if loops else None, "met": bool(loops) and max(loops) <= 1.05}]
    if parallel and parallel.get("seconds"):
        # The engine's trials as engine compare --parallel N (what --parallel
        # auto runs on a CPU before anything is measured: the cores split
        # evenly), timed whole with its reports, against the same paper trials.
        ratio = totals[PAPER] / parallel["seconds"]
        out["targets"].append({"what": f"study ratio with the engine's trials as --parallel {parallel['processes']}",
                               "target": target, "goal": goal, "value": ratio, "met": ratio >= target})
    return out


# --- the run ----------------------------------------------------------------------------

def run(cfg: BenchConfig, *, quiet: bool = False, on_note: Callable[[str], None] | None = None) -> dict:
    """Runs the study bench; writes ``bench.json``, ``bench.md`` and the two
    stacks' run folders under ``OUT/study``; returns the JSON content."""
    note = on_note or (lambda s: None)
    if not paper_stack.paper_available():
        raise UserError("--mode study times the paper's stack: pip install 'engine[paper]'")
    started = time.perf_counter()
    manifest = load_manifest(cfg.records) if cfg.records else None
    train, val = sized(cfg, manifest)
    cfg.out.mkdir(parents=True, exist_ok=True)
    records, images = prepare_data(cfg, train, val, quiet)
    precision, xla = numerics_of(cfg)
    lr_sweep, batch_sweep = sweeps(cfg, records, precision, xla)
    from engine.study import sweep as sweep_lib

    for sweep in (s for s in (lr_sweep, batch_sweep) if s is not None):
        # Every run times its trials anew; the sweep's one-time choices
        # (precision, XLA, momentum: a cached probe at most) are made here,
        # outside the clock.
        shutil.rmtree(sweep.base.out, ignore_errors=True)
        sweep_lib.begin(sweep)
    trainer = training.Trainer()
    shutil.rmtree(cfg.out / "study" / "paper", ignore_errors=True)
    plan = study_trials(cfg)
    note(f"study: {len(plan)} trials per stack, {cfg.epochs} epochs, {train} train / {val} val images, "
         f"alternating engine and paper's stack")
    trials: list[dict] = []
    with progress(2 * len(plan) * cfg.epochs, "Study bench", "epochs", quiet=quiet) as advance:
        for lr, batch in plan:
            sweep = lr_sweep if batch == cfg.batch_sizes[0] else batch_sweep
            trials.append(engine_trial(sweep, lr, batch, advance, trainer))
            trials.append(paper_trial(cfg, images, lr, batch, advance))
            save(cfg, trials, train, val, started, complete=False)
    # The engine's reports (report.md, curves, summaries), as engine compare
    # writes them after its trials: part of the engine's study time.
    from engine.study import report

    start = time.perf_counter()
    for sweep in (s for s in (lr_sweep, batch_sweep) if s is not None):
        report.write(sweep.base.out)
    reports = time.perf_counter() - start
    result = save(cfg, trials, train, val, started, complete=True, extra={"report_seconds": reports})
    if cfg.parallel > 1:
        result["parallel"] = parallel_row(cfg, lr_sweep, batch_sweep, note)
        result = save(cfg, trials, train, val, started, complete=True,
                      extra={"report_seconds": reports, "parallel": result["parallel"]})
    return result


def parallel_row(cfg: BenchConfig, lr_sweep: SweepConfig, batch_sweep: SweepConfig | None, note) -> dict:
    """The engine's trials again as ``engine compare --parallel N`` runs them
    (``compare.run``: N trial processes, thread pools split and pinned, the
    report), not interleavable, timed whole. This process is its parent, so
    the parent's start-up (TensorFlow imported) is not in the time."""
    from engine.study import compare, sweep as sweep_lib

    seconds = 0.0
    for sweep in (s for s in (lr_sweep, batch_sweep) if s is not None):
        folder = sweep.base.out.with_name(sweep.base.out.name + f"-parallel{cfg.parallel}")
        shutil.rmtree(folder, ignore_errors=True)  # every run times its trials anew
        start = time.perf_counter()
        outcome = compare.run(replace(sweep, base=replace(sweep.base, out=folder)), parallel=str(cfg.parallel),
                              quiet=True)
        seconds += time.perf_counter() - start
        sweep_lib.check_failed(outcome["results"])
    note(f"--parallel {cfg.parallel}: the engine's trials in {seconds:.0f} s")
    return {"processes": cfg.parallel, "seconds": seconds}


def save(cfg: BenchConfig, trials: list[dict], train: int, val: int, started: float, *, complete: bool,
         extra: dict | None = None) -> dict:
    from engine.bench.report import versions

    flags = sorted(f for f in machine.cpu_flags() if f.startswith(("avx", "amx", "fma")))
    result = {"kind": "study", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine.describe(),
              "cpu_kind": cpu_kind(), "cpu_flags": flags, "versions": versions(), "config": cfg.to_json(),
              "train_images": train, "val_images": val, "complete": complete,
              "seconds": round(time.perf_counter() - started, 1), "raw": trials, **(extra or {})}
    engines = [t for t in trials if t["stack"] == ENGINE]
    if engines and len(trials) == 2 * len(engines):
        result.update(analyse(trials, cfg, result.get("report_seconds", 0.0), result.get("parallel")))
    atomic_json(cfg.out / "bench.json", result)
    atomic_write(cfg.out / "bench.md", markdown(result))
    return result


def markdown(result: dict) -> str:
    """The study bench as Markdown tables."""
    lines = [f"# Study bench, {result['date']}", "",
             f"{result['machine'].get('cpu', '')} ({result['cpu_kind']} kind), {result['train_images']} train / "
             f"{result['val_images']} val images per trial" + ("" if result["complete"] else " (incomplete)"), ""]
    if "trials" not in result:
        return "\n".join(lines) + "\n"
    lines += ["| stack | lr | batch | wall s | training steps s | validation s | checkpoint and saves s | rest s |",
              "|---|---|---|---|---|---|---|---|"]
    for t in result["trials"]:
        lines.append(f"| {t['stack']} | {t['lr']:g} | {t['batch']} | {t['seconds']:.1f} | {t['train']:.1f} | "
                     f"{t['val']:.1f} | {t['saves']:.1f} | {t['rest']:.1f} |")
    s = result["study_seconds"]
    lines += ["", f"Scaled study: engine {s[ENGINE]:.0f} s (its reports included: "
                  f"{result.get('report_seconds', 0):.1f} s), paper's stack {s[PAPER]:.0f} s: "
                  f"**{result['study_ratio']:.2f}x**.", "",
              "| batch | engine train img/s | paper train img/s | engine val img/s | paper val img/s | "
              "engine e2e img/s | engine eval img/s | epoch / compute |", "|---|---|---|---|---|---|---|---|"]
    for r in result["per_batch"]:
        e, p, loop = r.get(ENGINE, {}), r.get(PAPER, {}), r.get("loop") or {}
        lines.append(f"| {r['batch']} | {e.get('train_img_s', 0):.2f} | {p.get('train_img_s', 0):.2f} | "
                     f"{e.get('val_img_s', 0):.2f} | {p.get('val_img_s', 0):.2f} | {loop.get('e2e_img_s', 0):.2f} | "
                     f"{loop.get('eval_img_s', 0):.2f} | {loop.get('ratio', float('nan')):.3f} |")
    pr = result["projection"]
    lines += ["", f"Full paper study projected on this machine ({pr[ENGINE]['runs']} runs x {PAPER_EPOCHS} epochs, "
                  f"{PAPER_TRAIN}/{PAPER_VAL} images): engine {pr[ENGINE]['seconds'] / 3600:.2f} h, paper's stack "
                  f"{pr[PAPER]['seconds'] / 3600:.2f} h: **{pr['ratio']:.2f}x**.", ""]
    for t in result["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"- {t['what']}: {value} (target {t['target']}): {'met' if t['met'] else 'MISSED'}")
    if result.get("parallel"):
        par = result["parallel"]
        lines.append(f"- engine trials as `--parallel {par['processes']}`: {par['seconds']:.0f} s with its reports "
                     f"(interleaved, one process: {s[ENGINE]:.0f} s; paper's stack {s[PAPER]:.0f} s)")
    return "\n".join(lines) + "\n"
