"""Metrics for the positive class, with stratified bootstrap intervals.

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

All functions are pure and use numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# The metrics of `binary_metrics` that are rates, in reporting order; these get
# bootstrap intervals.
RATE_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "npv", "f1", "auc",
                "balanced_accuracy")

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
    """The threshold that maximises Youden's J = sensitivity + specificity - 1.

    The candidates are the distinct scores, each used as ``score >= t``. J is
    compared exactly (as the integer ``J * n_positive * n_negative`` up to a
    constant), so thresholds with equal J are really tied. Ties go to the
    threshold closest to 0.5 (the default threshold, so the choice moves away
    from it only when that buys a strictly better J), then to the larger
    threshold (the more specific one). Meant to be chosen on validation data
    and applied unchanged to test data.

    Args:
        y_true: 1 for the positive class, 0 otherwise; both classes needed.
        scores: P(positive).

    Returns:
        The chosen threshold, one of the scores.

    Raises:
        ValueError: If either class is missing, since J is then undefined.
    """
    y, s = _checked(y_true, scores)
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    if pos.size == 0 or neg.size == 0:
        raise ValueError("the Youden threshold needs examples of both classes "
                         f"(got {pos.size} positive, {neg.size} negative)")
    candidates = np.unique(s)
    tp = pos.size - np.searchsorted(pos, candidates, side="left")  # positives >= t
    tn = np.searchsorted(neg, candidates, side="left")  # negatives < t
    j = tp * neg.size + tn * pos.size  # (J + 1) * n_pos * n_neg
    best = candidates[j == j.max()]
    distance = np.abs(best - 0.5)
    return float(best[distance == distance.min()].max())


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
    values = _bootstrap_values(y_true, scores, threshold, n_resamples, seed)
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


def summary(p_label1, labels, positive_label: int, threshold: float = 0.5, n_resamples: int = 2000,
            seed: int = 0, level: float = 0.95, label_map: Mapping[str, int] | None = None) -> dict:
    """Metrics, intervals and confusion matrix of one split, ready for JSON.

    Undefined values are ``None`` (JSON null), because JSON has no NaN.

    Args:
        p_label1: Sigmoid outputs, P(label 1).
        labels: True labels, 0 or 1.
        positive_label: Label of the positive class.
        threshold: Decision threshold on P(positive) (not on ``p_label1``).
        n_resamples: Bootstrap resamples.
        seed: Bootstrap seed.
        level: Coverage of the intervals.
        label_map: Optional class name to label, to name the classes.

    Returns:
        A dict of plain ints, floats, strings, lists and None.
    """
    scores, y = positive_scores(p_label1, labels, positive_label)
    metrics = binary_metrics(y, scores, threshold)
    intervals = bootstrap_intervals(y, scores, threshold, n_resamples, seed, level)
    names = {int(v): k for k, v in (label_map or {}).items()}
    positive_name, negative_name = names.get(positive_label), names.get(1 - positive_label)
    score = "p" if positive_label == 1 else "1 - p"
    tp, fp, tn, fn = (metrics[k] for k in ("tp", "fp", "tn", "fn"))
    return {
        "positive_label": int(positive_label),
        "positive_class": positive_name,
        "negative_class": negative_name,
        "convention": (f"labels are class indices in alphabetical order of the class names; p is the "
                       f"model's sigmoid output, P(label 1); the positive class has label "
                       f"{positive_label}; score = P(positive) = {score}; predicted positive when "
                       f"score >= threshold"),
        "score": score,
        "threshold": float(threshold),
        "n": metrics["n"],
        "n_positive": metrics["n_positive"],
        "n_negative": metrics["n"] - metrics["n_positive"],
        "metrics": {name: _json_float(metrics[name]) for name in RATE_METRICS},
        "intervals": {name: [_json_float(v) for v in intervals[name]] for name in RATE_METRICS},
        "confusion": {
            "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "matrix": [[tn, fp], [fn, tp]],
            "rows": [_named("true negative", negative_name), _named("true positive", positive_name)],
            "columns": [_named("predicted negative", negative_name),
                        _named("predicted positive", positive_name)],
        },
        "binary_cross_entropy": _json_float(binary_cross_entropy(labels, p_label1)),
        "bootstrap": {
            "method": "percentile, examples resampled within each class",
            "n_resamples": int(n_resamples), "seed": int(seed), "level": float(level),
            # How many resamples left a metric undefined: its interval rests on the others.
            "undefined": intervals.undefined,
        },
    }


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


def _stratified_resamples(y: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
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


def _resample_metrics(y: np.ndarray, s: np.ndarray, threshold: float,
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


def _bootstrap_values(y_true, scores, threshold: float, n_resamples: int,
                      seed: int) -> dict[str, np.ndarray]:
    """Each rate metric in each of ``n_resamples`` stratified resamples (nan where undefined)."""
    y, s = _checked(y_true, scores)
    threshold = _threshold(threshold)
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, int(n_resamples), _CHUNK):
        indices = _stratified_resamples(y, min(_CHUNK, int(n_resamples) - start), rng)
        parts.append(_resample_metrics(y, s, threshold, indices))
    return {name: np.concatenate([part[name] for part in parts]) for name in RATE_METRICS}


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of the defined values."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(defined, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def _json_float(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _named(kind: str, class_name: str | None) -> str:
    return f"{kind} ({class_name})" if class_name else kind
