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
from engine.io import FolderLock, atomic_json, atomic_open, atomic_write, read_json
from engine.study import clinical, paper, plots, replicates, stats
from engine.training import bn_residual, read_history as training_history
from engine.study.stats import ALPHA, POWER, TAIL, tail_mean
from engine.study.sweep import FINISHED, LOCK, lr_scale, trials

# Significant digits of every float in summary.csv and summary.json: more than
# any run's measurement carries, and few enough to hide float noise.
SIGNIFICANT = 6
# No setting learned when every setting's val AUC (last epoch, mean over its
# finished runs) is at most this: 0.5 is guessing, and on a validation set of
# ~100 images an AUC of 0.6 is within noise of it.
CHANCE_AUC = 0.6


def read_history(path: Path) -> list[dict]:
    """A trial's ``history.csv`` as ``training.read_history`` reads and checks it
    (no file: no epochs yet), with a non-finite value (a diverging epoch) as
    None: no number to rank or plot."""
    if not path.is_file():
        return []
    return [{k: (v if v is None or math.isfinite(v) else None) for k, v in row.items()}
            for row in training_history(path)]


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
            if (run / "metrics.json").is_file():
                metrics = read_json(run / "metrics.json")
            history = read_history(run / "history.csv")
        except DamagedState as err:
            # Missing, not ranked: the failure policy for anything but numerical divergence.
            metrics, history = {"status": "failed", "reason": str(err)}, []
        settings.setdefault(trial.setting, []).append(
            {"name": trial.name, "seed": trial.config.seed, "split": trial.split, "history": history,
             "metrics": metrics, "config": trial.config,
             "sweep_lr": trial.config.lr / lr_scale(cfg, trial.config.batch_size)})
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
    return tail_mean([h.get("val_loss") for h in run["history"]])


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


def flags(runs: list[dict]) -> str:
    """"k of n diverged", "k of n failed (reason)", ... for the runs that did not finish."""
    out = []
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
    aucs = {r["setting"]: r["final_val_auc"] for r in rows if r["repeats_done"]}
    fired = bool(aucs) and all(v is not None and v <= CHANCE_AUC for v in aucs.values())
    rule = f"every setting's val AUC (last epoch, mean over its finished runs) is at most {CHANCE_AUC:g}"
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
        final = {k: [r["history"][-1].get(k) for r in done] for k in ("val_loss", "val_accuracy", "loss", "accuracy",
                                                                     "val_auc", "val_sensitivity",
                                                                     "val_specificity")}
        for key, values in final.items():
            row[f"final_{key}"], row[f"final_{key}_std"] = mean_std(values)
        best = [min(r["history"], key=lambda h: h["val_loss"] if h.get("val_loss") is not None else math.inf)
                for r in done]
        row["best_val_loss"], row["best_val_loss_std"] = mean_std([b.get("val_loss") for b in best])
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
            status = status_of(r)
            if status in FINISHED:
                state, detail = "finished", status
            elif FolderLock(r["config"].out / LOCK).held_elsewhere():
                state, detail = "running", f"{len(r['history'])} epochs done"
            elif status == "failed":
                state, detail = "failed", r["metrics"].get("reason", "")
            else:
                state = "missing"
                detail = f"interrupted after {len(r['history'])} epochs" if r["history"] else "not started"
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


STATISTIC = (f"the mean validation loss of each run's last {TAIL} epochs (of all epochs when fewer), averaged over "
             f"a setting's runs; a run that diverged (a non-finite loss or weights, a training loss above the bound, "
             f"or a non-finite val loss in those epochs) counts as the sweep's worst finished run, so it ranks last "
             f"at its seed (intention to treat); a run that failed otherwise is missing, never ranked. Every setting "
             f"against every other by the difference of the statistic: a paired t over the seeds both have where "
             f"they share at least 2 (the sweep gives every setting the same seeds), Welch's t otherwise; 95 % "
             f"intervals unadjusted; Holm-adjusted p-values over all pairs, so the chance of calling any setting "
             f"worse when all are equal is at most {ALPHA}. worse = another setting is better with Holm p < "
             f"{ALPHA}; the set of best settings = those no other setting is better than; detectable = the "
             f"smallest true difference the comparison finds with {POWER * 100:g} % power at its observed spread and "
             f"seed count (two-sided, at the Bonferroni level {ALPHA} / pairs, which Holm's first step uses)")


