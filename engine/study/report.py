"""A sweep's summary, ranking, plots and report (``engine compare``, ``engine report DIR``).

Ranking uses validation only; test metrics are reported and never used to
choose. The verdict compares the best setting's mean final validation loss
with every other setting's by Welch's t interval on the difference over
repeats, and says "not distinguishable from noise" when the interval holds 0.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np

from engine.config import SweepConfig, from_json
from engine.io import atomic_json, atomic_open, atomic_write, save_figure
from engine.study.sweep import trials

# Two-sided 95 % quantiles of Student's t for 1-30 degrees of freedom.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
       2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
       2.045, 2.042)
# The paper's colours: train acc yellow, val acc blue, train loss red, val loss green.
COLOURS = {"accuracy": "gold", "val_accuracy": "tab:blue", "loss": "tab:red", "val_loss": "tab:green"}


def t95(df: float) -> float:
    """t quantile for a (possibly fractional) Welch df, linear between table rows; 1.96 beyond."""
    if df >= len(T95):
        return 1.96
    low = max(1, int(math.floor(df)))
    if low >= len(T95):
        return T95[-1]
    frac = df - low
    return T95[low - 1] + frac * (T95[min(low, len(T95) - 1)] - T95[low - 1])


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float, float] | None:
    """Mean difference b - a and its 95 % Welch interval; None with fewer than 2 runs each."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(b) - statistics.fmean(a)
    if va + vb == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t95(df) * math.sqrt(va + vb)
    return diff, diff - half, diff + half


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as f:
        return [{k: (float(v) if v not in ("", "None") else None) for k, v in row.items()} for row in csv.DictReader(f)]


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
    return {"sweep": cfg, "settings": settings, "machine": sweep.get("machine", {})}


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(data: dict) -> list[dict]:
    """One row per setting: means and std over its finished repeats."""
    rows = []
    for setting, runs in data["settings"].items():
        done = [r for r in runs if r["metrics"] and r["metrics"].get("status") == "done" and r["history"]]
        row = {"setting": setting, "lr": runs[0]["config"].lr, "batch_size": runs[0]["config"].batch_size,
               "repeats_done": len(done), "repeats": len(runs),
               "statuses": [r["metrics"]["status"] if r["metrics"] else "queued" for r in runs]}
        final = {k: [r["history"][-1].get(k) for r in done] for k in ("val_loss", "val_accuracy", "loss", "accuracy",
                                                                     "val_auc", "val_sensitivity",
                                                                     "val_specificity")}
        for key, values in final.items():
            row[f"final_{key}"], row[f"final_{key}_std"] = mean_std(values)
        best = [min(r["history"], key=lambda h: h["val_loss"] if h["val_loss"] is not None else math.inf)
                for r in done]
        row["best_val_loss"], row["best_val_loss_std"] = mean_std([b["val_loss"] for b in best])
        row["best_epoch"], _ = mean_std([b["epoch"] for b in best])
        for metric in ("accuracy", "sensitivity", "specificity", "auc"):
            row[f"test_{metric}"], row[f"test_{metric}_std"] = mean_std(
                [r["metrics"].get("test", {}).get("metrics", {}).get(metric) for r in done])
        row["test_interval_first_run"] = {m: done[0]["metrics"].get("test", {}).get("intervals", {}).get(m)
                                          for m in ("accuracy", "sensitivity", "specificity", "auc")} if done else None
        seconds = [sum(h["seconds"] for h in r["history"]) for r in done]
        row["train_seconds"], _ = mean_std(seconds)
        row["images_per_second"], _ = mean_std([statistics.median(h["images_per_second"] for h in r["history"])
                                                for r in done])
        row["final_val_losses"] = final["val_loss"]
        rows.append(row)
    return rows


def rank(rows: list[dict]) -> dict:
    """Best setting by mean final validation loss, and the evidence against each other."""
    ready = [r for r in rows if r["final_val_loss"] is not None]
    if not ready:
        return {"best": None, "statistic": None, "comparisons": [], "text": "no finished trial yet"}
    best = min(ready, key=lambda r: r["final_val_loss"])
    comparisons = []
    for row in ready:
        if row is best:
            continue
        interval = welch_interval(best["final_val_losses"], row["final_val_losses"])
        if interval is None:
            verdict = "no noise verdict possible (fewer than 2 repeats)"
        elif interval[1] <= 0 <= interval[2]:
            verdict = "not distinguishable from noise"
        else:
            verdict = "worse" if interval[0] > 0 else "better"
        comparisons.append({"setting": row["setting"], "difference": None if interval is None else interval[0],
                            "interval": None if interval is None else [interval[1], interval[2]],
                            "verdict": verdict})
    lines = [f"Best on validation: **{best['setting']}** (mean final val loss {best['final_val_loss']:.4f} over "
             f"{best['repeats_done']} run{'s' if best['repeats_done'] != 1 else ''})."]
    for c in comparisons:
        if c["interval"] is None:
            lines.append(f"- {c['setting']}: {c['verdict']}.")
        else:
            lines.append(f"- {c['setting']}: val loss {c['difference']:+.4f} "
                         f"(95 % Welch interval {c['interval'][0]:+.4f} to {c['interval'][1]:+.4f}): {c['verdict']}.")
    return {"best": best["setting"], "comparisons": comparisons, "text": "\n".join(lines),
            "statistic": "difference of mean final validation loss, each setting against the best, "
                         "95 % Welch t interval over repeats"}


