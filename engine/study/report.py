"""A sweep's summary, ranking, plots and report (``engine compare``, ``engine report DIR``).

Ranking uses validation only; test metrics are reported and never used to
choose. The ranking statistic and the comparisons are ``engine.study.stats``;
a setting whose runs diverged or failed is ranked on its finished runs with
that said, and listed, never dropped, when none finished. The report also
checks the paper's claims and lists the deviations from its setup
(``engine.study.paper``).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import warnings
from pathlib import Path

import numpy as np

from engine.config import SweepConfig, from_json
from engine.io import FolderLock, atomic_json, atomic_open, atomic_write, save_figure
from engine.study import paper
from engine.study.stats import ALPHA, TAIL, compare, holm, tail_mean
from engine.study.sweep import FINISHED, LOCK, trials

# The paper's colours: train acc yellow, val acc blue, train loss red, val loss green.
COLOURS = {"accuracy": "gold", "val_accuracy": "tab:blue", "loss": "tab:red", "val_loss": "tab:green"}


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as f:
        rows = [{k: (float(v) if v not in ("", "None") else None) for k, v in row.items()} for row in csv.DictReader(f)]
    # A non-finite value (a diverging epoch) is no number to rank or plot.
    return [{k: (v if v is None or math.isfinite(v) else None) for k, v in row.items()} for row in rows]


def collect(folder: Path) -> dict:
    """Per setting: the trials' histories and metrics, in sweep order."""
    sweep = json.loads((folder / "sweep.json").read_text())
    # Every shard's trials: a report merges what the shards wrote.
    cfg = from_json(SweepConfig, sweep["config"])
    settings: dict[str, list[dict]] = {}
    for trial in trials(cfg, every_shard=True):
        run = trial.config.out
        metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else None
        settings.setdefault(trial.setting, []).append(
            {"name": trial.name, "seed": trial.config.seed, "history": read_history(run / "history.csv"),
             "metrics": metrics, "config": trial.config})
    return {"sweep": cfg, "settings": settings, "machine": sweep.get("machine", {}),
            "choice": sweep.get("choice", {}), "deviations": sweep.get("deviations"),
            "command": sweep.get("command")}


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def status_of(run: dict) -> str:
    return run["metrics"]["status"] if run["metrics"] else "queued" if not run["history"] else "running"


def finished(runs: list[dict]) -> list[dict]:
    """The runs that finished with a finite ranking statistic."""
    return [r for r in runs if status_of(r) == "done" and r["history"]
            and tail_mean([h.get("val_loss") for h in r["history"]]) is not None]


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


def summarise(data: dict) -> list[dict]:
    """One row per setting: the ranking statistic and the final metrics, means
    and std over its finished repeats, and what happened to the others."""
    rows = []
    for setting, runs in data["settings"].items():
        done = finished(runs)
        row = {"setting": setting, "lr": runs[0]["config"].lr, "batch_size": runs[0]["config"].batch_size,
               "repeats_done": len(done), "repeats": len(runs), "statuses": [status_of(r) for r in runs],
               "flags": flags(runs),
               "bn_momentum": sorted({r["metrics"]["bn_momentum"] for r in runs
                                      if r["metrics"] and r["metrics"].get("bn_momentum") is not None})}
        by_seed = {r["seed"]: tail_mean([h.get("val_loss") for h in r["history"]]) for r in done}
        row["statistic"], row["statistic_std"] = mean_std(list(by_seed.values()))
        row["statistic_by_seed"] = by_seed
        final = {k: [r["history"][-1].get(k) for r in done] for k in ("val_loss", "val_accuracy", "loss", "accuracy",
                                                                     "val_auc", "val_sensitivity",
                                                                     "val_specificity")}
        for key, values in final.items():
            row[f"final_{key}"], row[f"final_{key}_std"] = mean_std(values)
        best = [min(r["history"], key=lambda h: h["val_loss"] if h.get("val_loss") is not None else math.inf)
                for r in done]
        row["best_val_loss"], row["best_val_loss_std"] = mean_std([b.get("val_loss") for b in best])
        row["best_epoch"], _ = mean_std([b["epoch"] for b in best])
        for metric in ("accuracy", "sensitivity", "specificity", "auc"):
            row[f"test_{metric}"], row[f"test_{metric}_std"] = mean_std(
                [r["metrics"].get("test", {}).get("metrics", {}).get(metric) for r in done])
        row["test_interval_first_run"] = {m: done[0]["metrics"].get("test", {}).get("intervals", {}).get(m)
                                          for m in ("accuracy", "sensitivity", "specificity", "auc")} if done else None
        row["model_scored"] = sorted({r["metrics"].get("model", "") for r in done} - {""})
        seconds = [sum(h["seconds"] for h in r["history"]) for r in done]
        row["train_seconds"], _ = mean_std(seconds)
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


