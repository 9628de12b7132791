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

All functions are pure and use numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
from scipy import optimize, special, stats

# The metrics of `binary_metrics` that are rates, in reporting order; each gets
# an interval.
RATE_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "npv", "f1", "auc",
                "balanced_accuracy")

# Equal-width bins of P(positive) over [0, 1] for the calibration error and
# the reliability diagram: 10 is the usual choice, and with 100 test images
# it leaves about 10 images per bin where the scores spread.
CALIBRATION_BINS = 10

# How each metric's interval in `summary` is computed.
INTERVAL_METHODS = MappingProxyType({
    "accuracy": "Clopper-Pearson", "sensitivity": "Clopper-Pearson", "specificity": "Clopper-Pearson",
    "precision": "Clopper-Pearson", "npv": "Clopper-Pearson",
    "f1": "percentile bootstrap, examples resampled within each class",
    "auc": "DeLong on the logit scale",
    "balanced_accuracy": "MOVER from the Clopper-Pearson intervals of sensitivity and specificity",
})
AUC_FALLBACK = "Newcombe score interval (the DeLong variance is 0, as when the classes are completely separated)"
# `delong_test`'s method, and the one it falls back on where the DeLong variance of the difference is 0 (both score
# sets rank the classes alike, e.g. both perfectly): a normal interval would be the point itself.
DELONG_TEST = "DeLong's paired test, normal interval"
DELONG_TEST_FALLBACK = ("MOVER interval from the two AUCs' Newcombe score intervals, their correlation taken as 0 "
                        "(conservative for scores of the same images); no p-value, as DeLong's variance of the "
                        "difference is 0")
ECE_INTERVAL = "percentile bootstrap, examples resampled within each class"
ECE_REFERENCE = ("mean ECE of labels drawn as Bernoulli(score) for the observed scores (a perfectly calibrated model "
                 "on a set of this size and these scores), by simulation with a fixed seed")
RECALIBRATION = ("logistic recalibration on logit(score): slope from the joint fit of intercept and slope; intercept "
                 "from calibration-in-the-large (intercept only, logit(score) as offset); 95 % profile likelihood "
                 "intervals, standard errors from the Fisher information")

# Scores are clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP] before the logit: a float32 sigmoid saturates to exactly 0 or
# 1, whose logit is infinite; the bound is Keras' fuzz factor, which its loss clips to as well (logit +-16.1).
LOGIT_CLIP = 1e-7

# Resamples drawn and evaluated together: bounds the memory of one step to
# about _CHUNK x n integers whatever the number of resamples.
_CHUNK = 256


def positive_label_of(label_map: Mapping[str, int], positive_class: str) -> int:
    """The label of the positive class.

    Args:
        label_map: Class name to label, e.g. ``{"covid": 0, "normal": 1}`` as
            stored in the records manifest.
        positive_class: Name of the class whose metrics are wanted.

    Returns:
        0 or 1.

    Raises:
        ValueError: If the class is unknown or the map is not two classes
            labelled 0 and 1.
    """
    if sorted(label_map.values()) != [0, 1]:
        raise ValueError(f"expected two classes labelled 0 and 1, got {dict(label_map)}")
    if positive_class not in label_map:
        raise ValueError(f"positive class {positive_class!r} is not one of {sorted(label_map)}")
    return int(label_map[positive_class])


def positive_scores(p_label1, labels, positive_label: int) -> tuple[np.ndarray, np.ndarray]:
    """Converts model outputs and labels to positive-class form.

    Args:
        p_label1: Sigmoid outputs, P(label 1), shape ``(n,)`` or ``(n, 1)``.
        labels: True labels, 0 or 1, shape ``(n,)`` or ``(n, 1)``.
        positive_label: The label (0 or 1) of the positive class.

    Returns:
        ``(scores, y_true)``: float64 P(positive) and int64 indicators that are
        1 exactly for examples of the positive class.

    Raises:
        ValueError: On mismatched shapes, labels other than 0 and 1, a positive
            label other than 0 and 1, or outputs outside [0, 1] (logits passed
            by mistake) or not finite.
    """
    if positive_label not in (0, 1):
        raise ValueError(f"positive_label must be 0 or 1, got {positive_label!r}")
    # float64 before `1 - p`, so that the inversion of float32 outputs is exact.
    p = _vector(p_label1, "p_label1").astype(np.float64)
    labels = _labels(labels, "labels")
    _same_length(p, labels)
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p_label1 must be probabilities in [0, 1] (sigmoid outputs, not logits)")
    scores = p if positive_label == 1 else 1.0 - p
    return scores, (labels == positive_label).astype(np.int64)


def confusion(y_true, scores, threshold: float) -> dict[str, int]:
    """Confusion counts for the positive class.

    Args:
        y_true: 1 for the positive class, 0 otherwise.
        scores: P(positive); an example is predicted positive when
            ``score >= threshold``.
        threshold: Decision threshold on the scores.

    Returns:
        ``{"tp", "fp", "tn", "fn"}`` as ints.
    """
    y, s = _checked(y_true, scores)
    predicted = s >= _threshold(threshold)
    positive = y == 1
    tp = int(np.count_nonzero(predicted & positive))
    fp = int(np.count_nonzero(predicted & ~positive))
    return {"tp": tp, "fp": fp, "tn": int(np.count_nonzero(~positive)) - fp,
            "fn": int(np.count_nonzero(positive)) - tp}


