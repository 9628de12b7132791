"""A sweep's report (``engine compare``, ``engine report DIR``): summary.csv
and summary.json, the figures, report.md and report.html, written from the
rows of ``engine.study.collect`` and the ranking of ``engine.study.ranking``.

Ranking uses validation only; test metrics are reported and never used to
choose. The report also checks the paper's claims (``engine.study.claims``)
and lists the deviations from its setup (``engine.study.paper``); its figures
are drawn by ``engine.study.plots``.

Numbers are written as far as they can be trusted: a table shows a mean to the
decimal its SD over runs allows (``engine.study.numbers``), and
``summary.csv``/``summary.json`` hold every float to ``collect.SIGNIFICANT``
significant digits (``collect.rounded``), so the files carry what the runs
measured, not binary float noise.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from engine.errors import UserError
from engine.io import atomic_json, atomic_open, atomic_write
from engine.study import axes as axes_lib, claims as claims_lib, clinical, equivalence, overlap, paper, plots
from engine.study import replicates, snapshot, webpage
from engine.study.collect import chance, collect, diverged, ranked, rounded, states_text, summarise, trial_states
from engine.study.numbers import epochs_text, pm, significant
from engine.study.ranking import answer as ranking_answer, rank
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
        lines.append(f"| {r['setting']} | {n}/{r['repeats']} | {md_text(r['flags']) or '-'} | {momentum} | "
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
    found = (equivalence.lines([r["setting"] for r in ready], claims_lib.unit_matrix(ready), margin, ratio)
             if ready else [])
    return [f"## Within the margin of {margin:g} (stated before training)", "",
            "Two one-sided tests at 5 % each: \"equivalent within D\" when the pair's 90 % interval lies inside -D "
            "to +D; \"best within D\" when a setting is worse than every other by less than D, each pair one-sided "
            "at 5 % (intersection-union). Each line holds at 5 % on its own.", "",
            *(f"- {line}" for line in found or ["no setting has 2 finished runs: nothing to test"]), ""]


def md_text(text: str) -> str:
    """Text from outside the report (a failure's reason, a path) as literal
    markdown: its markup characters escaped, its lines joined, so that it
    neither formats nor breaks a table."""
    # An underscore inside a word (lr0.01_seed0) never formats; one at a word's edge may.
    return re.sub(r"([\\`*\[\]<>|#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))", r"\\\1", " ".join(str(text).split()))


def cell(text: str) -> str:
    """The report's own text in a table cell: a "|" would end the cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def analyse(folder: Path) -> dict:
    """Everything the report states, from the sweep's run folders alone: the
    rows, the ranking, the paper's claims, the deviations, the trials'
    states, the test metrics and the records' split counts."""
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
    claims = claims_lib.check(sweep, rows, {s: [r["history"] for r in ranked(runs)] + [None] * len(diverged(runs))
                                       for s, runs in data["settings"].items()}, ratio, one_split=not splits)
    deviations = data["deviations"]
    if deviations is None:  # a sweep.json from before deviations were recorded
        deviations = paper.deviations(sweep, load_manifest(sweep.base.records), data["choice"], data["machine"])
    try:  # the records may live on another machine than the report
        counts = load_manifest(sweep.base.records)["splits"]
    except (OSError, ValueError, KeyError, TypeError, UserError):
        counts = {}
    folders = {setting: [r["config"].out for r in runs] for setting, runs in data["settings"].items()}
    reference = ranking["best"] or ranking["leader"]
    # The best set is drawn thicker only when it leaves some setting out: a set of all is no emphasis.
    emphasis = ranking["best_set"] if any(c.get("verdict", "").startswith("worse")
                                          for c in ranking["comparisons"]) else []
    return {"data": data, "rows": rows, "sweep": sweep, "splits": splits, "ratio": ratio, "ranking": ranking,
            "claims": claims, "deviations": deviations, "states": trial_states(data), "learned": chance(rows),
            "counts": counts, "folders": folders, "emphasis": emphasis,
            "test": clinical.clinical_table(folders, reference) if reference else None}


def write_figures(folder: Path, found: dict) -> dict[str, bool]:
    """curves.png, compare.png, calibration.png and (split replicates)
    splits.png; which of them were drawn."""
    data = found["data"]
    # Finished runs; a setting with none shows what its runs recorded.
    shown = {setting: [r["history"] for r in ranked(runs)] or [r["history"] for r in runs if r["history"]]
             for setting, runs in data["settings"].items()}
    plots.plot_curves(shown, folder / "curves.png")
    plots.plot_compare(shown, folder / "compare.png", found["emphasis"])
    drawn = {"curves": True, "compare": True,
             "calibration": clinical.plot_calibration(found["folders"], found["emphasis"],
                                                      folder / "calibration.png") is not None}
    compared = replicates.comparisons(found["rows"], found["ranking"]) if found["splits"] else []
    drawn["splits"] = bool(compared) and plots.plot_splits(compared, folder / "splits.png",
                                                           unit="val loss at the snapshot") is not None
    return drawn


def write_summaries(folder: Path, found: dict) -> None:
    """summary.csv (one row per setting) and summary.json (everything stated)."""
    rows = found["rows"]
    keys = [k for k in rows[0] if not isinstance(rows[0][k], (list, dict))] if rows else []
    with atomic_open(folder / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rounded(rows))
    atomic_json(folder / "summary.json", rounded({
        "rows": rows, "ranking": found["ranking"], "answer": found["answer"], "chance": found["learned"],
        "claims": found["claims"], "deviations": found["deviations"], "trials": found["states"],
        "test": found["test"]}), default=str)


def what_was_run(found: dict) -> str:
    """The report's first line: the design, the model and the numerics."""
    sweep, rows, choice = found["sweep"], found["rows"], found["data"]["choice"]
    seeds = f"{sweep.repeats} seed{'s' if sweep.repeats != 1 else ''}"
    runs = f"{sweep.splits} splits x {seeds}" if found["splits"] else f"{seeds} on the records' own split"
    return (f"{len(rows)} settings x {runs}; {sweep.base.epochs} epochs; {sweep.base.model.name} "
            f"({sweep.base.model.weights} weights) at {sweep.base.model.image_size} px; augmentation "
            f"{sweep.base.augment}; budget {sweep.budget}, lr scaling {sweep.lr_scaling}; "
            f"{choice.get('precision', '?')}, XLA {choice.get('xla', '?')}")


def claims_table(claims: list[dict]) -> list[str]:
    """The paper's claims as the first screen shows them: claim, verdict, the
    one-line reason and what would decide it (the evidence: ``claims_lines``)."""
    if not claims:
        return []
    lines = ["| the paper's claim | verdict | why | what would decide it |", "|---|---|---|---|"]
    for c in claims:
        verdict = c["verdict"] + (f" ({c['runs_label']})" if c.get("runs_label") else "")
        remedy = f"`{c['remedy']}`" if c.get("remedy") else "-"
        lines.append(f"| {cell(c.get('shown', c['claim']))} | {cell(verdict)} | {cell(c.get('reason', ''))} | "
                     f"{remedy} |")
    return lines


def first_screen(found: dict, drawn: dict[str, bool]) -> list[str]:
    """What a reader takes in first: what was run, the answer, the paper's
    claims, where the figures are."""
    sweep = found["sweep"]
    figures = [f"`{name}.png`" for name in ("curves", "compare", "calibration", "splits") if drawn.get(name)]
    lines = [f"# {sweep.axis} study ({sweep.preset} preset)", "", f"**What was run:** {what_was_run(found)}.", "",
             f"**Answer (validation only):** {found['answer']}", ""]
    lines += claims_table(found["claims"]) + ([""] if found["claims"] else [])
    lines += [f"Figures: {', '.join(figures)} in this folder; report.html shows each beside the section that "
              f"cites it. The details follow; how to read them is at the end.", ""]
    return lines


def design_lines(found: dict) -> list[str]:
    """The design's details: the one snapshot, what the comparisons and the
    test metrics describe, and the smallest difference the design could
    detect; the confound of the batch axis."""
    sweep, splits, ranking, rows = found["sweep"], found["splits"], found["ranking"], found["rows"]
    lines = [snapshot.describe(sweep.base.select, sweep.base.epochs), "",
             replicates.describe(splits, sweep.repeats, found["counts"].get("test", {}).get("count")), ""]
    pairs = len(ranking["comparisons"]) and len(rows) * (len(rows) - 1) // 2
    if ranking.get("detectable"):
        low, high = ranking["detectable"]
        span = f"{low:.2g}" if f"{low:.2g}" == f"{high:.2g}" else f"{low:.2g} to {high:.2g}"
        method = (f"corrected resampled t over {sweep.splits} splits (r = {found['ratio']:.2g}, assuming "
                  f"{overlap.SHARE:.0%} of the setting x split interaction comes from shared training images)"
                  if splits else f"paired t over {sweep.repeats} seeds on this validation set")
        bound = (" (the r term bounds it: more splits narrow it little, more images would)"
                 if splits and found["ratio"] >= 0.5 and sweep.splits >= 5 else "")
        lines += [f"Comparisons: {method}, Holm over {pairs} pairs; the design detects with {POWER * 100:g} % power "
                  f"a difference in the ranking statistic of {span}{bound}.", ""]
    elif sweep.repeats * max(sweep.splits, 1) < 2:
        lines += ["Comparisons: none possible with one run per setting (as in the paper): the order of the "
                  "statistics may be noise; `--repeats 3` trains 3 splits per setting and makes them possible.", ""]
    warning = replicates.design_warning(splits)
    if warning:
        lines += [f"Warning: {warning}.", ""]
    if sweep.axis in ("batch", "grid") and sweep.budget == "epochs" and len(sweep.batch_sizes) > 1:
        low, high = min(sweep.batch_sizes), max(sweep.batch_sizes)
        lines += [f"With an equal number of epochs, a larger batch makes fewer optimizer updates (batch {high} "
                  f"gets {low}/{high} of batch {low}'s): as in the paper's design, batch size and the number of "
                  f"updates are confounded. `--budget steps` separates them.", ""]
    return lines


def ranking_lines(folder: Path, found: dict) -> list[str]:
    """The ranking's section: the best line, each comparison, the statistic
    and its test, and ``engine lr-find``'s suggestion when there is one."""
    ranking, rows = found["ranking"], found["rows"]
    text = ranking["text"]
    finder = folder / "lr_find.json"
    if finder.is_file() and ranking["leader"]:
        found_lr = json.loads(finder.read_text())
        if found_lr.get("suggested"):
            best_lr = next(r for r in rows if r["setting"] == ranking["leader"]).get("lr")
            where = "" if best_lr is None else (
                f", {'above' if found_lr['suggested'] > best_lr else 'below'} the lowest-statistic setting's "
                f"{best_lr:g}")
            text += f"\n\n`engine lr-find` suggested {found_lr['suggested']:.3g} ({found_lr['rule']}){where}."
    return ["## Ranking (validation only)", "", text, "",
            "Test metrics are reported, never used to choose. The statistic and its tests: see How to read this "
            "report, at the end.", ""]


def claims_lines(found: dict) -> list[str]:
    """The claims' evidence: every number each verdict rests on."""
    if not found["claims"]:
        return []
    lines = ["## The paper's claims: the evidence", "", "| claim | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {cell(c.get('shown', c['claim']))} | {cell(c['verdict'])} | {cell(c['evidence'])} |"
              for c in found["claims"]]
    return lines + [""]


def reading_lines(found: dict) -> list[str]:
    """How to read this report: the words, the rules and each claim's chance
    of a wrong verdict, as short lists."""
    lines = ["## How to read this report", "", "The ranking:", "",
             f"- statistic: {found['ranking']['statistic']}.",
             "- \"the set of best settings\": those no other setting is significantly better than.", ""]
    if found["claims"]:
        sweep, rows = found["sweep"], found["rows"]
        lines += ["The paper's claims:", ""] + [f"- {rule}." for rule in claims_lib.RULES] + [""]
        lines += ["Each claim's chance of a wrong verdict:", ""]
        lines += [f"- {c['claim']}: {claims_lib.ERROR_RATES[c['claim']]}." for c in found["claims"]
                  if c["claim"] in claims_lib.ERROR_RATES]
        axes = [a for a in ("lr", "batch") if axes_lib.family(sweep, rows, a)]
        lines += ["- at least one claim of the table wrong on a sweep where every setting is the same: "
                  + ", ".join(f"{claims_lib.NULL_ANY_CLAIM[a]:.0%} on the {a} axis" for a in axes)
                  + f" (simulated on {claims_lib.NULL_DESIGN}).", ""]
    return lines


def details(folder: Path, found: dict, drawn: dict[str, bool]) -> list[str]:
    """The report after its first screen: each section with the figure it cites."""
    rows, sweep = found["rows"], found["sweep"]
    lines = ["## Curves", "", "`curves.png`: each setting's training and validation loss and accuracy by epoch "
             "(mean over its runs); `compare.png`: the settings side by side.", "",
             "![curves](curves.png)", "", "![compare](compare.png)", "",
             "## Results (validation)", ""]
    if found["learned"]["no_setting_learned"]:
        lines += [found["learned"]["text"], ""]
    lines += design_lines(found)
    lines += table_lines(rows) + ["", momentum_text(rows, found["counts"].get("train", {}).get("count"),
                                                     sweep.base.bn_stats), ""]
    lines += ranking_lines(folder, found)
    if sweep.margin is not None:
        lines += margin_lines(rows, sweep.margin, found["ratio"])
    if found["splits"]:
        lines += ["## Across splits", "", "Where each setting's spread comes from (one-way random-effects "
                  "ANOVA of its runs, split x seed; method of moments; the splits' share with its exact 95 % "
                  "interval); `splits.png` shows each comparison split by split.", ""]
        lines += replicates.variance_lines(rows) + ([""] + ["![splits](splits.png)"] if drawn["splits"] else [])
        lines += [""]
    lines += claims_lines(found)
    if any(st["state"] != "finished" for st in found["states"]):
        # A failure's reason is the error's own text: literal, not markdown.
        states = [st | {"detail": md_text(st["detail"])} for st in found["states"]]
        lines += ["## Trials not finished", ""] + states_text(states) + [""]
    test = clinical.report_lines(found["test"])
    lines += test + (["![calibration](calibration.png)", ""] if test and drawn["calibration"] else [])
    lines += ["## Differences from the paper's setup", ""]
    lines += [f"- {d['what']}: the paper {d['paper']}; here {d['here']}." for d in found["deviations"]] or ["- none"]
    return lines + [""] + reading_lines(found)


def write(folder: Path) -> dict:
    """Writes summary.csv/json, the figures, report.md and report.html into
    the sweep folder; returns what the report states (``summary``: the
    terminal's closing lines)."""
    found = analyse(folder)
    found["answer"] = ranking_answer(found["ranking"], found["learned"])
    # The summaries first, the figures (the slow part), then the report: a
    # report.md is never older than the figures it cites.
    write_summaries(folder, found)
    drawn = write_figures(folder, found)
    lines = first_screen(found, drawn) + details(folder, found, drawn)
    text = "\n".join(lines)
    atomic_write(folder / "report.md", text)
    sweep = found["sweep"]
    atomic_write(folder / "report.html", webpage.render(text, folder, f"{sweep.axis} study ({sweep.preset} preset)",
                                                        open_sections=("Trials not finished",)))
    return {"rows": found["rows"], "ranking": found["ranking"], "chance": found["learned"],
            "claims": found["claims"], "deviations": found["deviations"], "trials": found["states"],
            "answer": found["answer"], "what": what_was_run(found)}


def rewrite(folder: Path) -> None:
    """``engine report``: a sweep's summary, plots and report rewritten from
    what its trials wrote; the state of every trial and the report's closing
    summary printed. Imports no TensorFlow: a folder of finished trials is
    read as files."""
    from engine.study import show

    if not (folder / "sweep.json").is_file():
        raise UserError(f"{folder} is not a sweep folder (no sweep.json)")
    written = write(folder)
    show.line("\n".join(states_text(written["trials"])))
    show.summary(written, folder)