# With split replicates (``--splits K``), what the unit of the tests becomes.
ACROSS_SPLITS = ("With split replicates the unit is the split: a setting's statistic on a split is the mean over its "
                 "seeds there, settings are paired by split, and the paired t becomes the corrected resampled t of "
                 "Nadeau and Bengio (2003): the variance of the mean per-split difference counts 1/K + n_val/n_train "
                 "times the per-split variance (K - 1 degrees of freedom), since the splits' training sets overlap; "
                 "for k-fold n_val/n_train = 1/(K - 1). Splits drawn from a larger pool (--split-sizes) overlap "
                 "less, so the correction is conservative there")


def statistic_text(ratio: float) -> str:
    return STATISTIC + (f". {ACROSS_SPLITS}" if ratio > 0 else "")


def seeds_text(row: dict) -> str:
    runs = sum(map(len, row.get("statistic_by_run", {}).values())) or len(row["statistic_by_unit"])
    splits = len(row["statistic_by_unit"]) if set(row.get("statistic_by_run", {})) - {0} else 0
    return (f"{runs} run{'s' if runs != 1 else ''}" + (f" on {splits} split{'s' if splits != 1 else ''}" if splits
                                                       else "")
            + (f"; {row['flags']}" if row["flags"] else ""))


def method_text(paired: bool, units: int, ratio: float) -> str:
    """The test a comparison used, in the report's words."""
    if not paired:
        return "Welch t" + (" (corrected for overlapping splits)" if ratio > 0 else "")
    return stats.corrected_method(ratio, units)


def best_line(ready: list[dict], tests: stats.Family, leader: int, members: list[int]) -> str:
    """The ranking's first line: one best setting only when the tests single it out."""
    top = ready[leader]
    lowest = (f"{top['setting']} (val loss of the last {TAIL} epochs {top['statistic']:.4f}, final epoch "
              f"{fmt(top.get('final_val_loss'))}, over {seeds_text(top)})")
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


def power_sentence(ready: list[dict], tests: stats.Family, leader: int, ratio: float = 0.0) -> str:
    """How many repeats would resolve the largest observed difference from the lowest setting."""
    pairs = int(tests.tested_pairs)
    paired = [j for j in range(len(ready)) if j != leader and tests.paired[leader, j]]
    if not paired:
        return ""
    j = max(paired, key=lambda k: abs(tests.difference[leader, k]))
    difference = float(tests.difference[leader, j])
    if tests.p_holm[leader, j] < ALPHA:
        return (f"The largest observed difference ({ready[j]['setting']} {difference:+.4f} against "
                f"{ready[leader]['setting']}) is resolved (Holm p = {tests.p_holm[leader, j]:.2g}).")
    seeds = float(tests.df[leader, j]) + 1
    unit = paper.unit_word(ratio)
    sd = float(tests.se[leader, j]) / math.sqrt(1 / seeds + ratio)  # the SD of one unit's difference
    needed = stats.repeats_needed(difference, sd, pairs, ratio=ratio)
    return (f"Resolving the largest observed difference ({ready[j]['setting']} {difference:+.4f} against "
            f"{ready[leader]['setting']}) with {POWER * 100:g} % power among these {pairs} pairs would take "
            + (f"about {needed} {unit}s per setting" if needed else f"more than 1000 {unit}s per setting")
            + f" at the observed spread (now {seeds:.0f})"
            + (": splits, not seeds, since the per-split term n_val/n_train does not shrink with more seeds."
               if ratio > 0 else "."))


