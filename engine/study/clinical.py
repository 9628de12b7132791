"""A sweep's test metrics with intervals, paired AUC differences and calibration,
from the per-image scores its runs saved (``scores-val.csv``, ``scores-test.csv``
beside each run's ``metrics.json``).

Two functions for the report, both taking ``settings``: setting name to the
folders of its trials (a sweep's ``DIR/trials/<name>``); only trials whose
``metrics.json`` says ``done`` and lists its score files are used.

* ``clinical_table(settings, reference)``: per setting, the test metrics with
  intervals, Brier score and calibration error, and the paired DeLong
  difference in test AUC of ``reference`` against it.
* ``plot_calibration(settings, best, path)``: ``calibration.png``, a
  reliability diagram of validation and test, the mean over seeds per bin,
  in the colours, sizes and fonts of ``engine.study.plots``.

**Pooling over seeds.** ``clinical_table`` averages each image's score over a
setting's finished runs and evaluates that one score per image (the seed
ensemble of the setting): intervals then rest on the test images as the
sample, which is what the paired DeLong test needs, and the threshold is
chosen as the runs chose theirs (the fixed value, or Youden's on the
averaged validation scores). The averaged scores are at least as good as a
typical single run's, so these metrics can exceed the per-run means of the
report's main table. The calibration diagram instead averages the seeds'
per-bin values, since averaging scores would smooth away the single runs'
miscalibration.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from engine.io import save_figure
from engine.study import plots
from engine.training import calibration_bins, delong_test, read_scores, scores_summary, youden_threshold

POOLING = ("each image's score averaged over the setting's finished runs (its seed ensemble), aligned by image "
           "id; the threshold as the runs chose theirs (fixed, or Youden's J on the averaged validation scores)")
DIFFERENCE = "reference AUC - setting AUC on the same test images, DeLong's paired test, 95 % interval"


def clinical_table(settings: Mapping[str, Sequence[Path]], reference: str, split: str = "test",
               level: float = 0.95) -> dict:
    """The report's test-metrics table: per setting metrics with intervals and
    the paired DeLong difference in AUC of ``reference`` against it.

    Args:
        settings: Setting name to its trial folders, in table order.
        reference: The setting the others are compared with (the best on
            validation); its own row has no difference.
        split: The split scored, ``test`` by default.
        level: Coverage of every interval.

    Returns:
        ``{"reference", "split", "pooling", "difference", "rows"}``, one row
        per setting in ``settings`` order: ``setting``, ``runs`` (runs with
        scores), ``seeds`` (their trial folder names), and when ``runs`` > 0
        also ``n``, ``n_positive``, ``threshold``, ``threshold_rule``,
        ``metrics`` and ``intervals`` (``[low, high]``) of accuracy,
        sensitivity, specificity, precision, npv, f1, auc and
        balanced_accuracy, ``interval_methods``, ``brier``, ``ece`` (10
        equal-width bins) and ``auc_difference``: None for the reference or
        when either side has no scores, else ``{"difference", "low", "high",
        "p", "se", "n"}`` with difference = reference AUC - this setting's
        AUC on the ``n`` test images both scored. Undefined values are None.
    """
    pooled = {name: _pooled_setting(trials, split) for name, trials in settings.items()}
    base = pooled.get(reference)
    rows = []
    for name, found in pooled.items():
        row = {"setting": name, "runs": found["runs"] if found else 0,
               "seeds": found["trials"] if found else [], "auc_difference": None}
        if found:
            row.update(threshold_rule=found["threshold_rule"],
                       **scores_summary(found["positive"], found["score"], found["threshold"], seed=0,
                                        level=level))
            if name != reference and base:
                row["auc_difference"] = _paired_difference(base, found, level)
        rows.append(row)
    return {"reference": reference, "split": split, "pooling": POOLING, "difference": DIFFERENCE, "rows": rows}


def plot_calibration(settings: Mapping[str, Sequence[Path]], best: Collection[str], path: Path,
                     bins: int = 10):
    """``calibration.png``: reliability diagrams of validation (top) and test (bottom).

    For each setting the observed share of positives against the mean
    P(positive) in ``bins`` equal-width bins, each the mean over the
    setting's finished runs that have images in that bin; the dotted gray
    diagonal is perfect calibration. Each setting has its colour of
    ``plots.setting_styles`` (by its place in ``settings``, as in
    ``compare.png``); the ``best`` settings are thicker, with round markers.
    One legend under both panels gives each setting's expected calibration
    error on validation and test (mean over its runs). Sized for one paper
    column (``plots.COLUMN`` inches at ``plots.DPI``).

    Args:
        settings: Setting name to its trial folders, in sweep order.
        best: The settings to draw thicker (the set of best settings), if any.
        path: Where to write the PNG.
        bins: Number of equal-width bins of P(positive).

    Returns:
        The figure (saved and closed) when it was written; None, writing
        nothing, when no run has saved scores.
    """
    curves = {split: {name: _reliability(trials, split, bins) for name, trials in settings.items()}
              for split in ("val", "test")}
    drawn = [name for name in settings if curves["val"][name] or curves["test"][name]]
    if not drawn:
        return None
    with plots.figure_style():
        import matplotlib.pyplot as plt

        styles = plots.setting_styles(list(settings), best)
        perfect = dict(color="0.55", linewidth=0.8, linestyle=":")
        # One legend under both panels, so no curve is hidden behind it.
        fig, axes = plt.subplots(2, 1, figsize=(plots.COLUMN, 5.6 + 0.15 * len(drawn)), layout="constrained")
        for ax, (split, by_setting) in zip(axes, curves.items()):
            ax.plot([0, 1], [0, 1], **perfect)
            for name in drawn:
                if by_setting[name]:
                    ax.plot(by_setting[name]["mean_score"], by_setting[name]["positive_rate"], **styles[name])
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_aspect("equal")
            ax.set_xlabel("mean predicted P(positive)")
            ax.set_ylabel("observed share of positives")
            ax.set_title("validation" if split == "val" else "test")
        handles = [plt.Line2D([], [], **styles[name]) for name in drawn]
        labels = [f"{name}{' (best)' if name in best else ''}: ECE " + ", ".join(
            f"{split} {curves[split][name]['ece']:.3f}" for split in ("val", "test") if curves[split][name])
            for name in drawn]
        handles.append(plt.Line2D([], [], **perfect))
        labels.append("perfect calibration")
        fig.legend(handles, labels, loc="outside lower center", frameon=False,
                   title=f"mean over each setting's runs, {bins} equal-width bins")
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
        path = folder / "metrics.json"
        if not path.is_file():
            continue
        try:
            result = json.loads(path.read_text())
            entry = (result.get("scores") or {}).get(split)
            if result.get("status") != "done" or not entry or not (folder / entry["file"]).is_file():
                continue
            out.append((folder, result, read_scores(folder / entry["file"])))
        except (ValueError, KeyError, TypeError, AttributeError):
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
    """A setting's seed-averaged scores on ``split`` and its threshold; None without scores."""
    runs = _finished_runs(trials, split)
    if not runs:
        return None
    ids, positive, scores = _aligned([scores for _, _, scores in runs])
    rules = {(r.get("threshold") or {}).get("chosen_on", "fixed") for _, r, _ in runs}
    if rules == {"val"}:
        val = _finished_runs([folder for folder, _, _ in runs], "val")
        _, val_positive, val_scores = _aligned([scores for _, _, scores in val])
        threshold = youden_threshold(val_positive, val_scores.mean(axis=0))
        rule = "Youden's J on the validation scores averaged over the runs"
    else:
        values = {float((r.get("threshold") or {}).get("value", 0.5)) for _, r, _ in runs}
        if len(values) != 1:
            raise ValueError(f"the runs of one setting used different fixed thresholds: {sorted(values)}")
        threshold, rule = values.pop(), "fixed"
    return {"id": ids, "positive": positive, "score": scores.mean(axis=0), "threshold": threshold,
            "threshold_rule": rule, "runs": len(runs), "trials": [folder.name for folder, _, _ in runs]}