STATISTIC = (f"the mean validation loss of each run's last {TAIL} epochs (of all epochs when fewer), "
             f"averaged over a setting's finished runs; the best setting against each other by the difference "
             f"of the statistic (other - best): a paired t interval over the seeds both finished where they "
             f"share at least 2 (the sweep gives every setting the same seeds), Welch's t otherwise; 95 % "
             f"intervals unadjusted; verdicts from Holm-adjusted p-values at {ALPHA}")


def rank(rows: list[dict]) -> dict:
    """Best setting by the ranking statistic, and the evidence against each other one."""
    ready = [r for r in rows if r["statistic"] is not None]
    unranked = [r for r in rows if r["statistic"] is None and r["flags"]]
    lines = []
    if not ready:
        lines = ["No setting has a finished run yet."]
        lines += [f"- {r['setting']}: {r['flags']}: not ranked." for r in unranked]
        return {"best": None, "statistic": STATISTIC, "comparisons": [], "text": "\n".join(lines)}
    best = min(ready, key=lambda r: r["statistic"])
    others = [r for r in ready if r is not best]
    found = [compare(best["statistic_by_seed"], r["statistic_by_seed"]) for r in others]
    adjusted = iter(holm([c.p for c in found if c is not None]))
    comparisons = []
    for row, c in zip(others, found):
        entry = {"setting": row["setting"], "flags": row["flags"], "difference": None, "interval": None,
                 "p": None, "p_holm": None, "method": None}
        if c is None:
            entry["verdict"] = "no noise verdict possible (fewer than 2 finished runs)"
        else:
            q = next(adjusted)
            entry.update(difference=c.difference, interval=[c.low, c.high], p=c.p, p_holm=q, method=c.method,
                         verdict="not distinguishable from noise" if q >= ALPHA else
                         "worse" if c.difference > 0 else "better")
        comparisons.append(entry)
    lines.append(f"Best on validation: **{best['setting']}** (val loss of the last {TAIL} epochs "
                 f"{best['statistic']:.4f}, final epoch {fmt(best['final_val_loss'])}, over {best['repeats_done']} "
                 f"run{'s' if best['repeats_done'] != 1 else ''}{'; ' + best['flags'] if best['flags'] else ''}).")
    for c in comparisons:
        note = f" [{c['flags']}]" if c["flags"] else ""
        if c["interval"] is None:
            lines.append(f"- {c['setting']}: {c['verdict']}.{note}")
        else:
            lines.append(f"- {c['setting']}: val loss {c['difference']:+.4f} (95 % {c['method']} interval "
                         f"{c['interval'][0]:+.4f} to {c['interval'][1]:+.4f}, unadjusted; Holm-adjusted "
                         f"p = {c['p_holm']:.3g}): {c['verdict']}.{note}")
    lines += [f"- {r['setting']}: {r['flags']}: not ranked (no finished run)." for r in unranked]
    return {"best": best["setting"], "comparisons": comparisons, "text": "\n".join(lines), "statistic": STATISTIC,
            "not_ranked": [{"setting": r["setting"], "flags": r["flags"]} for r in unranked]}


