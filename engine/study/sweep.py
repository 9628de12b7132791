"""The paper's learning-rate and batch-size studies as a sweep of trials.

``trials`` turns a study (``SweepConfig``) into its trial list; ``begin``
makes the sweep's one-time choices (precision, XLA, BatchNorm momentum) and
writes them with the config and the trial list to ``DIR/sweep.json``, or
adopts the ``sweep.json`` another runner created; ``run_trials`` runs a
runner's trials from that, each one training run (``engine.training``) in
``DIR/trials/<name>``. A runner's trials share one ``training.Trainer``, so
a sweep traces and compiles its model once, not once per trial. A finished
trial is skipped when the sweep runs again, an interrupted one resumes from
its last epoch, and a different config on the same DIR is refused.
``load`` reads a stored sweep back: everything a trial process
(``engine.study.worker``) or ``engine resume`` runs from.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path

import keras

from engine import machine, training
from engine.config import SweepConfig, differences, from_json
from engine.data.manifest import check_batch_size, load_manifest
from engine.errors import DamagedState, LeftRunning, RuntimeFailure, Terminated, UserError, one_line
from engine.io import FolderLock, atomic_json, atomic_write, create_once, read_json, remove_temp_files
from engine.results import runs
from engine.study import inputs, paper, replicates, stats
from engine.study.plan import LOCK, Trial, trials


# --- dry run ------------------------------------------------------------------

def split_counts(sweep: SweepConfig) -> dict[str, int]:
    """Images per split of the sweep's records (and their channels; for the
    embedded set before it is built, its 500/100/100 in 1 channel). Every
    batch size is checked against the train split here, before any trial
    trains (``check_batch_size``: the one rule)."""
    records = sweep.base.records
    built = False
    if records is None:
        from engine.data.embedded import embedded_records

        records = embedded_records(sweep.base.model.image_size, sweep.base.subset)
        if records is None:
            train, val, test = sweep.base.subset or (500, 100, 100)
            return replicates.expected_counts(sweep, {"train": train, "val": val, "test": test, "channels": 1})
        built = True
    manifest = load_manifest(records)
    if sweep.splits < 2:  # (split replicates check their own train sizes: replicates.prepare)
        for batch in sweep.batch_sizes:
            check_batch_size(batch, manifest, split="train")
    counts = {s: manifest["splits"].get(s, {}).get("count", 0) for s in ("train", "val", "test")}
    counts.update(channels=manifest["channels"], built=built)
    if sweep.splits > 1:
        # The drawn splits' own sizes; one that cannot be drawn is one line
        # here, in --dry-run too, before anything is written or trained.
        return replicates.drawn_counts(replicates.draw(sweep, manifest), counts)
    return counts


# Starting the sweep's process(es): Python and TensorFlow imported, the
# sweep's choices made (~15 s measured on the 2-core AVX2 CPU).
START_UP_SECONDS = 15.0


def step_key(cfg) -> tuple:
    """What tells a trial's compiled step apart from the other trials' of a
    sweep: the parts of training's graph key that trials of one sweep vary
    (the optimizer and ``training.schedule_key``; the rest of the key is the
    sweep's, alike for all). Within a sweep the steps an epoch follow from
    the batch size, which stands for them here."""
    return (cfg.optimizer, training.schedule_key(cfg, cfg.batch_size))


def estimate_seconds(sweep: SweepConfig, trial_list: list[Trial], counts: dict[str, int],
                     processes: int = 1) -> tuple[float, str]:
    """Wall time of ``trial_list`` on this machine from the one estimator
    (``training.run_seconds``: rates measured here when there are any), with
    the basis of its rates: over ``processes`` trial processes (``--parallel``,
    trials dealt round robin as the shards are), the slowest one's time. Each
    process traces and compiles a step once per ``step_key`` (the batch
    dimension is left unknown, so other batch sizes reuse it)."""
    channels = counts.get("channels", 1)
    basis, slowest = "", 0.0
    for lane in range(processes):
        seconds, compiled = 0.0, set()
        for trial in trial_list[lane::processes]:
            cfg = trial.config
            precision, xla = training.likely_numerics(cfg)
            shape = training.PaceShape(cfg.model.name, cfg.model.image_size, channels, cfg.batch_size, precision,
                                       xla, processes=processes)
            pace = training.estimate_pace(shape)
            basis = basis or pace.basis
            seconds += training.run_seconds(shape, epochs=cfg.epochs, train_images=counts["train"],
                                            val_images=counts["val"], test_images=counts.get("test", 0),
                                            compile_first=step_key(cfg) not in compiled, pace=pace)
            compiled.add(step_key(cfg))
        slowest = max(slowest, seconds)
    if sweep.base.records is None and not counts.get("built"):
        slowest += 30.0  # generating the embedded set and building its records, once per machine
    return START_UP_SECONDS + slowest, basis


def plan_summary(sweep: SweepConfig, processes: int = 1, why: str = "one process",
                 counts: dict[str, int] | None = None) -> dict:
    """What ``--dry-run`` shows: the trials (with their index in the whole
    sweep, for sizing a job array), the trial processes that will run them
    (``processes``, and ``why``: ``launch.parallel_count``) and an estimated
    time. ``counts``: ``split_counts(sweep)`` when the caller has them."""
    everything = trials(sweep, every_shard=True)
    shown = trials(replace(sweep, trial="") if sweep.trial == "auto" else sweep)
    counts = counts or split_counts(sweep)
    seconds, basis = estimate_seconds(sweep, shown, counts, processes)
    return {"count": len(everything), "seconds": round(seconds), "basis": basis, "processes": processes,
            "processes_why": why, "disk": disk_summary(everything, counts.get("channels", 1), processes),
            "repeats": repeats_summary(sweep, counts),
            "splits": splits_summary(sweep, counts),
            "trials": [{"index": everything.index(t), "name": t.name, "setting": t.setting, "lr": t.config.lr,
                        "batch_size": t.config.batch_size, "epochs": t.config.epochs, "split": t.split,
                        "seed": t.config.seed} for t in shown]}


def splits_summary(sweep: SweepConfig, counts: dict) -> dict:
    """What --dry-run says of the splits every setting trains on."""
    if sweep.splits < 2:
        return {"count": 1, "text": "the records' own train/val split (--splits 1)"}
    how = {"kfold": f"{sweep.splits}-fold over the train+val pool",
           "holdout": f"{sweep.splits} repeated hold-outs from the train+val pool"}[sweep.split_mode]
    return {"count": sweep.splits, "mode": sweep.split_mode, "train": counts["train"], "val": counts["val"],
            "text": f"{how}, about {counts['train']} train / {counts['val']} val images each, by patient, "
                    f"stratified by class (split seed {sweep.split_seed}); written once to DIR/splits/"}


def repeats_summary(sweep: SweepConfig, counts: dict | None = None) -> dict:
    """Whether ``--repeats`` (or ``--splits``) allows any comparative verdict (a
    comparison needs 2 seeds per setting, or 2 splits), and the smallest
    difference each comparison of the report's all-pairs family then detects
    with 80 % power."""
    settings = len(sweep.lrs) * len(sweep.batch_sizes) * len(sweep.optimizers)
    pairs = settings * (settings - 1) // 2
    if settings < 2:
        return {"comparative": False, "detectable_sds": None, "text": "one setting: nothing to compare"}
    if sweep.splits > 1:
        # Compared across splits by the corrected resampled t: the per-split
        # differences' variance counts 1/K + r times (engine.study.overlap).
        from engine.study import overlap

        counts = counts or {}
        train, val = counts.get("train", 1), counts.get("val", 1)
        pool = counts.get("pool") or train + val
        ratio = overlap.correction_ratio(sweep.split_mode, sweep.splits, train, val, pool)
        sds = stats.detectable_in_sds(sweep.splits, pairs, ratio=ratio)
        warning = overlap.validated(sweep.split_mode, sweep.splits, train, val, pool)
        if sweep.splits >= 5 and ratio >= 0.5:
            bound = f"; more splits narrow it little (r = {ratio:.2g} bounds it): more images would"
        else:
            more = max(5, sweep.splits + 2)
            wider = overlap.correction_ratio(sweep.split_mode, more, train, val, pool)
            bound = f"; {more} splits would detect {stats.detectable_in_sds(more, pairs, ratio=wider):.1f}"
        return {"comparative": True, "detectable_sds": round(sds, 1), "ratio": ratio, "warning": warning,
                "text": f"{sweep.splits} splits x {sweep.repeats} seed{'s' if sweep.repeats != 1 else ''}: each of "
                        f"the {pairs} comparisons between settings (corrected resampled t over the splits, r = "
                        f"{ratio:.2g}) detects with {stats.POWER * 100:g} % power only differences of at least "
                        f"{sds:.1f} SDs of a per-split difference{bound}" + (f"; warning: {warning}" if warning
                                                                             else "")}
    if sweep.repeats < 2:
        return {"comparative": False, "detectable_sds": None,
                "text": f"one run per setting (--repeats {sweep.repeats}): no comparative verdict is possible, so "
                        f"the ranking names no best setting and every claim that compares settings says cannot "
                        f"tell; --repeats 3 trains 3 splits of the pool per setting and makes comparisons possible"}
    sds = stats.detectable_in_sds(sweep.repeats, pairs)
    return {"comparative": True, "detectable_sds": round(sds, 1),
            "text": f"{sweep.repeats} seeds on the records' own split (--splits 1): each of the {pairs} comparisons "
                    f"detects with {stats.POWER * 100:g} % power differences of at least {sds:.1f} SDs of a per-seed "
                    f"difference, on this validation set only (every seed validates on the same images)"}


def disk_summary(plan: list[Trial], channels: int, processes: int = 1) -> dict:
    """The disk a sweep's trials take: kept once finished, and what the
    checkpoints of the running ones add."""
    if not plan:
        return {"total_mb": 0.0, "trial_mb": 0.0, "checkpoint_mb": 0.0, "text": "none"}
    per_trial = training.run_disk_mb(plan[0].config, channels)
    total = per_trial["kept"] * len(plan)
    running = per_trial["checkpoint"] * min(processes, len(plan))
    what = "models, logs and checkpoint" if plan[0].config.keep_checkpoints else "models and logs"
    return {"total_mb": round(total), "trial_mb": round(per_trial["kept"]), "checkpoint_mb": round(running),
            "text": f"about {size_text(total)} ({len(plan)} trials x {size_text(per_trial['kept'])}: {what}), "
                    f"up to {size_text(running)} more while trials run (their checkpoints)"}


def size_text(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def with_records(sweep: SweepConfig, quiet: bool = False, size_given: bool = False) -> SweepConfig:
    """The sweep on its records (``inputs.records_folder``: the embedded
    set's, at the sweep's image size, built on first use when none were
    given), as an absolute path: sweep.json names them for runners started
    anywhere. Records of another size than a ``size_given`` by the user are
    an error; a preset's size adapts."""
    base = sweep.base
    records = inputs.records_folder(base.records, base.model.image_size, base.subset, quiet).resolve()
    training.check_image_size(base.model.image_size, load_manifest(records), records, size_given, quiet)
    return replace(sweep, base=replace(base, records=records))


def total_steps(plan: list[Trial], train_images: int) -> int:
    """Training steps of the trials, for the dashboard's overall bar."""
    return sum(t.config.epochs * (train_images // t.config.batch_size) for t in plan)


# --- the run ------------------------------------------------------------------

RUNNING_ELSEWHERE = "running elsewhere"


def check_existing(out: Path, sweep: SweepConfig, force: bool) -> dict | None:
    """The folder's sweep.json, refused when it holds another config (unless
    ``force``, which starts the sweep's choices over); None when there is none.
    Paths compare by their absolute form: the sweep resumes however OUT is spelled."""
    existing = stored_sweep(out, force)
    if existing is None:
        return None
    differing = changed_fields(existing, sweep)
    if differing and not force:
        raise UserError(f"{out} holds a sweep with another config (differs in: {', '.join(differing)}); "
                        f"use another --out, or --force to start over (discarding {trials_done(existing, out)})")
    return None if force else existing


def stored_sweep(out: Path, force: bool = False) -> dict | None:
    """OUT/sweep.json, checked; None when absent, or damaged and ``force`` (which writes it anew)."""
    path = out / "sweep.json"
    if not path.is_file():
        return None
    try:
        existing = read_json(path)
        if not isinstance(existing.get("config"), dict):
            raise DamagedState(path, "no config in it")
    except DamagedState as err:
        if force:
            return None
        raise DamagedState(path, err.what, "rerun with --force to write it anew (finished trials are kept)") from None
    return existing


def changed_fields(existing: dict, sweep: SweepConfig) -> list[str]:
    """What differs from a stored sweep but the part a runner takes and its
    folder (the one holding sweep.json, however spelled or mounted here)."""
    return [k for k in differences(existing["config"], sweep) if k not in ("shard", "trial", "base.out")]


def trials_done(existing: dict, out: Path) -> str:
    """How many of a stored sweep's trials finished, as ``--force`` would discard them."""
    names = [t.get("name") for t in existing.get("trials", []) if isinstance(t, dict)]
    done = [n for n in names if n and runs.finished(out / "trials" / n)]
    return f"finished trials: {len(done)} of {len(names)}"


def rerun_args(out: Path) -> list[str]:
    """The ``engine`` arguments that run the sweep stored in ``out`` again,
    from any folder: ``engine resume`` reads everything else from sweep.json
    (``engine report`` adds ``--trial NAME`` for one trial)."""
    return ["resume", str(out.resolve())]


def shared_choices(sweep: SweepConfig, force: bool, splits: dict | None = None) -> "training.Numerics":
    """The sweep's precision, XLA and BatchNorm momentum: made by the first
    runner, which creates sweep.json (only if it is still absent: another
    shard or array task may create it at the same moment), and adopted from
    sweep.json by every later one, whatever machine it runs on."""
    out = sweep.base.out
    existing = check_existing(out, sweep, force)
    if existing and "bn_momentum" in existing.get("choice", {}):
        return training.Numerics.from_json(existing["choice"])
    # Resolved once for the whole sweep (``auto`` probes the first trial's
    # shape; the BatchNorm momentum suits the trial with the fewest steps), so
    # every trial runs the same numerics and no axis is confounded by them.
    numerics = training.choose_numerics(replace(sweep.base, lr=sweep.lrs[0], batch_size=sweep.batch_sizes[0],
                                                seed=sweep.seed),
                                        largest_batch=max(sweep.batch_sizes))
    described = machine.describe()
    content = {
        "config": sweep.to_json(), "command": rerun_args(out), "machine": described, "choice": numerics.to_json(),
        "deviations": paper.deviations(sweep, load_manifest(sweep.base.records), numerics.to_json(), described),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "splits": splits,
        "trials": [{"index": i, "name": t.name, "setting": t.setting, "lr": t.config.lr,
                    "batch_size": t.config.batch_size, "optimizer": t.config.optimizer, "epochs": t.config.epochs,
                    "split": t.split, "seed": t.config.seed}
                   for i, t in enumerate(trials(sweep, every_shard=True))]}
    path = out / "sweep.json"
    if force or existing is not None:  # --force starts the choices over; an older sweep.json gains them
        atomic_json(path, content)
    elif not create_once(path, json.dumps(content, indent=1) + "\n"):
        # Another runner created it first: its choices are the sweep's.
        return training.Numerics.from_json(json.loads(path.read_text())["choice"])
    return numerics


def begin(sweep: SweepConfig, force: bool = False) -> tuple["training.Numerics", bool]:
    """Makes the sweep's folder ready for its runners: sweep.json created or
    adopted (``shared_choices``; refused when it holds another config,
    unless ``force``), the TensorBoard experiment written. Returns the
    sweep's numerics and whether this runner's trials start over: with
    ``force``, those of a sweep whose config changed, or the one ``--trial``.
    The records must be resolved (``with_records``)."""
    if sweep.base.records is None:
        raise ValueError("a sweep's records are resolved before it begins (with_records)")
    out = sweep.base.out
    out.mkdir(parents=True, exist_ok=True)
    remove_temp_files(out)
    existing = check_existing(out, sweep, force) if not force else stored_sweep(out, force)
    changed = bool(existing and changed_fields(existing, sweep))
    # The choices start over only with the config (or a damaged sweep.json):
    # one trial reset by --trial NAME --force keeps the sweep's numerics.
    starts_over = force and (changed or existing is None)
    # Split replicates are drawn and written before any trial (a split that
    # cannot be drawn is one line here), after a changed config is refused;
    # a stored sweep's are checked against the records.
    splits = replicates.prepare(sweep, None if starts_over else existing)
    numerics = shared_choices(sweep, starts_over, splits)
    write_hparams_config(out / "trials", sweep)
    return numerics, force and (changed or bool(sweep.trial))


def load(out: Path) -> tuple[SweepConfig, "training.Numerics"]:
    """The sweep stored in ``out/sweep.json`` (its folder ``out``, however
    spelled here; all its trials, whichever part the runner that wrote it
    ran) and its numerics: all a runner started from the folder alone needs."""
    stored = stored_sweep(out)
    if stored is None:
        raise UserError(f"{out} is not a sweep folder (no sweep.json)")
    if "bn_momentum" not in stored.get("choice", {}):
        raise UserError(f"{out / 'sweep.json'} was written by an older engine: rerun its engine compare command")
    sweep = from_json(SweepConfig, stored["config"])
    whole = replace(sweep, shard=(0, 1), trial="", base=replace(sweep.base, out=out))
    return whole, training.Numerics.from_json(stored["choice"])


def finished_result(trial: Trial) -> dict | None:
    """A finished trial's metrics.json; None when unfinished or damaged (its
    run rebuilds it from the saved model, or fails the trial)."""
    return runs.finished_metrics(trial.config.out)


@contextlib.contextmanager
def preemptible():
    """SIGTERM (a scheduler preempting the task) ends the process with status
    143 through the normal exits, so trial locks are released and the last
    finished epoch's checkpoint stays for the retry."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def terminate(*_) -> None:
    raise Terminated()


def run(sweep: SweepConfig, *, force: bool = False, on_event=None, trainer=None, processes: int = 1) -> list[dict]:
    """Runs (or resumes) every trial of this runner (its shard or its one
    trial), after ``begin``; returns their results. ``force`` starts over the
    trials of a sweep whose config changed, or this runner's one ``--trial``.
    See ``run_trials`` for the rest."""
    numerics, restart = begin(sweep, force)
    return run_trials(sweep, numerics, restart=restart, on_event=on_event, trainer=trainer, processes=processes)


def run_trials(sweep: SweepConfig, numerics: "training.Numerics", *, restart: bool = False, on_event=None,
               trainer=None, processes: int = 1) -> list[dict]:
    """Runs (or resumes) this runner's trials of a begun sweep with its
    ``numerics``; returns their results.

    A trial that diverges or fails (e.g. out of memory) is recorded with its
    reason and the sweep goes on. Each trial is run under a lock in its
    folder: a trial another live process is running is skipped (result
    status "running elsewhere"). ``on_event(kind, trial, info)`` drives the
    dashboard: kinds are queued, start, batch, epoch, note, end.
    ``restart`` trains the trials from scratch. Every trial trains on
    ``trainer`` (one is made when None), which keeps the compiled model for
    the next; ``processes``: the trial processes sharing this machine (for
    the rates training records). A trial whose state is damaged is recorded
    as failed, with the command that resets it.
    """
    trainer = trainer or training.Trainer()
    rerun = rerun_args(sweep.base.out)
    event = on_event or (lambda *args: None)
    # Each trial config stays as the trial list says; the sweep's precision,
    # XLA and momentum reach training as ``numerics``, and each trial's
    # metrics.json records what it ran with.
    plan = trials(sweep)
    for trial in plan:
        event("queued", trial, {})
    results, compiled = [], set()
    with preemptible():
        for trial in plan:
            result = None if restart else finished_result(trial)
            lock = None if result else FolderLock(trial.config.out / LOCK)
            if lock is not None and not lock.acquire():
                result = {"status": RUNNING_ELSEWHERE, "trial": trial.name, "holder": lock.state()[1]}
            elif lock is not None:
                try:
                    if lock.taken_over is not None:
                        event("note", trial, {"text": f"{trial.name}: took over its lock ({lock.taken_over}: "
                                                      f"resuming from its last epoch)"})
                    compiles = step_key(trial.config) not in compiled  # what the dashboard says
                    compiled.add(step_key(trial.config))
                    result = (None if restart else finished_result(trial)) or \
                        run_trial(trial, restart, numerics, event, trainer, processes, compiles, rerun)
                finally:
                    lock.release()
            event("end", trial, result)
            results.append(result)
    return results


# Exceptions that are bugs (of the engine or of code it calls), not something
# that befell one trial: every later trial would fail the same way and no
# retry cures them, so the sweep stops with the traceback instead of
# recording each trial as failed with one line.
PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, AssertionError, ImportError)


def run_trial(trial: Trial, force: bool, numerics, event, trainer, processes: int, compiles: bool,
              rerun: list[str]) -> dict:
    """Trains one trial and returns its result. A trial that fails with an
    exception is recorded as failed (metrics.json's reason: the error's line
    and the file holding its whole traceback) and the sweep goes on, unless
    the exception is one of ``PROGRAMMING_ERRORS``: that one is raised again,
    its traceback kept in the trial's folder too."""
    event("start", trial, {"compiles": compiles})
    try:
        if not force:  # (train(force=True) clears the folder: the session is written after it)
            write_hparams(trial)
        result = training.train(trial.config, trainer=trainer, processes=processes, quiet=True, force=force,
                                callbacks=[EpochEvents(trial, event)], numerics=numerics, on_damage="raise")
        if force:
            write_hparams(trial)
        # An earlier attempt's traceback does not describe a finished trial.
        (trial.config.out / runs.FAILURE).unlink(missing_ok=True)
        return result
    except UserError:
        raise
    except DamagedState as err:  # skipped, listed as failed with the way out; the sweep goes on
        result = {"status": "failed", "reason": f"damaged state: {err}; to start it over: "
                                                f"engine {shlex.join(rerun)} --trial {trial.name} --force"}
    except Exception as err:  # noqa: BLE001 - a failed trial (e.g. OOM) must not stop the sweep; a bug does
        kept = keep_traceback(trial)
        if isinstance(err, PROGRAMMING_ERRORS):
            raise
        line = one_line(err) if isinstance(err, OSError) else str(err).splitlines()[0][:300] if str(err) else ""
        result = {"status": "failed", "reason": f"{type(err).__name__}{f': {line}' if line else ''}{kept}"}
    trial.config.out.mkdir(parents=True, exist_ok=True)
    runs.write_metrics(trial.config.out, result)
    return result


def keep_traceback(trial: Trial) -> str:
    """Writes the traceback of the exception being handled to the trial's
    ``runs.FAILURE``; returns the words of its reason that name the file
    (relative to the sweep folder), or "" when it could not be written."""
    try:
        trial.config.out.mkdir(parents=True, exist_ok=True)
        atomic_write(trial.config.out / runs.FAILURE, traceback.format_exc())
    except OSError:
        # The failure may be this very disk's (full, gone): the trial is still
        # recorded with its one line, and metrics.json's write says the rest.
        return ""
    return f"; traceback in trials/{trial.name}/{runs.FAILURE}"


def check_left(results: list[dict], out: Path) -> None:
    """Raises ``LeftRunning`` (exit status 3) for trials that other live
    runners hold, unfinished: a run of the whole sweep has not ended it then
    (a runner of one shard or ``--trial`` leaves them to their holders)."""
    held = [r for r in results if r.get("status") == RUNNING_ELSEWHERE]
    if held:
        shown = "; ".join(f"{r.get('trial', '?')} ({r.get('holder', 'another runner')})" for r in held[:3])
        more = f"; and {len(held) - 3} more" if len(held) > 3 else ""
        count = f"{len(held)} trials of this sweep are" if len(held) > 1 else "1 trial of this sweep is"
        raise LeftRunning(f"{count} held unfinished by other live runners: {shown}{more}; the report covers what is "
                          f"finished: rerun this command once they end (engine report {out} shows them)")


def check_failed(results: list[dict]) -> None:
    """Raises for failed trials (exit status 1: worth retrying, as a job
    array's task or a scheduler's retry would), naming the first's reason."""
    failed = [r for r in results if r.get("status") == "failed"]
    if failed:
        raise RuntimeFailure(f"{len(failed)} trial{'s' if len(failed) > 1 else ''} failed ({failed[0]['reason']})"
                             + ("" if "rerun" in failed[0]["reason"] else "; rerun the same command to retry"))


def write_hparams_config(folder: Path, sweep: SweepConfig) -> None:
    """The sweep's experiment for TensorBoard's HParams dashboard (``--logdir DIR/trials``)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    params = [hp.HParam("lr", hp.Discrete(sorted(set(sweep.lrs)))),
              hp.HParam("batch_size", hp.Discrete(sorted(set(sweep.batch_sizes)))),
              hp.HParam("optimizer", hp.Discrete(sorted(set(sweep.optimizers)))),
              hp.HParam("seed", hp.IntInterval(sweep.seed, sweep.seed + sweep.repeats - 1))]
    if sweep.splits > 1:
        params.append(hp.HParam("split", hp.IntInterval(1, sweep.splits)))
    metrics = [hp.Metric("epoch_loss", group="validation", display_name="val loss"),
               hp.Metric("epoch_accuracy", group="validation", display_name="val accuracy"),
               hp.Metric("epoch_auc", group="validation", display_name="val AUC"),
               hp.Metric("epoch_loss", group="train", display_name="train loss")]
    folder.mkdir(parents=True, exist_ok=True)
    with tf.summary.create_file_writer(str(folder)).as_default():
        hp.hparams_config(hparams=params, metrics=metrics)


def write_hparams(trial: Trial) -> None:
    """The trial's settings as an HParams session, beside its Keras TensorBoard logs."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    values = {"lr": trial.config.lr, "batch_size": trial.config.batch_size,
              "optimizer": trial.config.optimizer, "seed": trial.config.seed}
    if trial.split:
        values["split"] = trial.split
    with tf.summary.create_file_writer(str(trial.config.out / "tb")).as_default():
        hp.hparams(values, trial_id=trial.name)


class EpochEvents(keras.callbacks.Callback):
    """Forwards a trial's per-batch and per-epoch progress to the dashboard."""

    def __init__(self, trial: Trial, event):
        super().__init__()
        self.trial, self.event = trial, event

    def on_train_batch_end(self, batch, logs=None):
        self.event("batch", self.trial, {"batch": batch + 1})

    def on_epoch_end(self, epoch, logs=None):
        self.event("epoch", self.trial, {"epoch": epoch + 1, **(logs or {})})
