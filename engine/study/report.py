"""A sweep's summary, ranking, plots and report (``engine compare``, ``engine report DIR``).

Ranking uses validation only; test metrics are reported and never used to
choose. The ranking statistic and the comparisons are ``engine.study.stats``.
One failure policy: a run that diverged numerically counts against its
setting (intention to treat: it takes the sweep's worst statistic, so a
setting cannot lead by losing its bad runs); a run that failed for any other
reason is missing, listed with its reason and rerun command, never ranked. The
report also checks the paper's claims and lists the deviations from its setup
(``engine.study.paper``); its figures are drawn by ``engine.study.plots``.

Numbers are written as far as they can be trusted: a table shows a mean to the
decimal its SD over runs allows, and ``summary.csv``/``summary.json`` hold
every float to ``SIGNIFICANT`` significant digits (``rounded``), so the files
carry what the runs measured, not binary float noise.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np

from engine.config import SweepConfig, from_json
from engine.errors import DamagedState, UserError
from engine.io import FolderLock, atomic_json, atomic_open, atomic_write
from engine.results import runs as run_files
from engine.results.runs import FINISHED
from engine.study import clinical, equivalence, overlap, paper, plots, replicates, snapshot, stats
from engine.study.numbers import decimals
from engine.study.stats import ALPHA, POWER, TAIL
from engine.study.plan import LOCK, trials

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
    # Every shard's trials: a report merges what the shards wrote.
    cfg = from_json(SweepConfig, sweep["config"])
    settings: dict[str, list[dict]] = {}
    for trial in trials(cfg, every_shard=True):
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
             "metrics": metrics, "config": trial.config, "sweep_lr": trial.sweep_lr})
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


def finished(runs: list[dict]) -> list[dict]:
    """The runs that finished with a finite ranking statistic."""
    return [r for r in runs if status_of(r) == "done" and r["history"] and run_statistic(r) is not None]


def diverged(runs: list[dict]) -> list[dict]:
    """The runs that diverged numerically: status diverged, or done with a
    non-finite val loss among the epochs the statistic averages."""
    return [r for r in runs if status_of(r) == "diverged"
            or status_of(r) == "done" and r["history"] and run_statistic(r) is None]


def worst_statistic(data: dict) -> float | None:
    """The largest statistic any finished run of the sweep reached: what a diverged run counts as."""
    values = [run_statistic(r) for runs in data["settings"].values() for r in finished(runs)]
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
    nonfinite = len(done) - len(finished(done))
    if nonfinite:
        out.append(f"{nonfinite} of {len(runs)} ended with a non-finite val loss")
    return ", ".join(out)


def run_seconds(run: dict) -> tuple[float, float | None]:
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
        done = finished(runs)
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
        timing = [run_seconds(r) for r in done]
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


def statistic_text(select: str, splits: bool) -> str:
    """What the ranking compares, and by which test."""
    what = ("each run's lowest validation loss (the minimum of its epochs: optimistic)" if select == "best" else
            f"the mean validation loss of each run's last {TAIL} epochs (of all epochs when fewer)")
    unit = ("the split: a setting's statistic on a split is the mean over its seeds there, settings are paired by "
            "split and compared by the corrected resampled t (Nadeau and Bengio 2003), whose factor r assumes "
            f"that {overlap.SHARE:.0%} of the setting x split interaction comes from the training images two "
            "splits share (docs/overlap.md)" if splits else
            "the seed: settings are paired by seed (the sweep gives each the same seeds), by a paired t, or "
            "Welch's t where they share fewer than 2; all seeds share one validation set")
    return (f"{what}, averaged over a setting's runs. A run that diverged counts as the sweep's worst finished "
            f"run, so it ranks last at its seed (intention to treat); a run that failed otherwise is missing, "
            f"never ranked. The unit of the tests is {unit}. Every setting against every other, Holm-adjusted "
            f"over the pairs of this sweep: when all its settings are equal, and the test's model holds, the "
            f"chance of calling any of them worse is at most {ALPHA}. Intervals are simultaneous 95 % intervals "
            f"(Bonferroni over the pairs), so they hold for a leader picked from the data. detectable = the "
            f"smallest true difference a comparison finds with {POWER * 100:g} % power at its spread (two-sided, "
            f"at the Bonferroni level {ALPHA} / pairs, Holm's first step)")


def seeds_text(row: dict) -> str:
    runs = sum(map(len, row.get("statistic_by_run", {}).values())) or len(row["statistic_by_unit"])
    splits = len(row["statistic_by_unit"]) if set(row.get("statistic_by_run", {})) - {0} else 0
    return (f"{runs} run{'s' if runs != 1 else ''}" + (f" on {splits} split{'s' if splits != 1 else ''}" if splits
                                                       else "")
            + (f"; {row['flags']}" if row["flags"] else ""))


def method_text(paired: bool, units: int, ratio: float, splits: bool) -> str:
    """The test a comparison used, in the report's words."""
    if not splits:
        return f"paired t over {units} shared seeds" if paired else "Welch t"
    if not paired:
        return f"Welch t, corrected for overlapping splits (r = {ratio:.2g})"
    return f"corrected resampled t over {units} shared splits (r = {ratio:.2g})"


