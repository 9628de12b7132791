"""A sweep's report (``engine compare``, ``engine report DIR``): summary.csv
and summary.json, the figures, report.md and report.html, written from the
rows of ``engine.study.collect`` and the ranking of ``engine.study.ranking``.

Ranking uses validation only; test metrics are reported and never used to
choose. The report also checks the paper's claims and lists the deviations
from its setup (``engine.study.paper``); its figures are drawn by
``engine.study.plots``.

Numbers are written as far as they can be trusted: a table shows a mean to the
decimal its SD over runs allows (``engine.study.numbers``), and
``summary.csv``/``summary.json`` hold every float to ``collect.SIGNIFICANT``
significant digits (``collect.rounded``), so the files carry what the runs
measured, not binary float noise.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from engine.errors import UserError
from engine.io import atomic_json, atomic_open, atomic_write
from engine.study import clinical, equivalence, overlap, paper, plots, replicates, snapshot
from engine.study.collect import chance, collect, diverged, finished, rounded, states_text, summarise, trial_states
from engine.study.numbers import epochs_text, pm, significant
from engine.study.ranking import rank
from engine.study.stats import POWER


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
