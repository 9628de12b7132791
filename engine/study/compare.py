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
from engine.study import estimate, launch, plan as plan_lib, report, show, sweep as sweep_lib
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
    sweep, _, _ = sweep_lib.load(folder)
    finish(run(replace(sweep, trial=trial), parallel="1", force=force, quiet=quiet))


def plan(sweep: SweepConfig, parallel: str = "auto") -> dict:
    """What ``--dry-run`` shows (``estimate.plan_summary``), with the trial
    processes ``parallel`` becomes. Builds nothing: the embedded set's
    counts are its defaults until it is built. The plan is generated here
    once, and shown; the sweep's ``begin`` stores its own."""
    counts = estimate.split_counts(sweep)
    everything = plan_lib.trials(sweep)
    processes, why = launch.parallel_count(parallel, sweep, everything, counts["channels"])
    return estimate.plan_summary(sweep, everything, counts, processes, why)


def run(sweep: SweepConfig, *, parallel: str = "auto", force: bool = False, quiet: bool = False,
        size_given: bool = False) -> dict | None:
    """Runs (or resumes) the sweep, in this process or in trial processes
    (``parallel``: see ``launch.parallel_count``), then writes its report
    unless this runner runs one ``--trial``. Returns the trials' results and
    the report (None: not written), or None when a job array's task has no
    trial (its index is past the last)."""
    sweep = sweep_lib.with_records(sweep, quiet, size_given)
    # The plan is built once, here (sweep.json stores it); everything below
    # receives it, and trial processes read it from sweep.json.
    begun = sweep_lib.begin(sweep, force)
    if (sweep := launch.resolve_trial(sweep, begun.plan)) is None:
        return None
    count, why = launch.parallel_count(parallel, sweep, begun.plan, begun.counts["channels"])
    if count > 1 and not quiet:
        show.line(f"{count} trial processes ({why})")
    listed = plan_lib.select(begun.plan, sweep)
    with Dashboard(estimate.total_steps(listed, begun.counts["train"]), quiet=quiet) as dashboard:
        if count > 1:
            results = in_processes(sweep, begun, count, quiet, dashboard)
        else:
            results = sweep_lib.run_trials(sweep, begun.numerics, begun.plan, restart=begun.restart,
                                           on_event=dashboard)
    written = None if sweep.trial else report.write(sweep.base.out)
    # A runner of the whole sweep answers for all of it; one of a shard or a
    # job array's task only for its share (other runners hold the rest).
    whole = not sweep.trial and tuple(sweep.shard) == (0, 1)
    return {"folder": sweep.base.out, "results": results, "report": written, "whole": whole}


def in_processes(sweep: SweepConfig, begun: sweep_lib.Begun, count: int, quiet: bool,
                 dashboard: Dashboard) -> list[dict]:
    """The begun sweep's trials in ``count`` trial processes: sweep.json was
    written here first (a damaged or changed sweep is one line here, not
    one per process), then each process reads it. Returns the results the
    processes reported."""
    listed = plan_lib.select(begun.plan, sweep)
    results = []

    def on_event(kind, trial, info):
        dashboard(kind, trial, info)
        if kind == "end":
            results.append(info)
    for trial in listed:
        dashboard("queued", trial, {})
    launch.run_parallel(count, sweep.base.out, restart=begun.restart, quiet=quiet, plan=listed, on_event=on_event,
                        show=lambda text: dashboard.console.print(text, highlight=False, soft_wrap=True))
    return results


def finish(outcome: dict | None) -> None:
    """The ranking printed (when the report was written); exit status 1 when
    a trial failed, 3 when a run of the whole sweep leaves trials that other
    live runners hold."""
    if outcome is None:
        return
    if outcome["report"] is not None:
        show.summary(outcome["report"], outcome["folder"])
    sweep_lib.check_failed(outcome["results"])
    if outcome["whole"]:
        sweep_lib.check_left(outcome["results"], outcome["folder"])