def best_line(ready: list[dict], tests: stats.Family, leader: int, members: list[int]) -> str:
    """The ranking's first line: one best setting only when the tests single it out."""
    top = ready[leader]
    lowest = f"{top['setting']} (ranking statistic {top['statistic']:.4f}, over {seeds_text(top)})"
    if len(ready) == 1:
        return f"Best on validation: **{top['setting']}**, the only ranked setting: {lowest[len(top['setting']) + 1:]}."
    if int(tests.tested_pairs) == 0:
        return (f"Best on validation: cannot tell (no two settings have 2 runs each: no setting can be shown "
                f"worse); lowest statistic: {lowest}.")
    if len(members) == 1:
        return (f"Best on validation: **{ready[members[0]]['setting']}**, significantly better than every other "
                f"setting; {lowest}.")
    names = ", ".join(ready[i]["setting"] for i in members)
    return (f"Best on validation: cannot tell which of {len(members)} settings ({names}): none of them is "
            f"significantly worse than another (the set of best settings); lowest statistic: {lowest}.")


def rounded_to(value: float, half: float) -> str:
    """``value`` with a sign, to the decimals its interval's half width carries."""
    return f"{value:+.{decimals(half, 4, 4, 1)}f}"


def rank(rows: list[dict], ratio: float = 0.0, *, splits: bool | None = None, select: str = "last") -> dict:
    """The set of best settings by the all-pairs tests, and each other
    setting's evidence. ``splits``: the units are splits (split replicates,
    compared by the corrected resampled t with factor ``ratio``; default:
    ``ratio`` > 0), else seeds on one validation set."""
    splits = ratio > 0 if splits is None else splits
    ready = [r for r in rows if r["statistic_by_unit"]]
    unranked = [r for r in rows if not r["statistic_by_unit"]]
    lines = []
    if not ready:
        lines = ["No setting has a finished run yet."]
        lines += [f"- {r['setting']}: {r['flags']}: not ranked." for r in unranked]
        return {"best": None, "best_set": [], "leader": None, "statistic": statistic_text(select, splits),
                "comparisons": [], "detectable": None, "text": "\n".join(lines)}
    tests = stats.family(paper.unit_matrix(ready), ratio=ratio)
    means = [r["statistic"] for r in ready]
    leader = min(range(len(ready)), key=lambda i: means[i])
    members = [i for i in range(len(ready)) if tests.best_set[i]] or [leader]
    pairs = max(int(tests.tested_pairs), 1)
    comparisons = []
    for j in sorted((j for j in range(len(ready)) if j != leader), key=lambda j: means[j]):
        row = ready[j]
        entry = {"setting": row["setting"], "flags": row["flags"], "difference": None, "interval": None,
                 "p": None, "p_holm": None, "method": None, "detectable": None}
        if math.isnan(tests.p[leader, j]):
            entry["verdict"] = "no noise verdict possible (fewer than 2 finished runs)"
        else:
            difference = float(tests.difference[leader, j])
            se, df = float(tests.se[leader, j]), float(tests.df[leader, j])
            # Simultaneous over the family (Bonferroni): valid whichever setting the data made the leader.
            _, half = stats.t_test(np.asarray(difference), np.asarray(se), np.asarray(df), level=ALPHA / pairs)
            half = float(half)
            beaten_by = [ready[i]["setting"] for i in range(len(ready)) if tests.beats[i, j]]
            entry.update(difference=difference, interval=[difference - half, difference + half],
                         p=float(tests.p[leader, j]), p_holm=float(tests.p_holm[leader, j]),
                         method=method_text(bool(tests.paired[leader, j]), int(df) + 1, ratio, splits),
                         detectable=stats.detectable(se, df, ALPHA / pairs),
                         verdict=f"worse (than {', '.join(beaten_by)})" if beaten_by else
                         "in the set of best settings (no setting significantly better)")
        comparisons.append(entry)
    lines.append(best_line(ready, tests, leader, members))
    for c in comparisons:
        note = f" [{c['flags']}]" if c["flags"] else ""
        if c["interval"] is None:
            lines.append(f"- {c['setting']}: {c['verdict']}.{note}")
        else:
            half = (c["interval"][1] - c["interval"][0]) / 2
            places = decimals(half, 4, 4, 1)
            lines.append(f"- {c['setting']}: val loss {rounded_to(c['difference'], half)} against "
                         f"{ready[leader]['setting']} (simultaneous 95 % interval {c['interval'][0]:+.{places}f} "
                         f"to {c['interval'][1]:+.{places}f}; {c['method']}; Holm p = {c['p_holm']:.2g} over "
                         f"{pairs} pairs; detectable: {c['detectable']:.{places}f}): {c['verdict']}.{note}")
    lines += [f"- {r['setting']}: {r['flags']}: not ranked (no finished run)." for r in unranked]
    detectable = [c["detectable"] for c in comparisons if c["detectable"] is not None]
    best_set = [ready[i]["setting"] for i in members]
    return {"best": best_set[0] if len(best_set) == 1 and (len(ready) == 1 or tests.tested_pairs) else None,
            "best_set": best_set, "leader": ready[leader]["setting"], "comparisons": comparisons,
            "detectable": [min(detectable), max(detectable)] if detectable else None,
            "text": "\n".join(lines), "statistic": statistic_text(select, splits),
            "not_ranked": [{"setting": r["setting"], "flags": r["flags"]} for r in unranked]}


