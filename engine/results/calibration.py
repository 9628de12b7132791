"""Calibration of P(positive): reliability bins, the Brier score, the ECE
with its bootstrap interval and the ECE a perfectly calibrated model of the
same size would show, and the calibration slope and intercept (logistic
recalibration with profile-likelihood intervals)."""

from __future__ import annotations

import numpy as np
from scipy import optimize, special, stats

from engine.results.checks import _CHUNK, _vector, _checked, _divide, _positive_count, _level
from engine.results.intervals import stratified_resamples, _percentile_interval


# Equal-width bins of P(positive) over [0, 1] for the calibration error and
# the reliability diagram: 10 is the usual choice, and with 100 test images
# it leaves about 10 images per bin where the scores spread.
CALIBRATION_BINS = 10


ECE_INTERVAL = "percentile bootstrap, examples resampled within each class"


ECE_REFERENCE = ("mean ECE of labels drawn as Bernoulli(score) for the observed scores (a perfectly calibrated model "
                 "on a set of this size and these scores), by simulation with a fixed seed")


RECALIBRATION = ("logistic recalibration on logit(score): slope from the joint fit of intercept and slope; intercept "
                 "from calibration-in-the-large (intercept only, logit(score) as offset); 95 % profile likelihood "
                 "intervals, standard errors from the Fisher information")


# Scores are clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP] before the logit: a float32 sigmoid saturates to exactly 0 or
# 1, whose logit is infinite; the bound is Keras' fuzz factor, which its loss clips to as well (logit +-16.1).
LOGIT_CLIP = 1e-7


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
