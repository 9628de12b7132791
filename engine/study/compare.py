"""``engine compare``, ``engine resume`` and ``engine report``: a sweep run
whole, from its options or from its folder, and reported.

The process the user starts resolves the sweep once: its records (built,
for the embedded set, on first use) checked against every batch size and
image size, then precision, XLA and BatchNorm momentum chosen and written
with the config and the trial list to ``DIR/sweep.json`` (``sweep.begin``)
before any trial trains. The trials then run in this process, on one
trainer, or in N trial processes (``--parallel N``: ``launch.run_parallel``
starts ``engine.study.worker`` on the folder, and each reads the sweep from
sweep.json); their events drive one dashboard here. The report is written
once they have finished (not by a runner of one ``--trial``: several run at
once), and a failed trial makes the exit status 1.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine.config import SweepConfig
from engine.study import launch, report, show, sweep as sweep_lib
from engine.study.dashboard import Dashboard


def compare(sweep: SweepConfig, *, parallel: str = "auto", dry_run: bool = False, as_json: bool = False,
            force: bool = False, quiet: bool = False, size_given: bool = False) -> None:
    """``engine compare``: the plan (``dry_run``, as JSON with ``as_json``),
    or the sweep run, reported and its ranking printed. ``size_given``: the
    user set the image size, so records of another size are an error."""
    launch.check_parallel(parallel, sweep)  # a bad value fails before any records are built
    if dry_run:
        show.plan(plan(sweep, parallel), as_json)
        return
    finish(run(sweep, parallel=parallel, force=force, quiet=quiet, size_given=size_given))


def resume(folder: Path, *, trial: str = "", force: bool = False, quiet: bool = False) -> None:
    """``engine resume``: the sweep stored in ``folder`` run again from its
    sweep.json (every unfinished trial, or the one ``trial``; ``force``
    starts that trial over), then reported as ``engine compare`` does."""
    sweep, _ = sweep_lib.load(folder)
    finish(run(replace(sweep, trial=trial), parallel="1", force=force, quiet=quiet))


def plan(sweep: SweepConfig, parallel: str = "auto") -> dict:
    """What ``--dry-run`` shows (``sweep.plan_summary``), with the trial
    processes ``parallel`` becomes. Builds nothing: the embedded set's
    counts are its defaults until it is built."""
    counts = sweep_lib.split_counts(sweep)
    processes, why = launch.parallel_count(parallel, sweep, counts["channels"])
    return sweep_lib.plan_summary(sweep, processes, why, counts)


def run(sweep: SweepConfig, *, parallel: str = "auto", force: bool = False, quiet: bool = False,
        size_given: bool = False) -> dict | None:
    """Runs (or resumes) the sweep, in this process or in trial processes
    (``parallel``: see ``launch.parallel_count``), then writes its report
    unless this runner runs one ``--trial``. Returns the trials' results and
    the report (None: not written), or None when a job array's task has no
    trial (its index is past the last)."""
    if (sweep := launch.resolve_trial(sweep)) is None:
        return None
    sweep = sweep_lib.with_records(sweep, quiet, size_given)
    counts = sweep_lib.split_counts(sweep)  # every batch size checked before anything trains
    count, why = launch.parallel_count(parallel, sweep, counts["channels"])
    if count > 1 and not quiet:
        show.line(f"{count} trial processes ({why})")
    listed = sweep_lib.trials(sweep)
    with Dashboard(sweep_lib.total_steps(listed, counts["train"]), quiet=quiet) as dashboard:
        if count > 1:
            results = in_processes(sweep, count, force, quiet, dashboard)
        else:
            results = sweep_lib.run(sweep, force=force, on_event=dashboard)
    written = None if sweep.trial else report.write(sweep.base.out)
    # A runner of the whole sweep answers for all of it; one of a shard or a
    # job array's task only for its share (other runners hold the rest).
    whole = not sweep.trial and tuple(sweep.shard) == (0, 1)
    return {"folder": sweep.base.out, "results": results, "report": written, "whole": whole}


def in_processes(sweep: SweepConfig, count: int, force: bool, quiet: bool, dashboard: Dashboard) -> list[dict]:
    """The sweep's trials in ``count`` trial processes: sweep.json is
    written here first (a damaged or changed sweep is one line here, not
    one per process), then each process reads it. Returns the results the
    processes reported."""
    _, restart = sweep_lib.begin(sweep, force)
    listed = sweep_lib.trials(sweep)
    results = []

    def on_event(kind, trial, info):
        dashboard(kind, trial, info)
        if kind == "end":
            results.append(info)
    for trial in listed:
        dashboard("queued", trial, {})
    launch.run_parallel(count, sweep.base.out, restart=restart, quiet=quiet, plan=listed, on_event=on_event,
                        show=lambda text: dashboard.console.print(text, highlight=False, soft_wrap=True))
    return results


def finish(outcome: dict | None) -> None:
    """The ranking printed (when the report was written); exit status 1 when
    a trial failed, 3 when a run of the whole sweep leaves trials that other
    live runners hold."""
    if outcome is None:
        return
    if outcome["report"] is not None:
        show.ranking(outcome["report"], outcome["folder"])
    sweep_lib.check_failed(outcome["results"])
    if outcome["whole"]:
        sweep_lib.check_left(outcome["results"], outcome["folder"])
