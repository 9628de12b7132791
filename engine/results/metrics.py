"""Metrics for the positive class, with intervals that hold at the edges.

Label convention (see ``engine.data.layouts``): labels are 0 and 1 in alphabetical
order of the class names, so covid = 0 and normal = 1, and the model's sigmoid
output ``p`` is P(label 1) = P(normal), as in the paper. Clinicians ask about a
chosen *positive* class instead (covid by default, which has label 0), so:

* ``positive_label_of`` turns the positive class name (``--positive-class``)
  into its label through the label map of the records;
* ``positive_scores`` is the one place where model outputs become
  positive-class form: ``y_true = (label == positive_label)`` and
  ``score = P(positive)``, which is ``p`` for positive label 1 and ``1 - p``
  for positive label 0;
* every other metric function takes ``(y_true, scores)`` in that form, where
  1 means "positive" and a higher score means "more likely positive";
* an example is predicted positive when ``score >= threshold``.

``binary_cross_entropy`` is the exception: it is the training loss, so it takes
the raw labels and ``p``, whatever the positive class.

Intervals (``summary`` states each one's method in ``interval_methods``):

* accuracy, sensitivity, specificity, precision and NPV are binomial
  proportions: Clopper-Pearson (``clopper_pearson``), exact, so its coverage
  is at least the level for every true rate, including at 0 and 1 where a
  percentile bootstrap collapses to a point (100/100 correct: lower bound
  0.964, not 1). ``wilson`` is the narrower alternative (0.963 there);
* AUC: DeLong's variance of the Mann-Whitney statistic (``delong``) on the
  logit scale (``auc_interval``): ``logit(AUC) -+ z se / (AUC (1 - AUC))``
  (delta method), back-transformed, so the interval stays inside (0, 1) and
  is skewed away from 1 as the AUC's sampling distribution is. A normal
  interval on the AUC scale clipped to [0, 1] covers only 0.90 at AUC 0.95
  and 0.83 at AUC 0.99 with 50 + 50 images. When the DeLong variance is 0
  (every positive above every negative, or below) the interval would be a
  point, so the score interval of Newcombe (2006, method 5) is used instead
  (``auc_score_interval``). ``delong_test`` compares two score sets on the
  same images (difference, interval, p-value; a MOVER interval and no
  p-value where DeLong's variance of the difference is 0);
* balanced accuracy: MOVER (Zou & Donner 2008) from the Clopper-Pearson
  intervals of sensitivity and specificity;
* F1 and the ECE: percentile bootstrap, examples resampled within each class
  (``bootstrap_intervals``, ``ece_interval``); F1's can collapse when every
  example is right.

Calibration: ``brier_score`` and ``expected_calibration_error`` over
``CALIBRATION_BINS`` equal-width bins of P(positive) (``calibration_bins``).
The ECE is biased upward on small sets (about 0.08 for a perfectly calibrated
model on 100 images), so ``calibrated_ece`` gives the ECE such a model would
show with the same scores, to read it against. ``recalibration`` fits the
calibration slope (logistic regression of the label on logit(score)) and the
calibration-in-the-large intercept (the logit as offset), with profile
likelihood intervals.

All functions are pure and use numpy and scipy only. This module holds the
summaries (``interval_table``, ``scores_summary``, ``summary``: what a run's
metrics.json and the report's tables carry) and is the one import for the
metrics' users; the point metrics are in ``rates``, the intervals in
``intervals``, calibration in ``calibration``, the argument checks in
``checks``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from engine.results.checks import _checked, _json_float
from engine.results.rates import (RATE_METRICS, positive_label_of, positive_scores, confusion, binary_metrics,
                                  roc_auc, youden_threshold, binary_cross_entropy, _named)
from engine.results.intervals import (INTERVAL_METHODS, AUC_FALLBACK, DELONG_TEST, DELONG_TEST_FALLBACK,
                                      clopper_pearson, wilson, delong, auc_interval, logit_interval,
                                      auc_score_interval, delong_test, Intervals, bootstrap_intervals,
                                      stratified_resamples, resample_metrics, bootstrap_values, _mover_mean)
from engine.results.calibration import (CALIBRATION_BINS, ECE_INTERVAL, ECE_REFERENCE, RECALIBRATION, LOGIT_CLIP,
                                        calibration_bins, expected_calibration_error, brier_score, ece_interval,
                                        calibrated_ece, recalibration)

# The metrics' one import for their users: the point metrics, intervals and
# calibration live in their own modules (rates, intervals, calibration).
__all__ = ["RATE_METRICS", "positive_label_of", "positive_scores", "confusion", "binary_metrics", "roc_auc",
           "youden_threshold", "binary_cross_entropy", "INTERVAL_METHODS", "AUC_FALLBACK", "DELONG_TEST",
           "DELONG_TEST_FALLBACK", "clopper_pearson", "wilson", "delong", "auc_interval", "logit_interval",
           "auc_score_interval", "delong_test", "Intervals", "bootstrap_intervals", "stratified_resamples",
           "resample_metrics", "bootstrap_values", "CALIBRATION_BINS", "ECE_INTERVAL", "ECE_REFERENCE",
           "RECALIBRATION", "LOGIT_CLIP", "calibration_bins", "expected_calibration_error", "brier_score",
           "ece_interval", "calibrated_ece", "recalibration", "interval_table", "scores_summary", "summary"]


def interval_table(y_true, scores, threshold: float, n_resamples: int = 2000, seed: int = 0,
                   level: float = 0.95) -> tuple[dict[str, tuple[float, float]], dict[str, str], Intervals]:
    """Every rate metric's interval by the method of ``INTERVAL_METHODS``.

    Returns:
        ``(intervals, methods, bootstrap)``: metric name to ``(low, high)``,
        metric name to its method (the AUC's says when the score interval
        replaced DeLong's), and the bootstrap behind F1 with its undefined
        counts.
    """
    y, s = _checked(y_true, scores)
    counts = confusion(y, s, threshold)
    tp, fp, tn, fn = (counts[k] for k in ("tp", "fp", "tn", "fn"))
    intervals = {
        "accuracy": clopper_pearson(tp + tn, y.size, level),
        "sensitivity": clopper_pearson(tp, tp + fn, level),
        "specificity": clopper_pearson(tn, tn + fp, level),
        "precision": clopper_pearson(tp, tp + fp, level),
        "npv": clopper_pearson(tn, tn + fn, level),
    }
    methods = dict(INTERVAL_METHODS)
    low, high, methods["auc"] = auc_interval(y, s, level)
    intervals["auc"] = (low, high)
    point = binary_metrics(y, s, threshold)
    intervals["balanced_accuracy"] = _mover_mean(
        (point["sensitivity"], *intervals["sensitivity"]), (point["specificity"], *intervals["specificity"]))
    boot = bootstrap_intervals(y, s, threshold, n_resamples, seed, level)
    intervals["f1"] = boot["f1"]
    return {name: intervals[name] for name in RATE_METRICS}, methods, boot


def scores_summary(y_true, scores, threshold: float = 0.5, n_resamples: int = 2000, seed: int = 0,
                   level: float = 0.95) -> dict:
    """Metrics, intervals and calibration of scores already in positive-class form, ready for JSON.

    Args:
        y_true: 1 for the positive class, 0 otherwise.
        scores: P(positive); predicted positive when ``score >= threshold``.
        threshold: Decision threshold on the scores.
        n_resamples: Bootstrap resamples (the F1 and ECE intervals), and
            simulated label sets of the calibrated ECE.
        seed: Seed of the bootstrap and of the simulation.
        level: Coverage of the intervals.

    Returns:
        ``metrics`` and ``intervals`` (``[low, high]``) per rate metric,
        ``interval_level``, ``interval_methods``, ``auc_delong_se``,
        ``brier``, ``ece`` with ``ece_interval`` (``[low, high]``) and
        ``ece_calibrated`` (``calibrated_ece``: the ECE of a perfectly
        calibrated model with these scores), ``recalibration``
        (``{"slope", "slope_se", "slope_interval", "slope_reason",
        "intercept", "intercept_se", "intercept_interval",
        "intercept_reason"}``, see ``recalibration``), ``calibration`` (the
        binning and the methods of the ECE interval, the calibrated ECE and
        the recalibration), ``threshold``, ``n``, ``n_positive``,
        ``n_negative``, ``confusion`` counts and ``bootstrap`` (its settings
        and undefined counts); undefined values are None.
    """
    y, s = _checked(y_true, scores)
    metrics = binary_metrics(y, s, threshold)
    intervals, methods, boot = interval_table(y, s, threshold, n_resamples, seed, level)
    _, auc_variance = delong(y, s)
    fitted = recalibration(y, s, level)
    return {
        "threshold": float(threshold),
        "n": metrics["n"],
        "n_positive": metrics["n_positive"],
        "n_negative": metrics["n"] - metrics["n_positive"],
        "metrics": {name: _json_float(metrics[name]) for name in RATE_METRICS},
        "intervals": {name: [_json_float(v) for v in intervals[name]] for name in RATE_METRICS},
        "interval_level": float(level),
        "interval_methods": methods,
        "auc_delong_se": _json_float(np.sqrt(auc_variance) if auc_variance >= 0 else np.nan),
        "brier": _json_float(brier_score(y, s)),
        "ece": _json_float(expected_calibration_error(y, s)),
        "ece_interval": [_json_float(v) for v in ece_interval(y, s, n_resamples, seed, level)],
        "ece_calibrated": _json_float(calibrated_ece(s, n_resamples, seed)),
        "recalibration": _recalibration_json(fitted),
        "calibration": _calibration_methods(),
        "confusion": {k: metrics[k] for k in ("tp", "fp", "tn", "fn")},
        "bootstrap": _bootstrap_json(n_resamples, seed, level, boot),
    }


def _recalibration_json(fitted: dict) -> dict:
    """``recalibration``'s result for JSON: its numbers, intervals and reasons."""
    return {
        **{key: _json_float(fitted[key]) for key in ("slope", "slope_se", "intercept", "intercept_se")},
        # A bound the likelihood never reaches is infinite; JSON has no infinity, so it is null too.
        **{key: [_json_float(v) if np.isfinite(v) else None for v in fitted[key]]
           for key in ("slope_interval", "intercept_interval")},
        "slope_reason": fitted["slope_reason"], "intercept_reason": fitted["intercept_reason"],
    }


def _calibration_methods() -> dict:
    """The calibration's binning and the methods of its ECE interval, calibrated ECE and recalibration."""
    return {"score": "P(positive)", "bins": CALIBRATION_BINS,
            "binning": f"{CALIBRATION_BINS} equal-width bins of P(positive) over [0, 1]",
            "ece_interval": ECE_INTERVAL, "ece_calibrated": ECE_REFERENCE,
            "recalibration": RECALIBRATION}


def _bootstrap_json(n_resamples: int, seed: int, level: float, boot: Intervals) -> dict:
    """The bootstrap's settings and how often F1 was undefined in it."""
    return {
        "method": "percentile, examples resampled within each class",
        "used_for": ["f1", "ece"],
        "n_resamples": int(n_resamples), "seed": int(seed), "level": float(level),
        # How many resamples left F1 undefined: its interval rests on the others.
        "undefined": {"f1": boot.undefined["f1"]},
    }


def summary(p_label1, labels, positive_label: int, threshold: float = 0.5, n_resamples: int = 2000,
            seed: int = 0, level: float = 0.95, label_map: Mapping[str, int] | None = None) -> dict:
    """Metrics, intervals, calibration and confusion matrix of one split, ready for JSON.

    Undefined values are ``None`` (JSON null), because JSON has no NaN.
    ``interval_methods`` names each interval's method (see the module
    docstring); ``brier``, ``ece`` (with ``ece_interval`` and
    ``ece_calibrated``) and ``recalibration`` (calibration slope and
    intercept) measure the calibration of P(positive), the ECE over
    ``CALIBRATION_BINS`` equal-width bins (``scores_summary``).

    Args:
        p_label1: Sigmoid outputs, P(label 1).
        labels: True labels, 0 or 1.
        positive_label: Label of the positive class.
        threshold: Decision threshold on P(positive) (not on ``p_label1``).
        n_resamples: Bootstrap resamples (the F1 and ECE intervals), and
            simulated label sets of the calibrated ECE.
        seed: Seed of the bootstrap and of the simulation.
        level: Coverage of the intervals.
        label_map: Optional class name to label, to name the classes.

    Returns:
        A dict of plain ints, floats, strings, lists and None.
    """
    scores, y = positive_scores(p_label1, labels, positive_label)
    scored = scores_summary(y, scores, threshold, n_resamples, seed, level)
    names = {int(v): k for k, v in (label_map or {}).items()}
    positive_name, negative_name = names.get(positive_label), names.get(1 - positive_label)
    score = "p" if positive_label == 1 else "1 - p"
    tp, fp, tn, fn = (scored["confusion"][k] for k in ("tp", "fp", "tn", "fn"))
    out = {
        "positive_label": int(positive_label),
        "positive_class": positive_name,
        "negative_class": negative_name,
        "convention": (f"labels are class indices in alphabetical order of the class names; p is the "
                       f"model's sigmoid output, P(label 1); the positive class has label "
                       f"{positive_label}; score = P(positive) = {score}; predicted positive when "
                       f"score >= threshold"),
        "score": score,
    }
    out.update(scored)
    out["confusion"] = {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "matrix": [[tn, fp], [fn, tp]],
        "rows": [_named("true negative", negative_name), _named("true positive", positive_name)],
        "columns": [_named("predicted negative", negative_name), _named("predicted positive", positive_name)],
    }
    out["binary_cross_entropy"] = _json_float(binary_cross_entropy(labels, p_label1))
    return out
