"""A sweep's results as rows, one per setting (``summarise``): each trial's
history and metrics as ``engine.results`` reads them (``collect``), what
became of each trial (finished, diverged, failed, running, missing; its
rerun command), and per setting the ranking statistic, the snapshot's
validation numbers, the test metrics and the run times, each as a mean and
SD over its finished runs. ``engine.study.ranking`` ranks these rows and
``engine.study.report`` writes them.

One failure policy: a run that diverged numerically counts against its
setting (intention to treat: it takes the sweep's worst statistic, so a
setting cannot lead by losing its bad runs); a run that failed for any other
reason is missing, listed with its reason and rerun command, never ranked.
``rounded`` holds every float of summary.csv/summary.json to ``SIGNIFICANT``
significant digits. Reads files only: no TensorFlow.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.config import SweepConfig
from engine.errors import DamagedState
from engine.io import FolderLock
from engine.results import runs as run_files
from engine.results.runs import FINISHED
from engine.serialise import from_json
from engine.study import plan as plan_lib, replicates, snapshot
from engine.study.plan import LOCK


# Significant digits of every float in summary.csv and summary.json: more than
# any run's measurement carries, and few enough to hide float noise.
SIGNIFICANT = 6
# No setting learned when every setting's val AUC (last epoch, mean over its
# finished runs) is at most this: 0.5 is guessing, and on a validation set of
# ~100 images an AUC of 0.6 is within noise of it.
CHANCE_AUC = 0.6


def read_history(run: Path) -> list[dict]:
    """A trial's history as ``engine.results.runs`` reads and checks it (no
    file: no epochs yet), with a non-finite value (a diverging epoch) as
    None: no number to rank or plot."""
    if not run_files.history_path(run).is_file():
        return []
    return [{k: (v if v is None or math.isfinite(v) else None) for k, v in row.items()}
            for row in run_files.read_history(run)]


def collect(folder: Path) -> dict:
    """Per setting: the trials' histories and metrics, in sweep order."""
    sweep = json.loads((folder / "sweep.json").read_text())
    # Every shard's trials, from the plan sweep.json stores (a sweep.json of
    # an older engine has none: its config's plan): a report merges what
    # the shards wrote.
    cfg = from_json(SweepConfig, sweep["config"])
    here = replace(cfg, base=replace(cfg.base, out=folder))
    settings: dict[str, list[dict]] = {}
    for trial in plan_lib.stored(here, sweep.get("trials")) or plan_lib.trials(here):
        run = trial.config.out
        metrics, history = None, []
        try:
            metrics = run_files.read_metrics(run)
            history = read_history(run)
        except DamagedState as err:
            # Missing, not ranked: the failure policy for anything but numerical divergence.
            metrics, history = {"status": "failed", "reason": str(err)}, []
        settings.setdefault(trial.setting, []).append(
            {"name": trial.name, "seed": trial.config.seed, "split": trial.split, "history": history,
             "metrics": metrics, "config": trial.config, "sweep_lr": trial.lr})
    return {"sweep": cfg, "settings": settings, "machine": sweep.get("machine", {}),
            "choice": sweep.get("choice", {}), "deviations": sweep.get("deviations"),
            "command": sweep.get("command"), "splits": sweep.get("splits")}


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def status_of(run: dict) -> str:
    return run["metrics"]["status"] if run["metrics"] else "queued" if not run["history"] else "running"


def run_statistic(run: dict) -> float | None:
    return snapshot.statistic(run)


def ranked(runs: list[dict]) -> list[dict]:
    """The runs that enter the ranking: done, with a finite ranking statistic
    (``engine.results.runs.finished`` is a run folder's own "finished": done
    or diverged)."""
    return [r for r in runs if status_of(r) == "done" and r["history"] and run_statistic(r) is not None]


def diverged(runs: list[dict]) -> list[dict]:
    """The runs that diverged numerically: status diverged, or done with a
    non-finite val loss among the epochs the statistic averages."""
    return [r for r in runs if status_of(r) == "diverged"
            or status_of(r) == "done" and r["history"] and run_statistic(r) is None]


def worst_statistic(data: dict) -> float | None:
    """The largest statistic any finished run of the sweep reached: what a diverged run counts as."""
    values = [run_statistic(r) for runs in data["settings"].values() for r in ranked(runs)]
    return max(values, default=None)