def pm(mean: float | None, sd: float | None, n: int, default: int = 3, most: int = 4) -> str:
    """"mean ± SD" over ``n`` runs, both to the decimals of ``decimals(sd)``; one run: its value alone."""
    if mean is None:
        return "-"
    if n < 2 or sd is None:
        return f"{mean:.{default}f}"
    places = decimals(sd, default, most)
    return f"{mean:.{places}f} ± {sd:.{places}f}"


def significant(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, written out (1650, 16.5, 0.165; never 1.65e+03)."""
    if value is None:
        return "-"
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.{max(0, digits - 1 - math.floor(math.log10(abs(value))))}f}"


def epochs_text(epochs: list[int]) -> str:
    """Each run's best epoch, or their median and range when there are many runs."""
    if not epochs:
        return "-"
    if len(epochs) <= 5:
        return ", ".join(str(e) for e in epochs)
    return f"{statistics.median_low(epochs)} (median; {min(epochs)}-{max(epochs)})"


def momentum_text(rows: list[dict], train_count: int | None, bn_stats: str) -> str:
    """What the BatchNorm statistics validation used carry of their start, per setting.

    ``precise``: re-estimated before every validation, nothing of the start is
    left. ``moving``: a moving average keeps ``momentum ** steps`` of its start
    (mean 0 / variance 1 from scratch, ImageNet's with pretrained weights)
    after one epoch of ``steps``; a share that differs by batch size is a
    confound of the batch axis."""
    values = sorted({m for r in rows for m in r["bn_momentum"]})
    if bn_stats == "precise":
        return ("BatchNorm statistics re-estimated over training images before every validation and the final "
                "scoring (`--bn-stats precise`): nothing of their starting values is left, whatever the step count"
                + (f" (momentum {', '.join(f'{v:g}' for v in values)} only drives training)." if values else "."))
    if not values or not train_count:
        return ""
    shares = []
    for r in rows:
        steps = train_count // r["batch_size"]
        for m in r["bn_momentum"]:
            # The share of a moving average's start left after ``steps`` updates (training's bn_residual).
            shares.append((r["setting"], m, steps, float(m) ** max(int(steps), 0)))
    text = ("BatchNorm moving statistics (`--bn-stats moving`): share of their starting values (mean 0 / variance "
            "1 from scratch, ImageNet's with pretrained weights) left after epoch 1: "
            + "; ".join(f"{name} {share:.1%} (momentum {m:g}, {steps} steps)" for name, m, steps, share in shares)
            + ".")
    spread = max(share for *_, share in shares) - min(share for *_, share in shares)
    if spread > 0.01:
        text += (" **The share differs across the settings**: the validation curves along the axis are "
                 "confounded with it; `--bn-stats precise` removes it.")
    return text


# Said above the table, where "±" is first used.
PLUS_MINUS = ("Each cell is a mean ± SD over the setting's finished runs: the sample standard deviation over runs "
              "(n - 1 in the denominator). A setting with one run shows its value alone.")
COLUMNS = ["val loss: the ranking statistic, at the snapshot (above); a diverged run counts as the sweep's worst.",
           "val acc, val AUC: at the same snapshot.",
           "lowest val loss: the minimum over each run's epochs, optimistic (a minimum of noisy values); best "
           "epoch: the epoch it was reached at.",
           "s/run: seconds of training and validation per run, without the one-off compile.",
           "compile s: that one-off, tracing and compiling the step; the most any of the setting's runs paid. "
           "A trial pays it when its process compiles the step anew (its first trial, or one whose step differs); "
           "a trial that reuses the compiled step pays about nothing. "
           "\"-\": the runs' histories do not record it, and s/run includes it.",
           "img/s: training images per second; each run's median epoch, averaged over runs."]


def table_lines(rows: list[dict]) -> list[str]:
    """The validation table: what ± means above it, what its columns mean below.
    Test metrics have their own section (``clinical.report_lines``), with intervals."""
    lines = [PLUS_MINUS, "",
             "| setting | runs | not finished | BN momentum | val loss | val acc | val AUC | lowest val loss | "
             "best epoch | s/run | compile s | img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        n = r["repeats_done"]
        cell = lambda k: pm(r[k], r.get(k + "_std"), n)  # noqa: E731
        momentum = ", ".join(f"{m:g}" for m in r["bn_momentum"]) or "-"
        lines.append(f"| {r['setting']} | {n}/{r['repeats']} | {r['flags'] or '-'} | {momentum} | "
                     f"{pm(r['statistic'], r['statistic_std'], len(r['statistic_by_unit']), 4)} | "
                     f"{cell('val_accuracy')} | {cell('val_auc')} | {cell('lowest_val_loss')} | "
                     f"{epochs_text(r.get('best_epochs', []))} | "
                     f"{pm(r['train_seconds'], r.get('train_seconds_std'), n, 0, 1)} | "
                     f"{significant(r.get('compile_seconds'), 2)} | {significant(r['images_per_second'])} |")
    return lines + [""] + [f"- {line}" for line in COLUMNS]


def margin_lines(rows: list[dict], margin: float, ratio: float) -> list[str]:
    """The ``--margin`` section: which settings are equivalent within it and
    which is best within it (``engine.study.equivalence``)."""
    ready = [r for r in rows if r["statistic_by_unit"]]
    found = equivalence.lines([r["setting"] for r in ready], paper.unit_matrix(ready), margin, ratio) if ready else []
    return [f"## Within the margin of {margin:g} (stated before training)", "",
            "Two one-sided tests at 5 % each: \"equivalent within D\" when the pair's 90 % interval lies inside -D "
            "to +D; \"best within D\" when a setting is worse than every other by less than D, each pair one-sided "
            "at 5 % (intersection-union). Each line holds at 5 % on its own.", "",
            *(f"- {line}" for line in found or ["no setting has 2 finished runs: nothing to test"]), ""]


def design_lines(data: dict, rows: list[dict], ranking: dict, ratio: float, test_images: int | None) -> list[str]:
    """The report's first lines: what was run, the one snapshot, what the
    comparisons and the test metrics describe, and the smallest difference
    the design could detect."""
    sweep, splits, choice = data["sweep"], data["splits"], data["choice"]
    runs = (f"{sweep.splits} splits x {sweep.repeats} seed{'s' if sweep.repeats != 1 else ''}" if splits else
            f"{sweep.repeats} seed{'s' if sweep.repeats != 1 else ''} on the records' own split")
    lines = [f"What was run: {len(rows)} settings x {runs}; {sweep.base.epochs} epochs; {sweep.base.model.name} "
             f"({sweep.base.model.weights} weights) at {sweep.base.model.image_size} px; augmentation "
             f"{sweep.base.augment}; budget {sweep.budget}, lr scaling {sweep.lr_scaling}; "
             f"{choice.get('precision', '?')}, XLA {choice.get('xla', '?')}.", "",
             snapshot.describe(sweep.base.select, sweep.base.epochs), "",
             replicates.describe(splits, sweep.repeats, test_images), ""]
    pairs = len(ranking["comparisons"]) and len(rows) * (len(rows) - 1) // 2
    if ranking.get("detectable"):
        low, high = ranking["detectable"]
        span = f"{low:.2g}" if f"{low:.2g}" == f"{high:.2g}" else f"{low:.2g} to {high:.2g}"
        method = (f"corrected resampled t over {sweep.splits} splits (r = {ratio:.2g}, assuming "
                  f"{overlap.SHARE:.0%} of the setting x split interaction comes from shared training images)"
                  if splits else f"paired t over {sweep.repeats} seeds on this validation set")
        bound = (" (the r term bounds it: more splits narrow it little, more images would)"
                 if splits and ratio >= 0.5 and sweep.splits >= 5 else "")
        lines += [f"Comparisons: {method}, Holm over {pairs} pairs; the design detects with {POWER * 100:g} % power "
                  f"a difference in the ranking statistic of {span}{bound}.", ""]
    elif sweep.repeats * max(sweep.splits, 1) < 2:
        lines += ["Comparisons: none possible with one run per setting (as in the paper): the order of the "
                  "statistics may be noise; `--repeats 3` trains 3 splits per setting and makes them possible.", ""]
    warning = replicates.design_warning(splits)
    if warning:
        lines += [f"Warning: {warning}.", ""]
    return lines


def write(folder: Path) -> dict:
    """Writes summary.csv/json, curves.png, compare.png, calibration.png, report.md and report.html into the
    sweep folder."""
    from engine.data.manifest import load_manifest

    data = collect(folder)
    rows = summarise(data)
    # With split replicates the tests' unit is the split, corrected for what
    # the splits share (replicates.correction); otherwise the seed.
    splits = data["splits"]
    ratio = replicates.correction(splits)
    sweep = data["sweep"]
    ranking = rank(rows, ratio, splits=bool(splits), select=sweep.base.select)
    # A diverged run is a run of its setting that shows none of a claim's properties (None).
    claims = paper.check(sweep, rows, {s: [r["history"] for r in finished(runs)] + [None] * len(diverged(runs))
                                       for s, runs in data["settings"].items()}, ratio, one_split=not splits)
    deviations = data["deviations"]
    if deviations is None:  # a sweep.json from before deviations were recorded
        deviations = paper.deviations(sweep, load_manifest(sweep.base.records), data["choice"], data["machine"])
    states = trial_states(data)
    learned = chance(rows)
    keys = [k for k in rows[0] if not isinstance(rows[0][k], (list, dict))] if rows else []
    with atomic_open(folder / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rounded(rows))
    # Finished runs; a setting with none shows what its runs recorded.
    shown = {setting: [r["history"] for r in finished(runs)] or [r["history"] for r in runs if r["history"]]
             for setting, runs in data["settings"].items()}
    # The best set is drawn thicker only when it leaves some setting out: a set of all is no emphasis.
    emphasis = ranking["best_set"] if any(c.get("verdict", "").startswith("worse")
                                          for c in ranking["comparisons"]) else []
    plots.plot_curves(shown, folder / "curves.png")
    plots.plot_compare(shown, folder / "compare.png", emphasis)
    trial_folders = {setting: [r["config"].out for r in runs] for setting, runs in data["settings"].items()}
    reference = ranking["best"] or ranking["leader"]
    clinical_table = clinical.clinical_table(trial_folders, reference) if reference else None
    calibrated = clinical.plot_calibration(trial_folders, emphasis, folder / "calibration.png") is not None
    atomic_json(folder / "summary.json", rounded({"rows": rows, "ranking": ranking, "chance": learned,
                                                  "claims": claims, "deviations": deviations, "trials": states,
                                                  "test": clinical_table}),
                default=str)
    try:  # the records may live on another machine than the report
        split_counts = load_manifest(sweep.base.records)["splits"]
    except (OSError, ValueError, KeyError, TypeError, UserError):
        split_counts = {}
    lines = [f"# {sweep.axis} study ({sweep.preset} preset)", ""]
    if learned["no_setting_learned"]:
        lines += [learned["text"], ""]
    lines += design_lines(data, rows, ranking, ratio, split_counts.get("test", {}).get("count"))
    if sweep.axis in ("batch", "grid") and sweep.budget == "epochs" and len(sweep.batch_sizes) > 1:
        low, high = min(sweep.batch_sizes), max(sweep.batch_sizes)
        lines += [f"With an equal number of epochs, a larger batch makes fewer optimizer updates (batch {high} "
                  f"gets {low}/{high} of batch {low}'s): as in the paper's design, batch size and the number of "
                  f"updates are confounded. `--budget steps` separates them.", ""]
    lines += table_lines(rows) + ["", momentum_text(rows, split_counts.get("train", {}).get("count"),
                                                     sweep.base.bn_stats)]
    finder = folder / "lr_find.json"
    if finder.is_file() and ranking["leader"]:
        found = json.loads(finder.read_text())
        if found.get("suggested"):
            best_lr = next(r for r in rows if r["setting"] == ranking["leader"]).get("lr")
            where = "" if best_lr is None else (
                f", {'above' if found['suggested'] > best_lr else 'below'} the lowest-statistic setting's "
                f"{best_lr:g}")
            ranking["text"] += (f"\n\n`engine lr-find` suggested {found['suggested']:.3g} "
                                f"({found['rule']}){where}.")
    lines += ["", "## Ranking (validation only)", "", ranking["text"], "", f"Statistic: {ranking['statistic']}.",
              "Test metrics are reported, never used to choose.", ""]
    if sweep.margin is not None:
        lines += margin_lines(rows, sweep.margin, ratio)
    if splits:
        compared = replicates.comparisons(rows, ranking)
        drawn = bool(compared) and plots.plot_splits(compared, folder / "splits.png",
                                                     unit="val loss at the snapshot") is not None
        lines += ["## Across splits", "", "Where each setting's spread comes from (one-way random-effects "
                  "ANOVA of its runs, split x seed; method of moments; the splits' share with its exact 95 % "
                  "interval):", ""] + replicates.variance_lines(rows)
        lines += ["", "![splits](splits.png)", ""] if drawn else [""]
    if claims:
        lines += ["## The paper's claims", "", "| claim | evidence | verdict |", "|---|---|---|"]
        lines += [f"| {c['claim']} | {c['evidence']} | {c['verdict']}"
                  f"{' (' + c['runs_label'] + ')' if c.get('runs_label') else ''} |" for c in claims]
        lines += ["", "Each claim's chance of a wrong verdict:", ""]
        lines += [f"- {c['claim']}: {paper.ERROR_RATES[c['claim']]}." for c in claims
                  if c["claim"] in paper.ERROR_RATES]
        axes = [a for a in ("lr", "batch") if paper.family(sweep, rows, a)]
        lines += ["", "The chance that at least one claim of the table fires wrongly on a sweep where every setting "
                  "is the same (simulated on " + paper.NULL_DESIGN + "): "
                  + ", ".join(f"{paper.NULL_ANY_CLAIM[a]:.0%} on the {a} axis" for a in axes) + ".",
                  "", f"Words: {paper.DEFINITIONS}.", ""]
    if any(st["state"] != "finished" for st in states):
        lines += ["## Trials not finished", ""] + states_text(states) + [""]
    lines += clinical.report_lines(clinical_table)
    lines += ["## Differences from the paper's setup", ""]
    lines += [f"- {d['what']}: the paper {d['paper']}; here {d['here']}." for d in deviations] or ["- none"]
    lines += ["", "![curves](curves.png)", "", "![compare](compare.png)", ""]
    if calibrated:
        lines += ["![calibration](calibration.png)", ""]
    atomic_write(folder / "report.md", "\n".join(lines))
    write_html(folder / "report.html", lines)
    return {"rows": rows, "ranking": ranking, "chance": learned, "claims": claims, "deviations": deviations,
            "trials": states}


def write_html(path: Path, lines: list[str]) -> None:
    """report.md as a self-contained HTML page (tables, headings, images, paragraphs)."""
    import html
    import re

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    body, table = [], []
    for line in lines + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= set("-") for c in cells):
                tag = "th" if not table else "td"
                table.append("<tr>" + "".join(f"<{tag}>{inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            body.append("<table>" + "".join(table) + "</table>")
            table = []
        image = re.match(r"!\[(.*)\]\((.*)\)", line)
        if image:
            body.append(f'<img alt="{html.escape(image[1])}" src="{html.escape(image[2])}">')
        elif line.startswith("## "):
            body.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{inline(line[2:])}</h1>")
        elif line.startswith("- "):
            body.append(f"<li>{inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    style = ("body{font-family:sans-serif;max-width:72em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}img{max-width:100%}")
    atomic_write(path, f"<!doctype html><html><head><meta charset='utf-8'><title>engine report</title>"
                    f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def rewrite(folder: Path) -> None:
    """``engine report``: a sweep's summary, plots and report rewritten from
    what its trials wrote; the state of every trial and the ranking printed.
    Imports no TensorFlow: a folder of finished trials is read as files."""
    from engine.study import show

    if not (folder / "sweep.json").is_file():
        raise UserError(f"{folder} is not a sweep folder (no sweep.json)")
    written = write(folder)
    show.line("\n".join(states_text(written["trials"])))
    show.line(written["ranking"]["text"].replace("**", ""))