def binary_metrics(y_true, scores, threshold: float = 0.5) -> dict:
    """Threshold metrics, ROC AUC and confusion counts for the positive class.

    Every ratio whose denominator is 0 (say, sensitivity without positive
    examples) is ``nan``. F1 is ``2 tp / (2 tp + fp + fn)``, so it is 0 when
    there are positives but none is found, and ``nan`` only when there is
    neither a positive example nor a positive prediction.

    Args:
        y_true: 1 for the positive class, 0 otherwise.
        scores: P(positive); predicted positive when ``score >= threshold``.
        threshold: Decision threshold on the scores.

    Returns:
        Floats ``accuracy``, ``sensitivity`` (recall of the positive class),
        ``specificity``, ``precision`` (positive predictive value), ``npv``,
        ``f1``, ``auc``, ``balanced_accuracy``, ``threshold``; ints ``n``,
        ``n_positive``, ``tp``, ``fp``, ``tn``, ``fn``.
    """
    y, s = _checked(y_true, scores)
    counts = confusion(y, s, threshold)
    rates = _rates(*(np.array([counts[k]]) for k in ("tp", "fp", "tn", "fn")))
    rates["auc"] = np.array([roc_auc(y, s)])
    out = {name: float(rates[name][0]) for name in RATE_METRICS}
    out.update(threshold=float(threshold), n=int(y.size), n_positive=int(np.count_nonzero(y)),
               **counts)
    return out


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve, exactly, via the Mann-Whitney U statistic.

    AUC is the probability that a random positive scores higher than a random
    negative, a tie counting 1/2: ``U / (n_positive * n_negative)`` where U
    counts, over all positive-negative pairs, 1 for the positive higher and
    1/2 for a tie. The counting is done in integers, so the only rounding is
    the final division.

    Args:
        y_true: 1 for the positive class, 0 otherwise.
        scores: P(positive), or any score that ranks examples.

    Returns:
        The AUC, ``nan`` without positives or without negatives.
    """
    y, s = _checked(y_true, scores)
    return float(_weighted_auc(y, s, np.ones((1, y.size), dtype=np.int64))[0])


def youden_threshold(y_true, scores) -> float:
    """The threshold nearest 0.5 among those of best Youden's J = sensitivity + specificity - 1.

    With ``score >= t`` predicting positive, every ``t`` in the half-open
    interval ``(u_(i-1), u_i]`` between two consecutive distinct scores (and
    below the lowest, above the highest) classifies the data alike, so J is
    a function of these intervals. J is compared exactly (as the integer
    ``(J + 1) * n_positive * n_negative``), so intervals with equal J are
    really tied. Of the intervals with the best J, the point nearest 0.5 is
    returned: 0.5 itself when it lies in one of them (so separable data,
    positives >= 0.6 and negatives <= 0.05, keeps 0.5), else the interval end
    nearest 0.5: an observed score ``u_i`` below 0.5, or above 0.5 the
    smallest float above ``u_(i-1)`` (the interval excludes that score). The
    choice thus moves away from the default threshold 0.5 only as far as a
    strictly better J requires. Equally near ends go to the larger threshold
    (the more specific). Meant to be chosen on validation data and applied
    unchanged to test data.

    Args:
        y_true: 1 for the positive class, 0 otherwise; both classes needed.
        scores: P(positive).

    Returns:
        The chosen threshold.

    Raises:
        ValueError: If either class is missing, since J is then undefined.
    """
    y, s = _checked(y_true, scores)
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    if pos.size == 0 or neg.size == 0:
        raise ValueError("the Youden threshold needs examples of both classes "
                         f"(got {pos.size} positive, {neg.size} negative)")
    distinct = np.unique(s)
    # Interval i is (lower[i], upper[i]]; the last, above every score, classifies all as negative.
    lower = np.concatenate([[-np.inf], distinct])
    upper = np.concatenate([distinct, [np.inf]])
    # Any t in interval i gives the classification of t = upper[i] (all negative for the last).
    tp = np.append(pos.size - np.searchsorted(pos, distinct, side="left"), 0)  # positives >= t
    tn = np.append(np.searchsorted(neg, distinct, side="left"), neg.size)  # negatives < t
    j = tp * neg.size + tn * pos.size  # (J + 1) * n_pos * n_neg
    best = j == j.max()
    if np.any(best & (lower < 0.5) & (0.5 <= upper)):
        return 0.5
    # Each best interval's point nearest 0.5: its upper end below 0.5, just above its lower end above.
    nearest = np.where(upper[best] < 0.5, upper[best], np.nextafter(lower[best], np.inf))
    distance = np.abs(nearest - 0.5)
    return float(nearest[distance == distance.min()].max())


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson ("exact") interval of a binomial proportion ``k / n``.

    The bounds are the beta quantiles ``Beta(level_low; k, n - k + 1)`` and
    ``Beta(level_high; k + 1, n - k)``, with 0 at ``k = 0`` and 1 at ``k = n``.
    Coverage is at least ``level`` for every true proportion. 100 of 100
    gives (0.964, 1); 49 of 50 gives (0.894, 0.9995).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``n`` is 0.
    """
    k, n, alpha = _count(k, n), int(n), 1 - _level(level)
    if n == 0:
        return float("nan"), float("nan")
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n``.

    The proportions whose score test at ``level`` accepts ``k / n``: centre
    ``(k + z^2 / 2) / (n + z^2)``, half-width
    ``z sqrt(k (n - k) / n + z^2 / 4) / (n + z^2)``. Narrower than
    Clopper-Pearson, coverage near ``level`` on average. 100 of 100 gives
    (0.963, 1).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``n`` is 0.
    """
    k, n, z = _count(k, n), int(n), _z(level)
    if n == 0:
        return float("nan"), float("nan")
    centre = (k + z * z / 2) / (n + z * z)
    half = z * np.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    # At k = 0 or n one bound is exactly 0 or 1; clipping removes rounding.
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def delong(y_true, scores) -> tuple[float, float]:
    """AUC and its DeLong variance (DeLong, DeLong & Clarke-Pearson 1988).

    Each positive's placement value is the share of negatives it beats (ties
    count 1/2), each negative's the share of positives beating it; the AUC
    is the mean of either, and its variance is
    ``var(positive placements) / n_positive + var(negative placements) / n_negative``
    (sample variances, ``n - 1`` in the denominator).

    Returns:
        ``(auc, variance)``; nan without positives or negatives, a nan
        variance with a single positive and a single negative.
    """
    (auc,), ((variance,),) = _delong_moments(*_checked(y_true, scores))
    return float(auc), float(variance)


def auc_interval(y_true, scores, level: float = 0.95) -> tuple[float, float, str]:
    """AUC interval: DeLong's on the logit scale, or Newcombe's score interval where DeLong's variance is 0.

    ``logit_interval(A, se)``: the delta method carries DeLong's standard
    error of ``A`` to ``logit(A)``, whose sampling distribution is far closer
    to normal near 1 than ``A``'s. With 50 + 50 binormal images (20,000
    simulations) it covers 0.95 at AUC 0.80 and 0.94 at 0.98 and 0.99, each
    tail missing at most 3.6 %, where a normal interval on the AUC scale
    clipped to [0, 1] covers 0.86 at 0.98 and 0.83 at 0.99, missing 14 % and
    17 % below. At AUC 0 or 1 the variance is 0 and the logit infinite, so
    the score interval takes over.

    Returns:
        ``(low, high, method)``, the method one of ``INTERVAL_METHODS["auc"]``
        and ``AUC_FALLBACK``; nan bounds without both classes.
    """
    y, s = _checked(y_true, scores)
    auc, variance = delong(y, s)
    if np.isnan(auc):
        return float("nan"), float("nan"), INTERVAL_METHODS["auc"]
    if not (variance > 0 and 0 < auc < 1):
        low, high = auc_score_interval(auc, int(np.count_nonzero(y)), int(np.count_nonzero(y == 0)), level)
        return low, high, AUC_FALLBACK
    low, high = logit_interval(auc, np.sqrt(variance), level)
    return float(low), float(high), INTERVAL_METHODS["auc"]


def logit_interval(estimate, se, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Normal interval of a proportion on the logit scale, back-transformed: ``expit(logit(estimate) -+ z se_logit)``
    with the delta-method ``se_logit = se / (estimate (1 - estimate))``.

    Args:
        estimate: The estimate(s), strictly between 0 and 1 (arrays broadcast).
        se: Its standard error on the proportion scale.
        level: Coverage.

    Returns:
        ``(low, high)``, strictly inside (0, 1).
    """
    estimate, se = np.asarray(estimate, dtype=np.float64), np.asarray(se, dtype=np.float64)
    half = _z(level) * se / (estimate * (1 - estimate))
    centre = special.logit(estimate)
    return special.expit(centre - half), special.expit(centre + half)


