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
from dataclasses import dataclass, replace
from pathlib import Path

from engine import machine, training
from engine.config import SweepConfig
from engine.data.manifest import load_manifest
from engine.errors import DamagedState, LeftRunning, RuntimeFailure, Terminated, UserError, one_line
from engine.io import FolderLock, atomic_json, atomic_write, create_once, read_json, remove_temp_files
from engine.results import runs
from engine.serialise import differences, from_json
from engine.study import estimate, hparams, inputs, paper, replicates
from engine.study import plan as plan_lib
from engine.study.plan import LOCK, Trial


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


@dataclass(frozen=True)
class Begun:
    """A begun sweep, as ``begin`` leaves it for its runners: the sweep's
    numerics, its whole trial plan (built once: stored in sweep.json),
    whether this runner's trials start over, and the images per split its
    trials see (``image_counts``)."""

    numerics: "training.Numerics"
    plan: list[Trial]
    restart: bool
    counts: dict


def shared_choices(sweep: SweepConfig, existing: dict | None, force: bool,
                   splits: dict | None) -> tuple["training.Numerics", list[Trial]]:
    """The sweep's precision, XLA and BatchNorm momentum, and its trial plan:
    made by the first runner, which creates sweep.json (only if it is still
    absent: another shard or array task may create it at the same moment),
    and adopted from sweep.json (``existing``) by every later one, whatever
    machine it runs on. The plan is generated here only: ``plan.trials``."""
    out = sweep.base.out
    path = out / "sweep.json"
    if existing and "bn_momentum" in existing.get("choice", {}):
        listed = plan_lib.stored(sweep, existing.get("trials"))
        if listed is None or splits != existing.get("splits"):
            # A sweep.json from an older engine: its plan (and the splits' records digest) stored now.
            listed = listed or plan_lib.trials(sweep)
            atomic_json(path, existing | {"trials": plan_lib.entries(listed), "splits": splits})
        return training.Numerics.from_json(existing["choice"]), listed
    listed = plan_lib.trials(sweep)
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
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "splits": splits, "trials": plan_lib.entries(listed)}
    if force or existing is not None:  # --force starts the choices over; an older sweep.json gains them
        atomic_json(path, content)
    elif not create_once(path, json.dumps(content, indent=1) + "\n"):
        # Another runner created it first: its choices and plan are the sweep's.
        theirs = json.loads(path.read_text())
        return training.Numerics.from_json(theirs["choice"]), plan_lib.stored(sweep, theirs["trials"])
    return numerics, listed


def begin(sweep: SweepConfig, force: bool = False) -> Begun:
    """Makes the sweep's folder ready for its runners: its splits drawn and
    written (``replicates.prepare``), sweep.json with the choices and the
    trial plan created or adopted (``shared_choices``; refused when it holds
    another config, unless ``force``), the TensorBoard experiment written.
    The plan's restart: with ``force``, the trials of a sweep whose config
    changed, or the one ``--trial``. The records must be resolved
    (``with_records``)."""
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
    adopted = None if starts_over else existing
    # Split replicates are drawn and written before any trial (a split that
    # cannot be drawn is one line here), after a changed config is refused;
    # a stored sweep's are adopted when its records are unchanged.
    splits = replicates.prepare(sweep, adopted)
    counts = estimate.image_counts(sweep, splits)  # every batch size checked before anything trains
    numerics, listed = shared_choices(sweep, adopted, starts_over, splits)
    hparams.write_config(out / "trials", sweep)
    return Begun(numerics, listed, force and (changed or bool(sweep.trial)), counts)


def load(out: Path) -> tuple[SweepConfig, "training.Numerics", list[Trial] | None]:
    """The sweep stored in ``out/sweep.json`` (its folder ``out``, however
    spelled here; all its trials, whichever part the runner that wrote it
    ran), its numerics and its trial plan: all a runner started from the
    folder alone needs. The plan is None in a sweep.json of an older engine:
    ``engine resume`` begins the sweep again, which stores it."""
    stored = stored_sweep(out)
    if stored is None:
        raise UserError(f"{out} is not a sweep folder (no sweep.json)")
    if "bn_momentum" not in stored.get("choice", {}):
        raise UserError(f"{out / 'sweep.json'} was written by an older engine: rerun its engine compare command")
    sweep = from_json(SweepConfig, stored["config"])
    whole = replace(sweep, shard=(0, 1), trial="", base=replace(sweep.base, out=out))
    return whole, training.Numerics.from_json(stored["choice"]), plan_lib.stored(whole, stored.get("trials"))


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
    begun = begin(sweep, force)
    return run_trials(sweep, begun.numerics, begun.plan, restart=begun.restart, on_event=on_event, trainer=trainer,
                      processes=processes)


def run_trials(sweep: SweepConfig, numerics: "training.Numerics", everything: list[Trial], *, restart: bool = False,
               on_event=None, trainer=None, processes: int = 1) -> list[dict]:
    """Runs (or resumes) this runner's trials (``plan.select``) of the begun
    sweep's plan ``everything`` with its ``numerics``; returns their results.

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
    plan = plan_lib.select(everything, sweep)
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
                    compiles = estimate.step_key(trial.config) not in compiled  # what the dashboard says
                    compiled.add(estimate.step_key(trial.config))
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


def progress(trial: Trial, event) -> "training.Progress":
    """Forwards a trial's per-batch and per-epoch progress to the dashboard."""
    return training.Progress(lambda batches: event("batch", trial, {"batch": batches}),
                             lambda epoch, logs: event("epoch", trial, {"epoch": epoch, **logs}))


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
            hparams.write_session(trial)
        result = training.train(trial.config, trainer=trainer, processes=processes, quiet=True, force=force,
                                callbacks=[progress(trial, event)], numerics=numerics, on_damage="raise")
        if force:
            hparams.write_session(trial)
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