def curve(histories: list[list[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, min, max) of one curve over runs, up to the shortest run."""
    length = min(len(h) for h in histories)
    values = np.array([[np.nan if h[i].get(key) is None else h[i][key] for i in range(length)] for h in histories])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an epoch with no finite value stays a gap
        return np.arange(1, length + 1), np.nanmean(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)


def whole_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_curves(data: dict, path: Path) -> None:
    """The paper's layout: one panel per setting, its four curves (the mean over
    the finished runs, a min-max band across them), y from 0 to 1."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(data["settings"].items())
    cols = min(3, len(settings))
    rows = math.ceil(len(settings) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (setting, runs) in zip(axes.flat, settings):
        # Finished runs; a setting with none shows what its runs recorded.
        histories = [r["history"] for r in finished(runs)] or [r["history"] for r in runs if r["history"]]
        ax.set_title(f"{setting} ({len(histories)} run{'s' if len(histories) != 1 else ''})", fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("epoch")
        whole_epochs(ax)
        if not histories:
            ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
            continue
        for key, label in (("accuracy", "train acc"), ("val_accuracy", "val acc"), ("loss", "train loss"),
                           ("val_loss", "val loss")):
            epochs, mean, low, high = curve(histories, key)
            ax.plot(epochs, np.clip(mean, 0, 1), color=COLOURS[key], label=label, marker=".")
            if len(histories) > 1:
                ax.fill_between(epochs, np.clip(low, 0, 1), np.clip(high, 0, 1), color=COLOURS[key], alpha=0.2)
            clipped = mean > 1
            if clipped.any():
                ax.scatter(epochs[clipped], np.ones(clipped.sum()), marker="^", color=COLOURS[key], zorder=3)
    for ax in list(axes.flat)[len(settings):]:
        ax.axis("off")
    drawn = next((ax for ax in axes.flat if ax.lines), None)
    if drawn is not None:
        drawn.legend(fontsize=8, loc="center right")
    fig.suptitle("Training and validation curves (mean over runs, band: min-max; losses > 1 clipped, marked ▲)",
                 fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def plot_compare(data: dict, path: Path) -> None:
    """Validation loss and accuracy of every setting on shared axes, over its finished runs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for setting, runs in data["settings"].items():
        histories = [r["history"] for r in finished(runs)] or [r["history"] for r in runs if r["history"]]
        if not histories:
            continue
        for ax, key in ((left, "val_loss"), (right, "val_accuracy")):
            epochs, mean, low, high = curve(histories, key)
            ax.plot(epochs, mean, marker=".", label=setting)
            ax.fill_between(epochs, low, high, alpha=0.2)
    left.set_title("validation loss (mean, min-max band)")
    right.set_title("validation accuracy (mean, min-max band)")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        whole_epochs(ax)
    right.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def fmt(value, digits=4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def momentum_text(rows: list[dict]) -> str:
    """Says whether the BatchNorm momentum is one value in every trial."""
    values = sorted({m for r in rows for m in r["bn_momentum"]})
    if not values:
        return ""
    if len(values) == 1:
        return f"BatchNorm momentum {values[0]:g} in every trial."
    return (f"**BatchNorm momentum varies across the trials ({', '.join(f'{v:g}' for v in values)})**: it sets the "
            f"moving statistics validation uses, so the validation curves are confounded with it along the axis.")


def table_lines(rows: list[dict]) -> list[str]:
    lines = [f"| setting | runs | not finished | BN momentum | val loss (last {TAIL}) | final val loss | "
             "final val acc | best val loss (epoch) | val AUC | test acc | test sens | test spec | s/run | img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pm = lambda k, d=3: "-" if r[k] is None else f"{r[k]:.{d}f} ± {r[k + '_std']:.{d}f}"  # noqa: E731
        momentum = ", ".join(f"{m:g}" for m in r["bn_momentum"]) or "-"
        lines.append(f"| {r['setting']} | {r['repeats_done']}/{r['repeats']} | {r['flags'] or '-'} | {momentum} | "
                     f"{pm('statistic', 4)} | {pm('final_val_loss')} | {pm('final_val_accuracy')} | "
                     f"{fmt(r['best_val_loss'], 3)} ({fmt(r['best_epoch'], 1)}) | {fmt(r['final_val_auc'], 3)} | "
                     f"{fmt(r['test_accuracy'], 3)} | {fmt(r['test_sensitivity'], 3)} | "
                     f"{fmt(r['test_specificity'], 3)} | {fmt(r['train_seconds'], 0)} | "
                     f"{fmt(r['images_per_second'], 1)} |")
    return lines


def write(folder: Path) -> dict:
    """Writes summary.csv/json, curves.png, compare.png, report.md and report.html into the sweep folder."""
    from engine.data.manifest import load_manifest

    data = collect(folder)
    rows = summarise(data)
    ranking = rank(rows)
    sweep = data["sweep"]
    claims = paper.check(sweep, rows, {s: [r["history"] for r in finished(runs)]
                                       for s, runs in data["settings"].items()})
    deviations = data["deviations"]
    if deviations is None:  # a sweep.json from before deviations were recorded
        deviations = paper.deviations(sweep, load_manifest(sweep.base.records), data["choice"], data["machine"])
    states = trial_states(data)
    atomic_json(folder / "summary.json", {"rows": rows, "ranking": ranking, "claims": claims,
                                          "deviations": deviations, "trials": states}, default=str)
    keys = [k for k in rows[0] if not isinstance(rows[0][k], (list, dict))] if rows else []
    with atomic_open(folder / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot_curves(data, folder / "curves.png")
    plot_compare(data, folder / "compare.png")
    scored = sorted({m.split(" (")[0] for r in rows for m in r["model_scored"]})
    lines = [f"# {sweep.axis} study ({sweep.preset} preset)", "",
             f"{len(rows)} settings x {sweep.repeats} repeat(s); {sweep.base.epochs} epochs; model "
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
        lines += ["One run per setting, as in the paper: no noise verdict is possible; rankings may be noise.", ""]
    lines += table_lines(rows) + ["", momentum_text(rows)]
    finder = folder / "lr_find.json"
    if finder.is_file() and ranking["best"]:
        found = json.loads(finder.read_text())
        if found.get("suggested"):
            best_lr = next(r for r in rows if r["setting"] == ranking["best"]).get("lr")
            where = "" if best_lr is None else (
                f", {'above' if found['suggested'] > best_lr else 'below'} the best setting's {best_lr:g}")
            ranking["text"] += (f"\n\n`engine lr-find` suggested {found['suggested']:.3g} "
                                f"({found['rule']}){where}.")
    lines += ["", "## Ranking (validation only)", "", ranking["text"], "", f"Statistic: {ranking['statistic']}.",
              "Test metrics are reported, never used to choose.", ""]
    if claims:
        lines += ["## The paper's claims", "", "| claim | evidence | verdict |", "|---|---|---|"]
        lines += [f"| {c['claim']} | {c['evidence']} | {c['verdict']} |" for c in claims]
        lines += ["", f"Words: {paper.DEFINITIONS}.", ""]
    if any(st["state"] != "finished" for st in states):
        lines += ["## Trials not finished", ""] + states_text(states) + [""]
    lines += ["## Differences from the paper's setup", ""]
    lines += [f"- {d['what']}: the paper {d['paper']}; here {d['here']}." for d in deviations] or ["- none"]
    lines += ["", "![curves](curves.png)", "", "![compare](compare.png)", ""]
    atomic_write(folder / "report.md", "\n".join(lines))
    write_html(folder / "report.html", lines)
    return {"rows": rows, "ranking": ranking, "claims": claims, "deviations": deviations, "trials": states}


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