def plot_curves(data: dict, path: Path) -> None:
    """The paper's layout: one panel per setting, four curves, y from 0 to 1."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(data["settings"].items())
    cols = min(3, len(settings))
    rows = math.ceil(len(settings) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (setting, runs) in zip(axes.flat, settings):
        run = next((r for r in runs if r["history"]), None)
        ax.set_title(setting, fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("epoch")
        if run is None:
            ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
            continue
        epochs = [h["epoch"] for h in run["history"]]
        for key, label in (("accuracy", "train acc"), ("val_accuracy", "val acc"), ("loss", "train loss"),
                           ("val_loss", "val loss")):
            values = np.array([np.nan if h.get(key) is None else h[key] for h in run["history"]])
            ax.plot(epochs, np.clip(values, 0, 1), color=COLOURS[key], label=label, marker=".")
            clipped = values > 1
            if clipped.any():
                ax.scatter(np.array(epochs)[clipped], np.ones(clipped.sum()), marker="^", color=COLOURS[key],
                           zorder=3)
    for ax in list(axes.flat)[len(settings):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8, loc="center right")
    fig.suptitle("Training and validation curves (first repeat; losses > 1 clipped, marked ▲)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def plot_compare(data: dict, path: Path) -> None:
    """Validation loss and accuracy of every setting on shared axes, mean ± std over repeats."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for setting, runs in data["settings"].items():
        histories = [r["history"] for r in runs if r["history"]]
        if not histories:
            continue
        length = min(len(h) for h in histories)
        for ax, key in ((left, "val_loss"), (right, "val_accuracy")):
            values = np.array([[np.nan if h[i].get(key) is None else h[i][key] for i in range(length)]
                               for h in histories])
            mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
            epochs = np.arange(1, length + 1)
            ax.plot(epochs, mean, marker=".", label=setting)
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    left.set_title("validation loss")
    right.set_title("validation accuracy")
    for ax in (left, right):
        ax.set_xlabel("epoch")
    right.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def fmt(value, digits=4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def write(folder: Path) -> dict:
    """Writes summary.csv/json, curves.png, compare.png and report.md into the sweep folder."""
    data = collect(folder)
    rows = summarise(data)
    ranking = rank(rows)
    sweep = data["sweep"]
    atomic_json(folder / "summary.json", {"rows": rows, "ranking": ranking}, default=str)
    keys = [k for k in rows[0] if not isinstance(rows[0][k], (list, dict))] if rows else []
    with atomic_open(folder / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot_curves(data, folder / "curves.png")
    plot_compare(data, folder / "compare.png")
    lines = [f"# {sweep.axis} study ({sweep.preset} preset)", "",
             f"{len(rows)} settings x {sweep.repeats} repeat(s); {sweep.base.epochs} epochs; model "
             f"{sweep.base.model.name} ({sweep.base.model.weights} weights) at {sweep.base.model.image_size} px; "
             f"augmentation {sweep.base.augment}; budget {sweep.budget}, lr scaling {sweep.lr_scaling}.", ""]
    if sweep.axis in ("batch", "grid") and sweep.budget == "epochs" and len(sweep.batch_sizes) > 1:
        low, high = min(sweep.batch_sizes), max(sweep.batch_sizes)
        lines += [f"With an equal number of epochs, a larger batch makes fewer optimizer updates (batch {high} "
                  f"gets {low}/{high} of batch {low}'s): as in the paper's design, batch size and the number of "
                  f"updates are confounded. `--budget steps` separates them.", ""]
    if sweep.repeats == 1:
        lines += ["One run per setting, as in the paper: no noise verdict is possible; rankings may be noise.", ""]
    lines += ["| setting | runs | final val loss | final val acc | best val loss (epoch) | val AUC | "
              "test acc | test sens | test spec | s/run | img/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pm = lambda k, d=3: "-" if r[k] is None else f"{r[k]:.{d}f} ± {r[k + '_std']:.{d}f}"  # noqa: E731
        lines.append(f"| {r['setting']} | {r['repeats_done']}/{r['repeats']} | {pm('final_val_loss')} | "
                     f"{pm('final_val_accuracy')} | {fmt(r['best_val_loss'], 3)} ({fmt(r['best_epoch'], 1)}) | "
                     f"{fmt(r['final_val_auc'], 3)} | {fmt(r['test_accuracy'], 3)} | {fmt(r['test_sensitivity'], 3)} | "
                     f"{fmt(r['test_specificity'], 3)} | {fmt(r['train_seconds'], 0)} | "
                     f"{fmt(r['images_per_second'], 1)} |")
    finder = folder / "lr_find.json"
    if finder.is_file() and ranking["best"]:
        found = json.loads(finder.read_text())
        if found.get("suggested"):
            best_lr = next(r for r in rows if r["setting"] == ranking["best"]).get("lr")
            where = "" if best_lr is None else (
                f", {'above' if found['suggested'] > best_lr else 'below'} the best setting's {best_lr:g}")
            ranking["text"] += (f"\n\n`engine lr-find` suggested {found['suggested']:.3g} "
                                f"({found['rule']}){where}.")
    lines += ["", "## Ranking (validation only)", "", ranking["text"], "",
              f"Statistic: {ranking['statistic']}." if ranking["statistic"] else "",
              "Test metrics are reported, never used to choose.", "",
              "![curves](curves.png)", "", "![compare](compare.png)", ""]
    atomic_write(folder / "report.md", "\n".join(lines))
    write_html(folder / "report.html", lines)
    return {"rows": rows, "ranking": ranking}


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