def auc_score_interval(auc: float, n_positive: int, n_negative: int,
                       level: float = 0.95) -> tuple[float, float]:
    """Newcombe's score interval for an AUC (Stat Med 2006;25:559, method 5).

    The AUCs ``A`` with ``(A - auc)^2 <= z^2 V(A)``, where ``V`` is the
    Hanley-McNeil variance with both group sizes set to their mean ``N``:
    ``V(A) = A (1 - A) / (m n) [1 + (N - 1)((1 - A) / (2 - A) + A / (1 + A))]``.
    Like Wilson's interval it stays an interval at AUC 0 and 1 (50 positives
    and 50 negatives at AUC 1: lower bound 0.960).
    """
    m, n, z2 = int(n_positive), int(n_negative), _z(level) ** 2
    if m == 0 or n == 0:
        return float("nan"), float("nan")
    extra = (m + n) / 2 - 1

    def excess(a):  # > 0 outside the interval, < 0 strictly inside
        v = a * (1 - a) / (m * n) * (1 + extra * ((1 - a) / (2 - a) + a / (1 + a)))
        return (a - auc) ** 2 - z2 * v

    # At auc = 0 or 1 the estimate itself is a root (V = 0 there): start just inside.
    inner = min(max(auc, 1e-12), 1 - 1e-12)
    low = 0.0 if auc == 0 or excess(0.0) <= 0 else optimize.brentq(excess, 0.0, inner, xtol=1e-12)
    high = 1.0 if auc == 1 or excess(1.0) <= 0 else optimize.brentq(excess, inner, 1.0, xtol=1e-12)
    return float(low), float(high)


