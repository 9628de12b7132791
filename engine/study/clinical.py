"""A sweep's test metrics with intervals, paired AUC differences and calibration,
from the per-image scores its runs saved (``scores-val.csv``, ``scores-test.csv``
beside each run's ``metrics.json``).

Three functions for the report, the first and last taking ``settings``:
setting name to the folders of its trials (a sweep's ``DIR/trials/<name>``);
only trials whose ``metrics.json`` says ``done`` and lists its score files are
used.

* ``clinical_table(settings, reference)``: per setting, the test metrics of
  its ensemble with intervals, Brier score, calibration error and calibration
  slope and intercept, the paired DeLong difference in test AUC of
  ``reference`` against it, and the spread of each single run's test metrics.
* ``report_lines(table)``: that table as the report's "Test metrics" section.
* ``plot_calibration(settings, best, path)``: ``calibration.png``, the
  ensembles' reliability diagram on test, in the colours, sizes and fonts of
  ``engine.study.plots``; its legend gives the table's ensemble ECE.

**Two views of a setting.** The *ensemble* averages each image's score over
the setting's finished runs and evaluates that one score per image:
intervals then rest on the test images as the sample, which is what the
paired DeLong test needs. No single trained model scores that way, and an
average of scores is at least as good as a typical run, so these metrics can
exceed what one deployed model gives. The *single models* view scores each
run alone at its own threshold and gives the mean, SD and range of its
metrics over the runs: what deploying one model of the setting gives.

**Thresholds.** A fixed threshold is every run's and the ensemble's. With
Youden's J on validation (``--threshold val-youden``) each run's threshold
comes from its own validation scores. The ensemble's comes from the
ensemble's validation scores when every run scored the same validation
images; when they did not (split replicates, ``--splits K``: each split has
its own validation images, and an image in one split's validation set is in
another's training set) the ensemble has no validation set of its own, and
its threshold is the median of its runs' thresholds, each chosen on held-out
images of its own model.

**One ECE per view.** The calibration table and ``calibration.png`` show
the ensemble's ECE (``expected_calibration_error`` of the averaged scores,
10 equal-width bins), named "ensemble" in both and rounded alike; the
diagram bins those same scores. Averaging smooths the single runs'
miscalibration: their own ECEs, mean ± SD over the runs, are in the
single-models table under a name that says so.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from engine.io import save_figure
from engine.study import plots
from engine.study.numbers import decimals, fmt
from engine.errors import DamagedState
from engine.results import runs as run_files
from engine.results.metrics import (CALIBRATION_BINS, binary_metrics, brier_score, calibration_bins, delong_test,
                                    ece_interval, expected_calibration_error, scores_summary, youden_threshold)

POOLING = ("the ensemble of the setting's finished runs: each image's score averaged over the runs (aligned by "
           "image id) and scored once, so the intervals rest on the test images as the sample; not a model anyone "
           "deploys, and usually better than a typical run (its Brier score is never worse than the runs' mean)")
PER_RUN = ("each run scored alone on the test images at its own threshold; mean ± SD (n - 1) over the runs, with "
           "their range: what deploying one model of the setting gives")
DIFFERENCE = "reference AUC - setting AUC of the ensembles on the same test images, DeLong's paired test, 95 % interval"
# The single-model metrics, in table order.
PER_RUN_METRICS = ("accuracy", "sensitivity", "specificity", "auc", "brier", "ece")

FIXED = "fixed"
ENSEMBLE_VALIDATION = ("Youden's J on the ensemble's validation scores (every run scored the same validation images); "
                       "each run alone: Youden's J on its own validation scores")
RUNS_MEDIAN = ("the median of the runs' own thresholds, each Youden's J on its run's validation scores (the runs "
               "have different validation images, so the ensemble has none of its own)")


def clinical_table(settings: Mapping[str, Sequence[Path]], reference: str, split: str = "test",
                   level: float = 0.95) -> dict:
    """The report's test-metrics table: per setting the ensemble's metrics with
    intervals and calibration, the paired DeLong difference in AUC of
    ``reference`` against it, and the single runs' metrics over seeds.

    Args:
        settings: Setting name to its trial folders, in table order.
        reference: The setting the others are compared with (the best on
            validation); its own row has no difference.
        split: The split scored, ``test`` by default.
        level: Coverage of every interval.

    Returns:
        ``{"reference", "split", "pooling", "per_run", "difference",
        "rows"}``, one row per setting in ``settings`` order: ``setting``,
        ``runs`` (runs with scores), ``seeds`` (their trial folder names),
        ``auc_difference``, and when ``runs`` > 0 also:

        * the ensemble's (see ``POOLING``): ``ensemble`` ("ensemble of N
          models", or "single model"), ``threshold`` and ``threshold_rule``,
          and every key of ``scores_summary``: ``n``, ``n_positive``,
          ``metrics`` and ``intervals`` (``[low, high]``) of accuracy,
          sensitivity, specificity, precision, npv, f1, auc and
          balanced_accuracy, ``interval_methods``, ``brier``, ``ece`` (10
          equal-width bins) with ``ece_interval`` and ``ece_calibrated``,
          ``recalibration`` (calibration slope and intercept with intervals,
          or the reason there is none), ``calibration`` (the methods);
        * ``per_run``: ``{"runs", "thresholds" (one per run),
          "threshold_rule", "metrics"}``, ``metrics`` mapping each of
          ``PER_RUN_METRICS`` to ``{"mean", "sd", "min", "max", "values"}``
          over the runs (``sd`` None with one run).

        ``auc_difference`` is None for the reference or when either side has
        no scores, else ``{"difference", "low", "high", "p", "se", "n",
        "method"}`` with difference = reference AUC - this setting's AUC on
        the ``n`` test images both ensembles scored; ``p`` is None where
        DeLong's variance is 0 and ``method`` says which interval stands in.
        Undefined values are None.
    """
    pooled = {name: _pooled_setting(trials, split) for name, trials in settings.items()}
    base = pooled.get(reference)
    rows = []
    for name, found in pooled.items():
        row = {"setting": name, "runs": found["runs"] if found else 0,
               "seeds": found["trials"] if found else [], "auc_difference": None}
        if found:
            row.update(ensemble=_model(found["runs"]),
                       threshold_rule=found["threshold_rule"],
                       **scores_summary(found["positive"], found["score"], found["threshold"], seed=0,
                                        level=level))
            row["per_run"] = found["per_run"]
            if name != reference and base:
                row["auc_difference"] = _paired_difference(base, found, level)
        rows.append(row)
    return {"reference": reference, "split": split, "pooling": POOLING, "per_run": PER_RUN,
            "difference": DIFFERENCE, "rows": rows}


def report_lines(table: dict | None) -> list[str]:
    """The report's test-metrics section (markdown lines) from ``clinical_table``'s result.

    Three tables: the ensembles' discrimination with intervals and the paired
    AUC difference against the reference; the single models' metrics as mean
    ± SD (range) over runs; the ensembles' calibration (Brier, ECE with its
    interval beside the ECE of a perfectly calibrated model, calibration
    slope and intercept). Each number shows as many decimals as its interval
    or SD carries. Nothing when no setting has scored runs.
    """
    if not table or not any(row["runs"] for row in table["rows"]):
        return []
    scored = [row for row in table["rows"] if row["runs"]]
    level = f"{100 * scored[0]['interval_level']:g} %"
    return ["## Test metrics (reported, never used to choose)", "", *_ensemble_lines(table, scored, level),
            *_single_model_lines(table), *_calibration_lines(table, scored, level)]


def _ensemble_lines(table: dict, scored: list[dict], level: str) -> list[str]:
    """The ensembles' table: discrimination with intervals and the paired AUC
    difference, then the threshold rules and the footnotes (†) of the
    difference cells that needed one."""
    shown = ("accuracy", "sensitivity", "specificity", "auc")
    methods = sorted({row["interval_methods"][m] for row in scored for m in shown if m in row["interval_methods"]})
    lines = [f"**Ensembles.** Per setting: {table['pooling']}. Intervals are {level} ({', '.join(methods)}). "
             f"AUC difference: {table['difference']}, reference {table['reference']} (the lowest validation "
             f"statistic; not a claim that it is best unless the ranking says so).", "",
             "| setting | model | threshold | test acc | test sens | test spec | test AUC | AUC difference (p) |",
             "|---|---|---|---|---|---|---|---|"]
    notes = []
    for row in table["rows"]:
        if not row["runs"]:
            lines.append(f"| {row['setting']} | no finished run | - | - | - | - | - | - |")
            continue
        lines.append(f"| {row['setting']} | {row['ensemble']} | {row['threshold']:.3g} | "
                     + " | ".join(_interval_cell(row["metrics"].get(m), row["intervals"].get(m)) for m in shown)
                     + f" | {_difference_cell(row, table['reference'], notes)} |")
    lines += ["", _thresholds_line(scored)]
    return lines + [f"† {method}." for method in dict.fromkeys(notes)]


def _thresholds_line(scored: list[dict]) -> str:
    """Each threshold rule once, with the settings that used it."""
    rules = {}
    for row in scored:
        rules.setdefault(row["threshold_rule"], []).append(row["setting"])
    return "Thresholds (on P(positive)): " + "; ".join(
        f"{', '.join(names)}: {rule}" for rule, names in rules.items()) + "."


def _single_model_lines(table: dict) -> list[str]:
    """The single models' table: each metric as mean ± SD (range) over a setting's runs."""
    lines = ["", f"**Single models.** Per setting: {table['per_run']}.",
             "", "| setting | runs | thresholds | test acc | test sens | test spec | test AUC | Brier | "
             "ECE (runs' mean) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in table["rows"]:
        if not row["runs"]:
            lines.append(f"| {row['setting']} | 0 | - | - | - | - | - | - | - |")
            continue
        spread = row["per_run"]
        lines.append(f"| {row['setting']} | {spread['runs']} | {_thresholds_cell(spread['thresholds'])} | "
                     + " | ".join(_spread_cell(spread["metrics"][m]) for m in PER_RUN_METRICS) + " |")
    return lines + ["", "ECE (runs' mean): each run's own ECE, mean ± SD over the runs; not the ensemble ECE of "
                        "the calibration table below and `calibration.png`."]


def _calibration_lines(table: dict, scored: list[dict], level: str) -> list[str]:
    """The ensembles' calibration table (Brier, ECE beside the ECE if
    calibrated, calibration slope and intercept), then its notes."""
    lines = ["", "**Calibration of the ensembles.**", "",
             f"| setting | Brier | ensemble ECE ({level}) | ECE if calibrated | calibration slope ({level}) | "
             f"calibration intercept ({level}) |", "|---|---|---|---|---|---|"]
    reasons = []
    for row in table["rows"]:
        if not row["runs"]:
            lines.append(f"| {row['setting']} | - | - | - | - | - |")
            continue
        fitted = row["recalibration"]
        lines.append(f"| {row['setting']} | {fmt(row['brier'], 3)} | "
                     f"{_interval_cell(row['ece'], row['ece_interval'])} | {fmt(row['ece_calibrated'], 3)} | "
                     f"{_fitted_cell(fitted, 'slope', row['setting'], reasons)} | "
                     f"{_fitted_cell(fitted, 'intercept', row['setting'], reasons)} |")
    return lines + _calibration_notes(next(row["calibration"] for row in scored), reasons)


def _calibration_notes(methods: dict, reasons: list[str]) -> list[str]:
    """What the calibration table's columns mean (``methods``: the ensembles'
    calibration methods), why a slope or intercept is missing, and where the
    figure is."""
    lines = ["", "- Brier: mean squared error of P(positive).",
             f"- Ensemble ECE: expected calibration error of the ensemble's P(positive) over {CALIBRATION_BINS} "
             "equal-width bins, to the decimals its interval supports; its interval: "
             f"{methods['ece_interval']}. ECE if calibrated: {methods['ece_calibrated']}. A finite set shows "
             "an ECE above 0 even when every P(positive) is right, so an ECE is evidence of miscalibration "
             "only as far as it exceeds this.",
             f"- Calibration slope and intercept: {methods['recalibration']}. A slope below 1 means scores "
             "too extreme, above 1 too timid; an intercept below 0 means scores too high on average, above 0 "
             "too low."]
    lines += [f"- {text}" for text in dict.fromkeys(reasons)]
    return lines + ["", "`calibration.png` shows each setting's ensemble on test: its averaged P(positive) in the "
                        "same bins, and in the legend this ensemble ECE.", ""]


def plot_calibration(settings: Mapping[str, Sequence[Path]], best: Collection[str], path: Path,
                     level: float = 0.95):
    """``calibration.png``: the reliability diagram of each setting's ensemble on test.

    The ensemble is the test table's (``clinical_table``): each image's
    P(positive) averaged over the setting's finished runs. Its curve is the
    observed share of positives against the mean P(positive) in the
    ``CALIBRATION_BINS`` equal-width bins of ``expected_calibration_error``
    (empty bins left out); the dotted gray diagonal is perfect calibration.
    Each setting has its colour of ``plots.setting_styles`` (by its place in
    ``settings``, as in ``compare.png``); the ``best`` settings are thicker,
    with round markers. One legend under the panel gives each setting's
    ensemble ECE, as the table writes it (to the decimals its ``level``
    interval supports), and what the ensemble is: "ECE 0.12 (ensemble of 3
    models)". Sized for one paper column (``plots.COLUMN`` inches at
    ``plots.DPI``).

    Args:
        settings: Setting name to its trial folders, in sweep order.
        best: The settings to draw thicker (the set of best settings), if any.
        path: Where to write the PNG.
        level: Coverage of the ECE interval that sets its decimals (the table's).

    Returns:
        The figure (saved and closed) when it was written; None, writing
        nothing, when no run has saved test scores.
    """
    curves = {name: _reliability(trials, "test", level) for name, trials in settings.items()}
    drawn = [name for name in settings if curves[name]]
    if not drawn:
        return None
    with plots.figure_style():
        import matplotlib.pyplot as plt

        styles = plots.setting_styles(list(settings), best)
        perfect = dict(color="0.55", linewidth=0.8, linestyle=":")
        # The legend under the panel, so no curve is hidden behind it.
        fig, ax = plt.subplots(figsize=(plots.COLUMN, 4.0 + 0.15 * len(drawn)), layout="constrained")
        ax.plot([0, 1], [0, 1], **perfect)
        for name in drawn:
            ax.plot(curves[name]["mean_score"], curves[name]["positive_rate"], **styles[name])
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("mean predicted P(positive)")
        ax.set_ylabel("observed share of positives")
        ax.set_title("test")
        handles = [plt.Line2D([], [], **styles[name]) for name in drawn]
        labels = [f"{name}{' (best)' if name in best else ''}: ECE {curves[name]['ece_text']} "
                  f"({curves[name]['model']})" for name in drawn]
        handles.append(plt.Line2D([], [], **perfect))
        labels.append("perfect calibration")
        fig.legend(handles, labels, loc="outside lower center", frameon=False,
                   title=f"each setting's ensemble, {CALIBRATION_BINS} equal-width bins")
        save_figure(fig, path, dpi=plots.DPI)
    return fig


# --- reading the runs' scores --------------------------------------------------

def _finished_runs(trials: Sequence[Path], split: str) -> list[tuple[Path, dict, dict]]:
    """(folder, metrics.json, scores) of each trial that finished and saved ``split``'s scores.

    The score files named in metrics.json are read, so files left by an
    earlier run of a folder that later diverged are never used.
    """
    out = []
    for folder in trials:
        folder = Path(folder)
        try:
            result = run_files.read_metrics(folder)
            if result is None:
                continue
            entry = (result.get("scores") or {}).get(split)
            if result.get("status") != run_files.STATUS_DONE or not entry or not (folder / entry["file"]).is_file():
                continue
            out.append((folder, result, run_files.read_scores(folder / entry["file"])))
        except (DamagedState, ValueError, KeyError, TypeError, AttributeError):
            # A damaged file: the report lists that trial as failed; its scores are not used.
            continue
    return out


def _aligned(runs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, positive indicators, scores ``(runs, images)``) over the images every run scored."""
    common = sorted(set.intersection(*(set(r["id"].tolist()) for r in runs)))
    scores, positive = [], None
    for r in runs:
        where = {example: i for i, example in enumerate(r["id"].tolist())}
        order = np.array([where[example] for example in common], dtype=np.int64)
        if positive is not None and not np.array_equal(positive, r["positive"][order]):
            raise ValueError("runs disagree on the labels of the same images: were they scored on other records?")
        positive = r["positive"][order]
        scores.append(r["score"][order])
    return np.array(common, dtype=str), positive, np.array(scores)


def _pooled_setting(trials: Sequence[Path], split: str) -> dict | None:
    """A setting's ensemble scores on ``split`` (each image's mean over runs) with its threshold, and
    each run's own metrics at its own threshold; None without scores."""
    runs = _finished_runs(trials, split)
    if not runs:
        return None
    ids, positive, score = _ensemble(runs)
    rules = {(r.get("threshold") or {}).get("chosen_on", "fixed") for _, r, _ in runs}
    if rules == {"val"}:
        validation = [_own_scores(folder, "val") for folder, _, _ in runs]
        # Each run's own threshold, from its own validation images; the recorded one if its scores are gone.
        own = [youden_threshold(v["positive"], v["score"]) if v is not None
               else float(r["threshold"].get("value", 0.5)) for v, (_, r, _) in zip(validation, runs)]
        if all(v is not None for v in validation) and len({frozenset(v["id"].tolist()) for v in validation}) == 1:
            _, val_positive, val_scores = _aligned(validation)
            threshold, rule = youden_threshold(val_positive, val_scores.mean(axis=0)), ENSEMBLE_VALIDATION
        else:
            threshold, rule = float(np.median(own)), RUNS_MEDIAN
    else:
        values = {float((r.get("threshold") or {}).get("value", 0.5)) for _, r, _ in runs}
        if len(values) != 1:
            raise ValueError(f"the runs of one setting used different fixed thresholds: {sorted(values)}")
        threshold, rule = values.pop(), FIXED
        own = [threshold] * len(runs)
    per_run = [_run_metrics(scores["positive"], scores["score"], at) for (_, _, scores), at in zip(runs, own)]
    return {"id": ids, "positive": positive, "score": score, "threshold": threshold,
            "threshold_rule": rule, "runs": len(runs), "trials": [folder.name for folder, _, _ in runs],
            "per_run": {"runs": len(runs), "thresholds": own,
                        "threshold_rule": "fixed" if rule == FIXED else "Youden's J on the run's own validation scores",
                        "metrics": {name: _spread([m[name] for m in per_run]) for name in PER_RUN_METRICS}}}


def _ensemble(runs: list[tuple[Path, dict, dict]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, positive indicators, the ensemble's scores: each image's mean over ``runs``) over the images
    every run scored."""
    ids, positive, scores = _aligned([scores for _, _, scores in runs])
    return ids, positive, scores.mean(axis=0)


def _model(runs: int) -> str:
    """What a setting's ensemble is, in the table and the calibration legend."""
    return f"ensemble of {runs} models" if runs > 1 else "single model"


def _own_scores(folder: Path, split: str) -> dict | None:
    """One run's saved scores of ``split``, None when it has none."""
    found = _finished_runs([folder], split)
    return found[0][2] if found else None


def _run_metrics(positive: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """One run's ``PER_RUN_METRICS`` on all the images it scored (nan where undefined)."""
    found = binary_metrics(positive, score, threshold)
    return {**{name: found[name] for name in ("accuracy", "sensitivity", "specificity", "auc")},
            "brier": brier_score(positive, score), "ece": expected_calibration_error(positive, score)}


def _spread(values: list[float]) -> dict:
    """Mean, SD (n - 1; None for one value), min and max of the defined values, and all the values."""
    defined = [v for v in values if not np.isnan(v)]
    if not defined:
        return {"mean": None, "sd": None, "min": None, "max": None, "values": [None] * len(values)}
    return {"mean": float(np.mean(defined)), "sd": float(np.std(defined, ddof=1)) if len(defined) > 1 else None,
            "min": float(min(defined)), "max": float(max(defined)), "values": [_none_if_nan(v) for v in values]}


def _paired_difference(reference: dict, other: dict, level: float) -> dict | None:
    """DeLong's paired difference ``reference - other`` on the images both scored."""
    common, ref_at, other_at = np.intersect1d(reference["id"], other["id"], return_indices=True)
    positive = reference["positive"][ref_at]
    if not (np.any(positive == 1) and np.any(positive == 0)):
        return None
    found = delong_test(positive, reference["score"][ref_at], other["score"][other_at], level)
    return {"difference": found["difference"], "low": _none_if_nan(found["low"]), "high": _none_if_nan(found["high"]),
            "p": _none_if_nan(found["p"]), "se": _none_if_nan(found["se"]), "n": int(common.size),
            "method": found["method"]}


def _reliability(trials: Sequence[Path], split: str, level: float) -> dict | None:
    """The reliability curve of a setting's ensemble on ``split`` (its averaged scores in the ECE's bins,
    the bins with images) and its ECE as the table writes it; None without scores."""
    runs = _finished_runs(trials, split)
    if not runs:
        return None
    _, positive, score = _ensemble(runs)
    if not positive.size:
        return None
    binned = calibration_bins(positive, score, CALIBRATION_BINS)
    filled = binned["count"] > 0
    interval = ece_interval(positive, score, seed=0, level=level)
    return {"mean_score": binned["mean_score"][filled], "positive_rate": binned["positive_rate"][filled],
            "ece_text": _ece_text(expected_calibration_error(positive, score), interval),
            "model": _model(len(runs)), "runs": len(runs)}


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


# --- the report's cells ----------------------------------------------------------

def _places(interval) -> int:
    """Decimals of a proportion with this ``(low, high)`` interval: as many as its half width carries, 2 or 3."""
    low, high = interval if interval else (None, None)
    return decimals(None if low is None or high is None else (high - low) / 2, 3, 3, 2)


def _interval_cell(value: float | None, interval) -> str:
    """"value (low-high)", as many decimals as the half width carries (2 or 3 for a proportion)."""
    if value is None:
        return "-"
    low, high = interval if interval else (None, None)
    places = _places(interval)
    return f"{fmt(value, places)} ({fmt(low, places)}-{fmt(high, places)})"


def _ece_text(value: float | None, interval) -> str:
    """An ECE as the calibration table writes it, without its interval (``calibration.png``'s legend)."""
    return "-" if value is None or np.isnan(value) else fmt(value, _places(interval))


def _difference_cell(row: dict, reference: str, notes: list[str]) -> str:
    """The paired AUC difference; where it has no p-value, a mark (†) whose note names the interval's method."""
    diff = row["auc_difference"]
    if row["setting"] == reference:
        return "reference"
    if diff is None:
        return "-"
    if diff["low"] is None:  # one positive and one negative image: no variance at all
        return f"{diff['difference']:+.3f}"
    if diff["p"] is None:
        notes.append(diff.get("method") or "no p-value")
        p_text = "no p-value†"
    else:
        p_text = f"p = {diff['p']:.2g}"
    return f"{diff['difference']:+.3f} ({diff['low']:+.3f} to {diff['high']:+.3f}; {p_text})"


def _thresholds_cell(thresholds: list[float]) -> str:
    """One threshold when the runs share it, else their median and range."""
    if len(set(thresholds)) == 1:
        return f"{thresholds[0]:.3g}"
    return f"{float(np.median(thresholds)):.3g} (median; {min(thresholds):.3g}-{max(thresholds):.3g})"


def _spread_cell(stat: dict) -> str:
    """"mean ± SD (min-max)" over runs, to the decimals the SD allows; one run: its value alone."""
    if stat["mean"] is None:
        return "-"
    if stat["sd"] is None:
        return f"{stat['mean']:.3f}"
    places = decimals(stat["sd"], 3, 3, 2)
    return (f"{stat['mean']:.{places}f} ± {stat['sd']:.{places}f} "
            f"({stat['min']:.{places}f}-{stat['max']:.{places}f})")


def _fitted_cell(fitted: dict, key: str, setting: str, reasons: list[str]) -> str:
    """A calibration slope or intercept with its interval (an unbounded side shows as ∞); none: why, in a note."""
    value, (low, high) = fitted[key], fitted[f"{key}_interval"]
    if value is None:
        reasons.append(f"{setting}: no calibration {key}, {fitted[f'{key}_reason']}.")
        return "none (below)"
    # A missing bound of an existing estimate is one the likelihood never reaches (JSON has no infinity).
    places = decimals(None if low is None or high is None else (high - low) / 2, 2, 3, 0)
    low_text = "-∞" if low is None else _unsigned_zero(f"{low:.{places}f}")
    high_text = "∞" if high is None else _unsigned_zero(f"{high:.{places}f}")
    return f"{_unsigned_zero(f'{value:.{places}f}')} ({low_text} to {high_text})"


def _unsigned_zero(text: str) -> str:
    """"-0.00" as "0.00": a tiny negative rounded to zero has no sign worth showing."""
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text