def unfinished(run: dict) -> str | None:
    """What a run without a result is doing: "running" (a live runner holds
    its lock: alive on this host, or a fresh heartbeat from another),
    "interrupted" (epochs recorded, nobody running it), "not started"; None
    for a run with a result."""
    if run["metrics"]:
        return None
    if FolderLock(run["config"].out / LOCK).held_elsewhere():
        return "running"
    # A folder with its config was started: killed before its first epoch ended.
    return "interrupted" if run["history"] or (run["config"].out / run_files.CONFIG).is_file() else "not started"


def flags(runs: list[dict]) -> str:
    """"k of n diverged", "k of n failed (reason)", "k of n interrupted", ...
    for the runs that did not finish."""
    out = []
    left = [unfinished(r) for r in runs]
    for state in ("running", "interrupted", "not started"):
        if state in left:
            out.append(f"{left.count(state)} of {len(runs)} {state}")
    for status in ("diverged", "failed"):
        these = [r for r in runs if status_of(r) == status]
        if these:
            reasons = sorted({r["metrics"].get("reason", "") for r in these} - {""})
            out.append(f"{len(these)} of {len(runs)} {status}" + (f" ({'; '.join(reasons)})" if reasons else ""))
    done = [r for r in runs if status_of(r) == "done"]
    nonfinite = len(done) - len(ranked(done))
    if nonfinite:
        out.append(f"{nonfinite} of {len(runs)} ended with a non-finite val loss")
    return ", ".join(out)


def measured_seconds(run: dict) -> tuple[float, float | None]:
    """(seconds, compile) of one run: the seconds of its epochs (training and
    validation) less the one-off tracing and compilation, and that one-off;
    compile None when the history does not record its first steps.

    A training session's first epoch records its first step
    (``first_step_seconds``: tracing, compiling and one batch; a trial that
    reuses its process's compiled step pays about one batch). The compile
    time is that step less one ordinary step at the epoch's rate
    (``images_per_second`` leaves the first step out), summed over the
    sessions of a resumed run."""
    history = run["history"]
    total = sum(h.get("seconds") or 0.0 for h in history)
    firsts = [h for h in history if h.get("first_step_seconds") is not None]
    if not firsts:
        return total, None
    batch = getattr(run.get("config"), "batch_size", None)
    compile_seconds = 0.0
    for h in firsts:
        step = batch / h["images_per_second"] if batch and h.get("images_per_second") else 0.0
        compile_seconds += max(h["first_step_seconds"] - step, 0.0)
    return max(total - compile_seconds, 0.0), compile_seconds