def delong_test(y_true, scores_a, scores_b, level: float = 0.95) -> dict:
    """DeLong's paired test of two AUCs on the same examples.

    The difference ``auc_a - auc_b`` has variance
    ``var_a + var_b - 2 cov_ab`` from the two score sets' placement values
    (covariances over the same positives and the same negatives), so the
    images both sets share are accounted for. Normal interval and two-sided
    p-value (``DELONG_TEST``). When that variance is 0 (both sets rank the
    classes alike, e.g. both perfectly) a normal interval would be the
    difference itself and the p-value 1 or 0, claims the data cannot carry;
    instead the interval is MOVER (Newcombe 1998, Zou & Donner 2008) from
    the two AUCs' score intervals (``auc_score_interval``) with their
    correlation taken as 0, which only widens it for positively correlated
    AUCs, and the p-value is nan (``DELONG_TEST_FALLBACK``). Both perfect on
    50 + 50 images: 0 (-0.040 to +0.040).

    Args:
        y_true: 1 for the positive class, 0 otherwise; both classes needed.
        scores_a, scores_b: P(positive) of the same examples, in the same order.
        level: Coverage of the interval.

    Returns:
        ``{"auc_a", "auc_b", "difference", "se", "low", "high", "z", "p",
        "method"}``; ``se``, ``z``, ``p`` and the bounds are nan with one
        positive and one negative; ``z`` and ``p`` are nan (``se`` 0) where
        the MOVER interval stands in.
    """
    y, a = _checked(y_true, scores_a)
    _, b = _checked(y, scores_b)
    if not (np.any(y == 1) and np.any(y == 0)):
        raise ValueError("DeLong's test needs examples of both classes")
    (auc_a, auc_b), cov = _delong_moments(y, np.stack([a, b]))
    difference = auc_a - auc_b
    variance = max(0.0, cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    method = DELONG_TEST
    if np.isnan(variance) or variance > 0:
        se = float(np.sqrt(variance))
        z = difference / se
        half = _z(level) * se
        p = float(2 * stats.norm.sf(abs(z)))
        low, high = difference - half, difference + half
    else:
        m, n = int(np.count_nonzero(y == 1)), int(np.count_nonzero(y == 0))
        low, high = _mover_difference((auc_a, *auc_score_interval(auc_a, m, n, level)),
                                      (auc_b, *auc_score_interval(auc_b, m, n, level)))
        se, z, p, method = 0.0, float("nan"), float("nan"), DELONG_TEST_FALLBACK
    return {"auc_a": float(auc_a), "auc_b": float(auc_b), "difference": float(difference), "se": se,
            "low": float(low), "high": float(high), "z": float(z), "p": p, "method": method}


def calibration_bins(y_true, scores, bins: int = CALIBRATION_BINS) -> dict[str, np.ndarray]:
    """Examples per equal-width bin of P(positive) over [0, 1], with each bin's
    mean score and share of positives (nan in an empty bin).

    Bin ``b`` holds scores in ``[b / bins, (b + 1) / bins)``, the last bin
    also 1.0.

    Returns:
        ``{"edges" (bins + 1,), "count", "mean_score", "positive_rate" (bins,)}``.
    """
    y, s = _checked(y_true, scores)
    if np.any((s < 0) | (s > 1)):
        raise ValueError("calibration needs probabilities in [0, 1]")
    index = _bin_index(s, bins)
    count = np.bincount(index, minlength=bins)
    return {"edges": np.linspace(0.0, 1.0, bins + 1), "count": count,
            "mean_score": _divide(np.bincount(index, weights=s, minlength=bins), count),
            "positive_rate": _divide(np.bincount(index, weights=y, minlength=bins), count)}


def expected_calibration_error(y_true, scores, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: ``sum_b (n_b / n) |positive rate_b - mean score_b|``
    over ``bins`` equal-width bins of P(positive) (``calibration_bins``); nan for no examples."""
    binned = calibration_bins(y_true, scores, bins)
    count = binned["count"]
    if count.sum() == 0:
        return float("nan")
    used = count > 0
    gap = np.abs(binned["positive_rate"][used] - binned["mean_score"][used])
    return float(np.sum(count[used] * gap) / count.sum())


def brier_score(y_true, scores) -> float:
    """Brier score: the mean of ``(P(positive) - y)^2``; 0 is perfect, 0.25 a constant 0.5."""
    y, s = _checked(y_true, scores)
    return float(np.mean((s - y) ** 2)) if y.size else float("nan")


def ece_interval(y_true, scores, n_resamples: int = 2000, seed: int = 0, level: float = 0.95,
                 bins: int = CALIBRATION_BINS) -> tuple[float, float]:
    """Percentile bootstrap interval of the expected calibration error.

    Examples are resampled within each class (``stratified_resamples``, the
    resamples of ``bootstrap_intervals`` for the same seed); the bins stay
    the fixed equal-width bins of ``calibration_bins``. It describes the
    ECE's sampling spread, not its bias: read it with ``calibrated_ece``.
    Resampling adds binomial noise of its own to each bin, so for a well
    calibrated model the resampled ECEs sit above the estimate and the
    interval can even exclude it (7 % of perfectly calibrated sets of 100
    images with uniform scores).

    Returns:
        ``(low, high)``; nan for no examples.
    """
    y, s = _checked(y_true, scores)
    if y.size == 0:
        return float("nan"), float("nan")
    _positive_count(n_resamples, "n_resamples")
    index = _bin_index(s, bins)
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, int(n_resamples), _CHUNK):
        rows = stratified_resamples(y, min(_CHUNK, int(n_resamples) - start), rng)
        # Each bin's count times |share of positives - mean score| is |sum of (y - score)| over the bin:
        # one bincount over row-offset bin indices gives those sums for every resample.
        flat = (index[rows] + bins * np.arange(rows.shape[0])[:, None]).ravel()
        gaps = np.bincount(flat, weights=(y - s)[rows].ravel(), minlength=rows.shape[0] * bins)
        values.append(np.abs(gaps.reshape(rows.shape[0], bins)).sum(axis=1) / y.size)
    return _percentile_interval(np.concatenate(values), level)


def calibrated_ece(scores, n_draws: int = 2000, seed: int = 0, bins: int = CALIBRATION_BINS) -> float:
    """The ECE a perfectly calibrated model would show with these scores: the mean ECE over
    ``n_draws`` label sets drawn as ``Bernoulli(score)``, one label per example.

    The ECE of a finite set is positive even when P(positive) is exactly
    right, from the binomial noise of each bin's share of positives: about
    0.08 on 100 images. This is the value to compare an observed ECE with;
    the simulated labels have the set's size and, on average, the class
    balance the scores imply.

    Args:
        scores: P(positive) of each example, in [0, 1].
        n_draws: Simulated label sets.
        seed: Seed of the simulation; equal seeds give equal values.
        bins: Equal-width bins of P(positive), as in ``calibration_bins``.

    Returns:
        The mean ECE; nan for no examples.
    """
    s = _vector(scores, "scores").astype(np.float64)
    if not np.all((s >= 0) & (s <= 1)):
        raise ValueError("calibration needs probabilities in [0, 1]")
    if s.size == 0:
        return float("nan")
    _positive_count(n_draws, "n_draws")
    one_hot = np.eye(bins)[_bin_index(s, bins)]  # (n, bins)
    rng = np.random.default_rng(seed)
    total = 0.0
    for start in range(0, int(n_draws), _CHUNK):
        labels = rng.random((min(_CHUNK, int(n_draws) - start), s.size)) < s
        total += float(np.abs((labels - s) @ one_hot).sum()) / s.size
    return total / int(n_draws)


def recalibration(y_true, scores, level: float = 0.95) -> dict:
    """Calibration slope and intercept of P(positive), with profile likelihood intervals.

    With ``x = logit(score)`` (scores clipped to ``LOGIT_CLIP``):

    * slope: ``b`` of the logistic regression ``logit P(y = 1) = a + b x``
      fitted jointly (1 when the scores are well spread, below 1 when they are
      too extreme, above 1 when too timid);
    * intercept: calibration-in-the-large, ``a`` of ``logit P(y = 1) = a + x``
      with ``x`` as offset (0 when the mean score matches the share of
      positives, below 0 when the scores are too high).

    Maximum likelihood by Newton-Raphson (IRLS); each interval is the set of
    values whose likelihood-ratio test at ``1 - level`` does not reject (the
    slope profiled over its intercept), which unlike a Wald interval follows
    the likelihood's skew. Standard errors come from the Fisher information.
    The slope has no finite estimate when the scores separate the classes
    (every positive at or above every negative, or at or below); the
    intercept needs both classes.

    Returns:
        ``{"slope", "slope_se", "slope_interval", "slope_reason", "intercept",
        "intercept_se", "intercept_interval", "intercept_reason", "method"}``;
        an estimate that does not exist is nan, its interval ``(nan, nan)``,
        and its reason says why (None otherwise). A bound that the
        likelihood never reaches is infinite.
    """
    y, s = _checked(y_true, scores)
    if np.any((s < 0) | (s > 1)):
        raise ValueError("calibration needs probabilities in [0, 1]")
    x = special.logit(np.clip(s, LOGIT_CLIP, 1 - LOGIT_CLIP))
    critical = float(stats.chi2.ppf(_level(level), 1))
    nan2 = (float("nan"), float("nan"))
    out = {"slope": float("nan"), "slope_se": float("nan"), "slope_interval": nan2, "slope_reason": None,
           "intercept": float("nan"), "intercept_se": float("nan"), "intercept_interval": nan2,
           "intercept_reason": None, "method": RECALIBRATION}
    positives, negatives = x[y == 1], x[y == 0]
    if positives.size == 0 or negatives.size == 0:
        out["slope_reason"] = out["intercept_reason"] = "needs examples of both classes"
        return out

    try:
        return _recalibrated(out, y, x, positives, negatives, critical)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError) as err:
        # Scoring a finished run must never fail on its calibration line.
        reason = f"the fit did not converge ({type(err).__name__})"
        return out | {"slope_reason": out["slope_reason"] or reason,
                      "intercept_reason": out["intercept_reason"] or reason}


def _recalibrated(out: dict, y: np.ndarray, x: np.ndarray, positives: np.ndarray, negatives: np.ndarray,
                  critical: float) -> dict:
    """``recalibration``'s fits, into a copy of ``out``."""
    out = dict(out)
    # Calibration in the large: one parameter, so its profile is its likelihood.
    a, info, best = _logistic_intercept(y, x)
    out.update(intercept=float(a), intercept_se=float(1 / np.sqrt(info)),
               intercept_interval=_likelihood_interval(lambda v: _logistic_intercept(y, x, fixed=v)[2], a,
                                                       1 / np.sqrt(info), best, critical))
    if np.ptp(x) == 0:
        out["slope_reason"] = "every score is the same: no slope"
    elif negatives.max() <= positives.min() or positives.max() <= negatives.min():
        out["slope_reason"] = ("the scores separate the classes completely: the likelihood grows without bound "
                               "as the slope does, so it has no finite estimate")
    else:
        (_, b), covariance, best = _logistic_fit(y, x)
        se = float(np.sqrt(covariance[1, 1]))
        # Profile: at each slope, the intercept that fits best (x * slope as offset).
        out.update(slope=float(b), slope_se=se,
                   slope_interval=_likelihood_interval(lambda v: _logistic_intercept(y, v * x)[2], b, se, best,
                                                       critical))
    return out


class Intervals(dict):
    """Metric name to ``(low, high)``; ``undefined`` counts, per metric, the
    resamples in which it was undefined (its interval rests on the others)."""

    def __init__(self, intervals: dict, undefined: dict[str, int]):
        super().__init__(intervals)
        self.undefined = undefined


def bootstrap_intervals(y_true, scores, threshold: float, n_resamples: int = 2000, seed: int = 0,
                        level: float = 0.95) -> Intervals:
    """Percentile bootstrap intervals of every rate of `binary_metrics`.

    Examples are resampled with replacement within each class: every resample
    keeps the numbers of positives and negatives of the data, so it has both
    classes whenever the data has, and AUC, sensitivity and specificity are
    defined in every resample. A metric that is undefined in some resamples
    (e.g. precision when a resample has no positive prediction) gets its
    interval from the resamples where it is defined; it is ``(nan, nan)`` when
    it is defined in none. The threshold stays fixed.

    Args:
        y_true: 1 for the positive class, 0 otherwise.
        scores: P(positive).
        threshold: Decision threshold on the scores.
        n_resamples: Number of bootstrap resamples.
        seed: Seed of the resampling; equal seeds give equal intervals.
        level: Coverage, e.g. 0.95 for the 2.5th to the 97.5th percentile.

    Returns:
        Metric name (see ``RATE_METRICS``) to ``(low, high)``, with the
        undefined counts.
    """
    values = bootstrap_values(y_true, scores, threshold, n_resamples, seed)
    return Intervals({name: _percentile_interval(values[name], level) for name in RATE_METRICS},
                     {name: int(np.count_nonzero(np.isnan(values[name]))) for name in RATE_METRICS})


def binary_cross_entropy(labels, p, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of sigmoid outputs, as Keras computes it.

    Like ``keras.losses.binary_crossentropy``, ``p`` is clipped to
    ``[eps, 1 - eps]`` in its own floating-point precision: in float32
    ``1 - 1e-7`` rounds to ``1 - 2**-23``, which changes the loss of a
    confident output by about 0.18, so clipping float32 outputs in float64
    would not match the loss Keras reports. The logarithms and the mean are
    then taken in float64.

    Args:
        labels: Targets in [0, 1] for label 1 (the raw labels, whatever the
            positive class).
        p: Sigmoid outputs, P(label 1).
        eps: Clipping bound, Keras' default fuzz factor.

    Returns:
        The mean loss, ``nan`` for no examples.
    """
    p = _vector(p, "p")
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    y = _vector(labels, "labels").astype(np.float64)
    _same_length(p, y)
    if not np.all((y >= 0) & (y <= 1)):
        raise ValueError("labels must be in [0, 1]")
    if p.size == 0:
        return float("nan")
    clipped = np.clip(p, p.dtype.type(eps), p.dtype.type(1.0 - eps)).astype(np.float64)
    return float(-np.mean(y * np.log(clipped) + (1.0 - y) * np.log(1.0 - clipped)))


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
        "recalibration": {
            **{key: _json_float(fitted[key]) for key in ("slope", "slope_se", "intercept", "intercept_se")},
            # A bound the likelihood never reaches is infinite; JSON has no infinity, so it is null too.
            **{key: [_json_float(v) if np.isfinite(v) else None for v in fitted[key]]
               for key in ("slope_interval", "intercept_interval")},
            "slope_reason": fitted["slope_reason"], "intercept_reason": fitted["intercept_reason"],
        },
        "calibration": {"score": "P(positive)", "bins": CALIBRATION_BINS,
                        "binning": f"{CALIBRATION_BINS} equal-width bins of P(positive) over [0, 1]",
                        "ece_interval": ECE_INTERVAL, "ece_calibrated": ECE_REFERENCE,
                        "recalibration": RECALIBRATION},
        "confusion": {k: metrics[k] for k in ("tp", "fp", "tn", "fn")},
        "bootstrap": {
            "method": "percentile, examples resampled within each class",
            "used_for": ["f1", "ece"],
            "n_resamples": int(n_resamples), "seed": int(seed), "level": float(level),
            # How many resamples left F1 undefined: its interval rests on the others.
            "undefined": {"f1": boot.undefined["f1"]},
        },
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


# --- internals ---------------------------------------------------------------

def _vector(x, name: str) -> np.ndarray:
    """A 1-D array; a column ``(n, 1)``, the shape of Keras predictions, is flattened."""
    a = np.asarray(x)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must have shape (n,) or (n, 1), got {a.shape}")
    return a


def _labels(x, name: str) -> np.ndarray:
    a = _vector(x, name)
    if a.size and not np.all((a == 0) | (a == 1)):
        raise ValueError(f"{name} must be 0 or 1, got values {np.unique(a)[:5].tolist()}")
    return a.astype(np.int64)


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"length mismatch: {a.shape[0]} versus {b.shape[0]}")


def _checked(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(y_true int64, scores float64)``; NaN scores would rank arbitrarily."""
    y = _labels(y_true, "y_true")
    s = _vector(scores, "scores").astype(np.float64)
    _same_length(y, s)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return y, s


def _threshold(threshold: float) -> float:
    t = float(threshold)
    if np.isnan(t):
        raise ValueError("threshold must be a number, got nan")
    return t


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, ``nan`` where ``den == 0`` and without warnings."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _rates(tp, fp, tn, fn) -> dict[str, np.ndarray]:
    """Threshold metrics from integer confusion counts (arrays, one entry per resample).

    Each rate is one division of integers, so exact fractions come out
    correctly rounded.
    """
    pos, neg = tp + fn, tn + fp
    return {
        "accuracy": _divide(tp + tn, pos + neg),
        "sensitivity": _divide(tp, pos),
        "specificity": _divide(tn, neg),
        "precision": _divide(tp, tp + fp),
        "npv": _divide(tn, tn + fn),
        "f1": _divide(2 * tp, 2 * tp + fp + fn),
        # (tp / pos + tn / neg) / 2 over a common denominator.
        "balanced_accuracy": _divide(tp * neg + tn * pos, 2 * pos * neg),
    }


def _weighted_auc(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC for each row of example multiplicities.

    ``weights[b, i]`` is how many times example ``i`` is in sample ``b`` (all
    ones for the data itself, bootstrap counts for a resample). For each
    positive the negatives below it and tied with it are read off cumulative
    negative weights in score order, so a row costs O(n) after one sort.
    ``2 U`` is accumulated in integers, so the result is exact up to the final
    division.
    """
    positive = y == 1
    negative = ~positive
    order = np.argsort(s[negative], kind="stable")
    neg_scores = s[negative][order]
    neg_weights = weights[:, negative][:, order]
    cumulative = np.zeros((weights.shape[0], neg_scores.size + 1), dtype=np.int64)
    np.cumsum(neg_weights, axis=1, out=cumulative[:, 1:])
    pos_scores = s[positive]
    below = cumulative[:, np.searchsorted(neg_scores, pos_scores, side="left")]
    up_to = cumulative[:, np.searchsorted(neg_scores, pos_scores, side="right")]
    pos_weights = weights[:, positive]
    twice_u = (pos_weights * (below + up_to)).sum(axis=1)  # 2 * below + 2 * (tied / 2)
    return _divide(twice_u, 2 * pos_weights.sum(axis=1) * neg_weights.sum(axis=1))


def stratified_resamples(y: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, n)`` example indices, each row a within-class resample.

    The first ``n_positive`` columns are draws with replacement from the
    positives, the rest from the negatives, so every row has the class counts
    of the data.
    """
    draws = []
    for members in (np.flatnonzero(y == 1), np.flatnonzero(y == 0)):
        if members.size:
            draws.append(members[rng.integers(0, members.size, size=(n_resamples, members.size))])
    if not draws:
        return np.zeros((n_resamples, 0), dtype=np.int64)
    return np.concatenate(draws, axis=1)


def resample_metrics(y: np.ndarray, s: np.ndarray, threshold: float,
                     indices: np.ndarray) -> dict[str, np.ndarray]:
    """Every rate of `binary_metrics` for each row of example indices."""
    rows, n = indices.shape
    # Multiplicity of each example in each row: one bincount over row-offset indices.
    offsets = (np.arange(rows, dtype=np.int64) * n)[:, None]
    weights = np.bincount((indices + offsets).ravel(), minlength=rows * n).reshape(rows, n)
    predicted = s >= threshold
    positive = y == 1
    tp = weights[:, predicted & positive].sum(axis=1)
    fp = weights[:, predicted & ~positive].sum(axis=1)
    fn = weights[:, ~predicted & positive].sum(axis=1)
    tn = weights[:, ~predicted & ~positive].sum(axis=1)
    values = _rates(tp, fp, tn, fn)
    values["auc"] = _weighted_auc(y, s, weights)
    return values


def bootstrap_values(y_true, scores, threshold: float, n_resamples: int,
                     seed: int) -> dict[str, np.ndarray]:
    """Each rate metric in each of ``n_resamples`` stratified resamples (nan where undefined)."""
    y, s = _checked(y_true, scores)
    threshold = _threshold(threshold)
    _positive_count(n_resamples, "n_resamples")
    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, int(n_resamples), _CHUNK):
        indices = stratified_resamples(y, min(_CHUNK, int(n_resamples) - start), rng)
        parts.append(resample_metrics(y, s, threshold, indices))
    return {name: np.concatenate([part[name] for part in parts]) for name in RATE_METRICS}


def _positive_count(count: int, name: str) -> None:
    if int(count) != count or count < 1:
        raise ValueError(f"{name} must be a positive integer, got {count!r}")


def _bin_index(s: np.ndarray, bins: int) -> np.ndarray:
    """Each score's equal-width bin of [0, 1], 1.0 in the last (as ``calibration_bins``)."""
    return np.minimum((s * bins).astype(np.int64), bins - 1)


def _log_likelihood(y: np.ndarray, eta: np.ndarray) -> float:
    """Bernoulli log-likelihood at linear predictor ``eta``; ``logaddexp`` keeps large |eta| finite."""
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def _newton(y: np.ndarray, design: np.ndarray, offset: np.ndarray, start: np.ndarray | None = None,
            tolerance: float = 1e-10, steps: int = 100) -> tuple[np.ndarray, np.ndarray, float]:
    """Maximum-likelihood logistic regression by Newton-Raphson (IRLS).

    The log-likelihood is concave, so a Newton step that fails to raise it
    only overshoots: it is halved until it does. Callers rule out separation,
    where no maximum exists. The products with the ``(n, 1 or 2)`` design
    are einsums, not matmuls: BLAS would start its threads for sums this
    small, which costs milliseconds per product on a busy CPU.

    Returns:
        ``(coefficients, information, log_likelihood)``, the Fisher
        information ``X' W X`` at the estimate.
    """
    def information(beta):
        p = special.expit(offset + np.einsum("nk,k->n", design, beta))
        return p, np.einsum("ni,nj,n->ij", design, design, p * (1 - p))

    beta = np.zeros(design.shape[1]) if start is None else np.array(start, dtype=np.float64)
    current = _log_likelihood(y, offset + np.einsum("nk,k->n", design, beta))
    for _ in range(steps):
        p, fisher = information(beta)
        # A pseudo-inverse where the information is singular: far out on a
        # profile every p saturates at 0 or 1, the likelihood is flat there,
        # and a step along the flat direction changes nothing.
        step = np.linalg.pinv(fisher) @ np.einsum("nk,n->k", design, y - p)
        for _ in range(60):
            trial = _log_likelihood(y, offset + np.einsum("nk,k->n", design, beta + step))
            if trial >= current - 1e-12 * abs(current):
                break
            step = step / 2
        beta, current = beta + step, trial
        if np.max(np.abs(step)) < tolerance:
            break
    return beta, information(beta)[1], current


def _logistic_intercept(y: np.ndarray, offset: np.ndarray,
                        fixed: float | None = None) -> tuple[float, float, float]:
    """``(a, information, log-likelihood)`` of ``logit P(y = 1) = a + offset``; at ``fixed`` the
    likelihood of that ``a`` instead of the fit (a needs both classes to be finite)."""
    if fixed is not None:
        return float(fixed), float("nan"), _log_likelihood(y, offset + fixed)
    beta, information, best = _newton(y, np.ones((y.size, 1)), offset)
    return float(beta[0]), float(information[0, 0]), best


def _logistic_fit(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``((a, b), covariance, log-likelihood)`` of ``logit P(y = 1) = a + b x``."""
    beta, information, best = _newton(y, np.column_stack([np.ones_like(x), x]), np.zeros_like(x))
    return beta, np.linalg.pinv(information), best


def _likelihood_interval(profile, estimate: float, se: float, best: float,
                         critical: float) -> tuple[float, float]:
    """The values ``v`` with ``2 (best - profile(v)) <= critical``, a likelihood-ratio interval.

    Each bound is bracketed by stepping out from the estimate in doubling
    multiples of the standard error, then found by Brent's method. A bound
    the deviance never reaches within 2^40 standard errors is infinite.
    """
    def excess(value):
        return 2 * (best - profile(value)) - critical

    bounds = []
    for direction in (-1.0, 1.0):
        inner, outer, found = estimate, estimate + direction * se, False
        for _ in range(40):
            if excess(outer) > 0:
                found = True
                break
            inner, outer = outer, estimate + 2 * (outer - estimate)
        bounds.append(optimize.brentq(excess, min(inner, outer), max(inner, outer), xtol=1e-10)
                      if found else direction * float("inf"))
    return float(bounds[0]), float(bounds[1])


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of the defined values."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(defined, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def _count(k: int, n: int) -> int:
    if int(k) != k or int(n) != n or not 0 <= k <= n:
        raise ValueError(f"need integer counts with 0 <= k <= n, got k={k!r}, n={n!r}")
    return int(k)


def _level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(level)


def _z(level: float) -> float:
    """The two-sided normal quantile of ``level`` (1.96 at 0.95)."""
    return float(stats.norm.ppf(0.5 + _level(level) / 2))


def _delong_moments(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs ``(k,)`` and DeLong covariance ``(k, k)`` of ``k`` score rows on the same examples.

    Placement values are read off sorted scores (ties count 1/2), so a row
    costs O(n log n).
    """
    s = np.atleast_2d(s)
    positive = y == 1
    m, n = int(np.count_nonzero(positive)), int(np.count_nonzero(~positive))
    k = s.shape[0]
    if m == 0 or n == 0:
        return np.full(k, np.nan), np.full((k, k), np.nan)
    pos_place, neg_place = np.empty((k, m)), np.empty((k, n))
    for row, scores in enumerate(s):
        pos, neg = scores[positive], scores[~positive]
        neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
        # Negatives below a positive, plus half of those tied with it; and the mirror image.
        pos_place[row] = (np.searchsorted(neg_sorted, pos, "left")
                          + np.searchsorted(neg_sorted, pos, "right")) / (2 * n)
        neg_place[row] = (2 * m - np.searchsorted(pos_sorted, neg, "left")
                          - np.searchsorted(pos_sorted, neg, "right")) / (2 * m)
    auc = pos_place.mean(axis=1)
    return auc, _sample_cov(pos_place) / m + _sample_cov(neg_place) / n


def _sample_cov(rows: np.ndarray) -> np.ndarray:
    """Covariance of the rows over their columns (``n - 1`` denominator); nan for one column."""
    count = rows.shape[1]
    if count < 2:
        return np.full((rows.shape[0],) * 2, np.nan)
    centred = rows - rows.mean(axis=1, keepdims=True)
    return centred @ centred.T / (count - 1)


def _mover_mean(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float]:
    """Interval of ``(a + b) / 2`` from the estimates and intervals ``(estimate, low, high)``
    of ``a`` and ``b`` (MOVER, Zou & Donner 2008: each side recovers the variance from the
    distance of each bound to its estimate)."""
    (ea, la, ha), (eb, lb, hb) = a, b
    if np.isnan([ea, la, ha, eb, lb, hb]).any():
        return float("nan"), float("nan")
    low = ea + eb - np.hypot(ea - la, eb - lb)
    high = ea + eb + np.hypot(ha - ea, hb - eb)
    return float(low / 2), float(high / 2)


def _mover_difference(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float]:
    """Interval of ``a - b`` from the estimates and intervals ``(estimate, low, high)`` of ``a``
    and ``b``, taken as uncorrelated (MOVER, Newcombe 1998 method 10, Zou & Donner 2008): the
    lower side adds the distances of ``a``'s lower and ``b``'s upper bound in quadrature."""
    (ea, la, ha), (eb, lb, hb) = a, b
    if np.isnan([ea, la, ha, eb, lb, hb]).any():
        return float("nan"), float("nan")
    return float(ea - eb - np.hypot(ea - la, hb - eb)), float(ea - eb + np.hypot(ha - ea, eb - lb))


def _json_float(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _named(kind: str, class_name: str | None) -> str:
    return f"{kind} ({class_name})" if class_name else kind