def rank(rows: list[dict], ratio: float = 0.0) -> dict:
    """The set of best settings by the all-pairs tests, and each other
    setting's evidence; ``ratio``: n_val/n_train of split replicates (the
    units are then splits, by the corrected resampled t), 0 for seeds."""
    ready = [r for r in rows if r["statistic_by_unit"]]
    unranked = [r for r in rows if not r["statistic_by_unit"]]
    lines = []
    if not ready:
        lines = ["No setting has a finished run yet."]
        lines += [f"- {r['setting']}: {r['flags']}: not ranked." for r in unranked]
        return {"best": None, "best_set": [], "leader": None, "statistic": statistic_text(ratio), "comparisons": [],
                "text": "\n".join(lines)}
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
            difference, half = float(tests.difference[leader, j]), float(tests.half[leader, j])
            seeds = int(tests.df[leader, j]) + 1
            beaten_by = [ready[i]["setting"] for i in range(len(ready)) if tests.beats[i, j]]
            entry.update(difference=difference, interval=[difference - half, difference + half],
                         p=float(tests.p[leader, j]), p_holm=float(tests.p_holm[leader, j]),
                         method=method_text(bool(tests.paired[leader, j]), seeds, ratio),
                         detectable=stats.detectable(float(tests.se[leader, j]), float(tests.df[leader, j]),
                                                     ALPHA / pairs),
                         verdict=f"worse (than {', '.join(beaten_by)})" if beaten_by else
                         "in the set of best settings (no setting significantly better)")
        comparisons.append(entry)
    lines.append(best_line(ready, tests, leader, members))
    for c in comparisons:
        note = f" [{c['flags']}]" if c["flags"] else ""
        if c["interval"] is None:
            lines.append(f"- {c['setting']}: {c['verdict']}.{note}")
        else:
            lines.append(f"- {c['setting']}: val loss {c['difference']:+.4f} against {ready[leader]['setting']} "
                         f"(95 % {c['method']} interval {c['interval'][0]:+.4f} to {c['interval'][1]:+.4f}, "
                         f"unadjusted; Holm-adjusted p = {c['p_holm']:.3g} over {pairs} pairs; detectable at "
                         f"{POWER * 100:g} % power: {c['detectable']:.4f}): {c['verdict']}.{note}")
    lines += [f"- {r['setting']}: {r['flags']}: not ranked (no finished run)." for r in unranked]
    sentence = power_sentence(ready, tests, leader, ratio)
    if sentence:
        lines += ["", sentence]
    best_set = [ready[i]["setting"] for i in members]
    return {"best": best_set[0] if len(best_set) == 1 and (len(ready) == 1 or tests.tested_pairs) else None,
            "best_set": best_set, "leader": ready[leader]["setting"], "comparisons": comparisons,
            "text": "\n".join(lines), "statistic": statistic_text(ratio),
            "not_ranked": [{"setting": r["setting"], "flags": r["flags"]} for r in unranked]}