def rounded(value, digits: int = SIGNIFICANT):
    """``value`` with every float rounded to ``digits`` significant digits,
    through dicts, lists and tuples (as lists) and numpy scalars and arrays;
    0.6499999999999999 becomes 0.65. Non-finite floats stay as they are."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return float(f"{value:.{digits}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def chance(rows: list[dict]) -> dict:
    """Whether no setting learned: every setting with a finished run has a val
    AUC (its last epoch's, mean over its finished runs: the table's val AUC
    column) of at most ``CHANCE_AUC``. A setting whose val AUC is undefined
    (one class in validation) leaves the rule silent: it cannot say
    "everywhere"."""
    aucs = {r["setting"]: r["val_auc"] for r in rows if r["repeats_done"]}
    fired = bool(aucs) and all(v is not None and v <= CHANCE_AUC for v in aucs.values())
    rule = f"every setting's val AUC (at the snapshot, mean over its finished runs) is at most {CHANCE_AUC:g}"
    out = {"no_setting_learned": fired, "rule": rule, "threshold": CHANCE_AUC, "val_auc": aucs, "text": ""}
    if fired:
        top = max(aucs, key=aucs.get)
        out["text"] = (f"**No setting learned**: {rule} (0.5 is guessing; highest here: {top} {aucs[top]:.3f}). "
                       f"Nothing here compares settings.")
    return out


def summarise(data: dict) -> list[dict]:
    """One row per setting: the ranking statistic and the final metrics, means
    and std over its finished repeats, and what happened to the others."""
    rows, worst = [], worst_statistic(data)
    for setting, runs in data["settings"].items():
        done = ranked(runs)
        row = {"setting": setting, "lr": runs[0]["config"].lr, "batch_size": runs[0]["config"].batch_size,
               "sweep_lr": runs[0].get("sweep_lr", runs[0]["config"].lr), "epochs": runs[0]["config"].epochs,
               "repeats_done": len(done), "repeats": len(runs), "statuses": [status_of(r) for r in runs],
               "flags": flags(runs),
               "bn_momentum": sorted({r["metrics"]["bn_momentum"] for r in runs
                                      if r["metrics"] and r["metrics"].get("bn_momentum") is not None})}
        # Intention to treat: a diverged run ranks last at its seed; a failed one is missing.
        by_run: dict[int, dict[int, float]] = {}
        counted = [(r, worst) for r in diverged(runs) if worst is not None] + [(r, run_statistic(r)) for r in done]
        for r, value in counted:
            by_run.setdefault(r.get("split", 0), {})[r["seed"]] = value
        row["statistic_by_run"] = by_run  # split (0: the records' own) -> seed -> statistic
        # The unit of the tests: the seed on one split; with split replicates
        # the split, each the mean of its seeds (replicates.units).
        row["statistic_by_unit"] = replicates.units(by_run)
        row["statistic"], row["statistic_std"] = mean_std(list(row["statistic_by_unit"].values()))
        row["diverged_counted"] = sum(map(len, by_run.values())) - len(done)
        # Every validation number at the one declared snapshot (engine.study.snapshot).
        for key in ("val_loss", "val_accuracy", "loss", "accuracy", "val_auc", "val_sensitivity", "val_specificity"):
            row[key], row[f"{key}_std"] = mean_std([snapshot.value(r, key) for r in done])
        best = [min(r["history"], key=lambda h: h["val_loss"] if h.get("val_loss") is not None else math.inf)
                for r in done]
        # The minimum over a run's epochs: optimistic, and labelled so.
        row["lowest_val_loss"], row["lowest_val_loss_std"] = mean_std([b.get("val_loss") for b in best])
        # An epoch is a whole number: each run's, and their median (the lower middle one for an even count).
        row["best_epochs"] = [int(b["epoch"]) for b in best]
        row["best_epoch"] = statistics.median_low(row["best_epochs"]) if best else None
        for metric in ("accuracy", "sensitivity", "specificity", "auc"):
            row[f"test_{metric}"], row[f"test_{metric}_std"] = mean_std(
                [r["metrics"].get("test", {}).get("metrics", {}).get(metric) for r in done])
        row["test_interval_first_run"] = {m: done[0]["metrics"].get("test", {}).get("intervals", {}).get(m)
                                          for m in ("accuracy", "sensitivity", "specificity", "auc")} if done else None
        row["model_scored"] = sorted({r["metrics"].get("model", "") for r in done} - {""})
        timing = [measured_seconds(r) for r in done]
        row["train_seconds"], row["train_seconds_std"] = mean_std([t[0] for t in timing])
        compiles = [t[1] for t in timing if t[1] is not None]
        # Only the trials that compiled pay the one-off: the most any run paid, not a mean diluted by the others.
        row["compile_seconds"] = max(compiles, default=None)
        row["compile_seconds_by_run"] = [t[1] for t in timing]
        row["images_per_second"], _ = mean_std([statistics.median(h["images_per_second"] for h in r["history"])
                                                for r in done])
        rows.append(row)
    return rows


def trial_states(data: dict) -> list[dict]:
    """Every trial's state: finished (done or diverged), running (its lock has
    a live heartbeat), failed, or missing (never started, or interrupted);
    the failed and missing ones with the command that reruns them."""
    import shlex

    states = []
    for runs in data["settings"].values():
        for r in runs:
            status, left = status_of(r), unfinished(r)
            if status in FINISHED:
                state, detail = "finished", status
            elif left == "running":
                lock = FolderLock(r["config"].out / LOCK)
                state, detail = "running", f"{len(r['history'])} epochs done; {lock.state()[1]}"
            elif status == "failed":
                state, detail = "failed", r["metrics"].get("reason", "")
            else:
                state = "missing"
                epochs = f"after {len(r['history'])} epochs" if r["history"] else "before its first epoch"
                detail = f"interrupted {epochs}: rerun the command" if left == "interrupted" else "not started"
            entry = {"name": r["name"], "state": state, "detail": detail}
            if state in ("failed", "missing"):
                entry["rerun"] = ("engine " + shlex.join([*data["command"], "--trial", r["name"]])
                                  if data.get("command") else f"the sweep's command with --trial {r['name']}")
            states.append(entry)
    return states


def states_text(states: list[dict]) -> list[str]:
    counts = {k: sum(1 for s in states if s["state"] == k) for k in ("finished", "running", "failed", "missing")}
    lines = [f"{len(states)} trials: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n) + "."]
    for s in states:
        if s["state"] != "finished":
            lines.append(f"- {s['name']}: {s['state']} ({s['detail']})"
                         + (f"; rerun: `{s['rerun']}`" if s.get("rerun") else ""))
    return lines