def _paired_difference(reference: dict, other: dict, level: float) -> dict | None:
    """DeLong's paired difference ``reference - other`` on the images both scored."""
    common, ref_at, other_at = np.intersect1d(reference["id"], other["id"], return_indices=True)
    positive = reference["positive"][ref_at]
    if not (np.any(positive == 1) and np.any(positive == 0)):
        return None
    found = delong_test(positive, reference["score"][ref_at], other["score"][other_at], level)
    return {"difference": found["difference"], "low": found["low"], "high": found["high"],
            "p": _none_if_nan(found["p"]), "se": _none_if_nan(found["se"]), "n": int(common.size)}


def _reliability(trials: Sequence[Path], split: str, bins: int) -> dict | None:
    """Per bin the mean over runs of the mean score and the share of positives,
    over the bins where some run has images, and the runs' mean ECE; None without scores."""
    runs = _finished_runs(trials, split)
    if not runs:
        return None
    means, rates, eces = [], [], []
    for _, _, scores in runs:
        binned = calibration_bins(scores["positive"], scores["score"], bins)
        count = binned["count"]
        means.append(binned["mean_score"])
        rates.append(binned["positive_rate"])
        used = count > 0
        eces.append(float(np.sum(count[used] * np.abs(binned["positive_rate"][used] - binned["mean_score"][used]))
                          / count.sum()))
    means, rates = np.array(means), np.array(rates)
    filled = ~np.all(np.isnan(means), axis=0)
    # Empty bins are nan for a run: the mean is over the runs with images in the bin.
    return {"mean_score": np.nanmean(means[:, filled], axis=0), "positive_rate": np.nanmean(rates[:, filled], axis=0),
            "ece": float(np.mean(eces)), "runs": len(runs)}


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