def fmt(value, digits=4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def decimals(spread: float | None, default: int = 3, most: int = 4, least: int = 0) -> int:
    """Decimal places that show ``spread`` (an SD, an interval's half width) to
    2 significant digits, between ``least`` and ``most``: a number is not
    shown finer than the noise around it. ``default`` without a spread."""
    if spread is None or not math.isfinite(spread) or spread <= 0:
        return default
    return min(most, max(least, 1 - math.floor(math.log10(spread))))


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
            shares.append((r["setting"], m, steps, bn_residual(m, steps)))
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
COLUMNS = [f"val loss (last {TAIL}): the ranking statistic (below); a diverged run counts as the sweep's worst.",
           "best epoch: the epoch of each run's lowest val loss.",
           "val AUC: at the last epoch.",
           "s/run: seconds of training and validation per run, without the one-off compile.",
           "compile s: that one-off, tracing and compiling the step; the most any of the setting's runs paid. "
           "A trial pays it when its process compiles the step anew (its first trial, or one whose step differs); "
           "a trial that reuses the compiled step pays about nothing. "
           "\"-\": the runs' histories do not record it, and s/run includes it.",
           "img/s: training images per second; each run's median epoch, averaged over runs."]


def table_lines(rows: list[dict]) -> list[str]:
    """The validation table: what ± means above it, what its columns mean below.
    Test metrics have their own section (``clinical_lines``), with intervals."""
    lines = [PLUS_MINUS, "",
             f"| setting | runs | not finished | BN momentum | val loss (last {TAIL}) | final val loss | "
             "final val acc | best val loss | best epoch | val AUC | s/run | compile s | img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        n = r["repeats_done"]
        cell = lambda k: pm(r[k], r.get(k + "_std"), n)  # noqa: E731
        momentum = ", ".join(f"{m:g}" for m in r["bn_momentum"]) or "-"
        lines.append(f"| {r['setting']} | {n}/{r['repeats']} | {r['flags'] or '-'} | {momentum} | "
                     f"{pm(r['statistic'], r['statistic_std'], len(r['statistic_by_unit']), 4)} | "
                     f"{cell('final_val_loss')} | {cell('final_val_accuracy')} | {cell('best_val_loss')} | "
                     f"{epochs_text(r.get('best_epochs', []))} | {cell('final_val_auc')} | "
                     f"{pm(r['train_seconds'], r.get('train_seconds_std'), n, 0, 1)} | "
                     f"{significant(r.get('compile_seconds'), 2)} | {significant(r['images_per_second'])} |")
    return lines + [""] + [f"- {line}" for line in COLUMNS]


def clinical_lines(table: dict | None) -> list[str]:
    """The report's test-metrics section: each setting's seed ensemble scored on
    the test images with intervals, calibration, and the paired DeLong
    difference in test AUC of the reference setting against it."""
    if not table or not any(row["runs"] for row in table["rows"]):
        return []
    shown = ("accuracy", "sensitivity", "specificity", "auc")
    methods = sorted({row["interval_methods"][m] for row in table["rows"] if row["runs"] for m in shown
                      if m in row["interval_methods"]})
    lines = ["## Test metrics (reported, never used to choose)", "",
             f"Per setting: {table['pooling']}. Intervals are 95 % ({', '.join(methods)}). "
             f"AUC difference: {table['difference']}, reference {table['reference']} (the lowest validation "
             f"statistic; not a claim that it is best unless the ranking says so).", "",
             "| setting | runs | test acc | test sens | test spec | test AUC | Brier | ECE | AUC difference (p) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in table["rows"]:
        if not row["runs"]:
            lines.append(f"| {row['setting']} | 0 | - | - | - | - | - | - | - |")
            continue

        def cell(metric: str) -> str:
            # As many decimals as the interval's half width carries (2 or 3 for a proportion).
            value, (low, high) = row["metrics"].get(metric), row["intervals"].get(metric, (None, None))
            places = decimals(None if low is None or high is None else (high - low) / 2, 3, 3, 2)
            return "-" if value is None else f"{value:.{places}f} ({fmt(low, places)}-{fmt(high, places)})"
        diff = row["auc_difference"]
        diff_text = "reference" if row["setting"] == table["reference"] else "-" if diff is None else (
            f"{diff['difference']:+.3f} ({diff['low']:+.3f} to {diff['high']:+.3f}; p = {diff['p']:.2g})")
        lines.append(f"| {row['setting']} | {row['runs']} | {cell('accuracy')} | {cell('sensitivity')} | "
                     f"{cell('specificity')} | {cell('auc')} | {fmt(row['brier'], 3)} | {fmt(row['ece'], 3)} | "
                     f"{diff_text} |")
    return lines + ["", "Brier: mean squared error of P(positive); ECE: expected calibration error over 10 "
                        "equal-width bins; `calibration.png` shows the reliability diagrams.", ""]


def write(folder: Path) -> dict:
    """Writes summary.csv/json, curves.png, compare.png, calibration.png, report.md and report.html into the
    sweep folder."""
    from engine.data.manifest import load_manifest

    data = collect(folder)
    rows = summarise(data)
    # With split replicates the tests' unit is the split, corrected for the
    # images the splits share (n_val/n_train); otherwise the seed.
    splits = data["splits"]
    ratio = float(splits["ratio"]) if splits else 0.0
    ranking = rank(rows, ratio)
    sweep = data["sweep"]
    # A diverged run is a run of its setting that shows none of a claim's properties (None).
    claims = paper.check(sweep, rows, {s: [r["history"] for r in finished(runs)] + [None] * len(diverged(runs))
                                       for s, runs in data["settings"].items()}, ratio)
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
    scored = sorted({m.split(" (")[0] for r in rows for m in r["model_scored"]})
    lines = [f"# {sweep.axis} study ({sweep.preset} preset)", "", replicates.describe(splits, sweep.repeats), ""]
    if learned["no_setting_learned"]:
        lines += [learned["text"], ""]
    lines += [f"{len(rows)} settings x " + (f"{sweep.splits} splits x " if sweep.splits > 1 else "")
              + f"{sweep.repeats} repeat(s); {sweep.base.epochs} epochs; model "
              f"{sweep.base.model.name} ({sweep.base.model.weights} weights) at {sweep.base.model.image_size} px; "
              f"augmentation {sweep.base.augment}; budget {sweep.budget}, lr scaling {sweep.lr_scaling}; "
              f"{data['choice'].get('precision', '?')}, XLA {data['choice'].get('xla', '?')}; test metrics of the "
              f"{' / '.join(scored) or sweep.base.select} model of each run.", ""]
    if sweep.axis in ("batch", "grid") and sweep.budget == "epochs" and len(sweep.batch_sizes) > 1:
        low, high = min(sweep.batch_sizes), max(sweep.batch_sizes)
        lines += [f"With an equal number of epochs, a larger batch makes fewer optimizer updates (batch {high} "
                  f"gets {low}/{high} of batch {low}'s): as in the paper's design, batch size and the number of "
                  f"updates are confounded. `--budget steps` separates them.", ""]
    if sweep.repeats == 1:
        lines += ["One run per setting, as in the paper: no noise verdict is possible (a comparison needs at least 2 "
                  "seeds per setting), so every comparative claim says cannot tell; the order of the statistics may "
                  "be noise.", ""]
    try:  # the records may live on another machine than the report
        split_counts = load_manifest(sweep.base.records)["splits"]
    except (OSError, ValueError, KeyError, TypeError, UserError):
        split_counts = {}
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
    if splits:
        compared = replicates.comparisons(rows, ranking)
        drawn = bool(compared) and plots.plot_splits(compared, folder / "splits.png",
                                                     unit=f"val loss of the last {TAIL} epochs") is not None
        lines += ["## Across splits", "", "Where each setting's spread comes from (one-way random-effects "
                  "ANOVA of its runs, split x seed; method of moments):", ""] + replicates.variance_lines(rows)
        lines += ["", "![splits](splits.png)", ""] if drawn else [""]
    if claims:
        lines += ["## The paper's claims", "", "| claim | evidence | verdict |", "|---|---|---|"]
        lines += [f"| {c['claim']} | {c['evidence']} | {c['verdict']}"
                  f"{' (' + c['runs_label'] + ')' if c.get('runs_label') else ''} |" for c in claims]
        lines += ["", f"Words: {paper.DEFINITIONS}.", ""]
    if any(st["state"] != "finished" for st in states):
        lines += ["## Trials not finished", ""] + states_text(states) + [""]
    lines += clinical_lines(clinical_table)
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
