"""Point metrics of the positive class: the label convention's one place
(``positive_label_of``, ``positive_scores``), the confusion matrix and the
rates from it, ROC AUC, Youden's threshold, and the training loss.

See ``engine.results.metrics`` for the label convention."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from engine.results.checks import _vector, _labels, _same_length, _checked, _threshold, _divide


# The metrics of `binary_metrics` that are rates, in reporting order; each gets
# an interval.
RATE_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "npv", "f1", "auc",
                "balanced_accuracy")


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


def _named(kind: str, class_name: str | None) -> str:
    return f"{kind} ({class_name})" if class_name else kind
