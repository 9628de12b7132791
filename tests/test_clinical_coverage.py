"""Intervals that cover: the AUC's (DeLong on the logit scale) under a binormal model, the paired
AUC difference where DeLong's variance is 0, the calibration slope and intercept on hand-made
cases, and the ECE's interval and the ECE a perfectly calibrated model shows. Simulations have
fixed seeds and are vectorised; the whole file runs in seconds."""

import json
import math

import numpy as np
import pytest
from scipy import optimize, special, stats

from engine.results import metrics
from engine.results.metrics import (auc_interval, auc_score_interval, calibrated_ece, delong, delong_test,
                                     ece_interval, expected_calibration_error, logit_interval, recalibration,
                                     scores_summary, stratified_resamples)

Z = 1.959963984540054
# The deviance drop at a 95 % likelihood-ratio bound: the 0.95 quantile of chi-squared with 1 degree of freedom.
CHI2 = 3.841458820694124

# --- the AUC interval ----------------------------------------------------------------

# 2,000 draws of 50 + 50 images: a tail's miss rate has a Monte Carlo SE of about 0.4 %. Each tail may miss
# up to 3.5 % (nominal 2.5 %, plus what 50 + 50 images cost near AUC 1) plus two Monte Carlo SEs; an interval
# that misses under 0.5 % on a side, or covers more than 98.5 % in all, is too wide to be the right one.
DRAWS, PER_CLASS = 2000, 50
MOST_MISSED = 0.035 + 2 * math.sqrt(0.035 * 0.965 / DRAWS)  # 0.043
LEAST_MISSED, MOST_COVERED = 0.005, 0.985


def binormal_misses(auc: float, seed: int) -> dict[str, tuple[float, float]]:
    """Share of draws whose interval lies wholly above the true AUC, and wholly below it, for the
    logit-scale DeLong interval (``auc_interval``) and the normal interval clipped to [0, 1].

    Negatives N(0, 1), positives N(d, 1): AUC = Phi(d / sqrt(2)), so d = sqrt(2) Phi^-1(AUC)."""
    d = math.sqrt(2) * stats.norm.ppf(auc)
    y = np.repeat([1, 0], PER_CLASS)
    scores = np.random.default_rng(seed).normal(size=(DRAWS, y.size)) + d * y
    bounds = {"logit": np.empty((DRAWS, 2)), "clipped": np.empty((DRAWS, 2))}
    for i, s in enumerate(scores):
        bounds["logit"][i] = auc_interval(y, s)[:2]
        estimate, variance = delong(y, s)
        half = Z * math.sqrt(variance)
        bounds["clipped"][i] = (max(0.0, estimate - half), min(1.0, estimate + half)) if variance > 0 \
            else auc_score_interval(estimate, PER_CLASS, PER_CLASS)
    return {name: (float(np.mean(b[:, 0] > auc)), float(np.mean(b[:, 1] < auc))) for name, b in bounds.items()}


def covers_as_it_should(missed: tuple[float, float]) -> bool:
    return all(LEAST_MISSED <= m <= MOST_MISSED for m in missed) and 1 - sum(missed) <= MOST_COVERED


@pytest.mark.parametrize("auc, seed", [(0.80, 1), (0.95, 2), (0.99, 3)])
def test_auc_interval_covers_under_a_binormal_model(auc, seed):
    missed = binormal_misses(auc, seed)
    assert covers_as_it_should(missed["logit"]), missed
    if auc >= 0.95:
        # The same test rejects the normal interval clipped to [0, 1]: its lower bound is too high near 1
        # (9 % of draws miss below at AUC 0.95, 17 % at 0.99), and its upper side almost never misses.
        assert not covers_as_it_should(missed["clipped"]), missed


def test_logit_interval_golden():
    # At 0.5 the delta method multiplies the SE by 1 / (0.5 * 0.5) = 4: logit bounds -+ 1.96 * 4 * 0.05 = -+ 0.392.
    low, high = logit_interval(0.5, 0.05)
    assert (low, high) == pytest.approx((special.expit(-Z * 0.2), special.expit(Z * 0.2)), rel=1e-12)
    assert low == pytest.approx(1 - high, rel=1e-12) and round(float(low), 4) == 0.4032
    # Near 1 it stays inside (0, 1) and is skewed away from 1, where the normal interval would pass 1:
    # 0.99 -+ 1.96 * 0.01 is (0.9704, 1.0096). On the logit scale: logit(0.99) = ln 99 = 4.595, SE
    # 0.01 / 0.0099 = 1.0101, so 4.595 -+ 1.980 = (2.615, 6.575), back-transformed (0.9318, 0.9986).
    low, high = logit_interval(0.99, 0.01)
    assert (low, high) == pytest.approx(
        (special.expit(math.log(99) - Z / 0.99), special.expit(math.log(99) + Z / 0.99)), rel=1e-12)
    assert 0 < low < 0.99 < high < 1 and 0.99 - low > high - 0.99
    assert (round(float(low), 4), round(float(high), 4)) == (0.9318, 0.9986)
    # Arrays broadcast, as a vectorised simulation needs.
    assert logit_interval(np.array([0.5, 0.99]), np.array([0.05, 0.01]))[0].shape == (2,)


def test_auc_interval_falls_back_at_auc_one():
    y = np.repeat([1, 0], PER_CLASS)
    low, high, method = auc_interval(y, y + 0.5)
    assert method == metrics.AUC_FALLBACK and high == 1.0
    assert (low, high) == pytest.approx(auc_score_interval(1.0, PER_CLASS, PER_CLASS), rel=1e-12)


# --- the paired difference where DeLong's variance is 0 --------------------------------

def test_no_zero_width_interval_for_a_perfectly_separated_pair():
    # Two score sets that both rank all 50 positives above all 50 negatives: DeLong's variance of the
    # difference is 0. The interval is MOVER from the two AUCs' score intervals, both (0.9603, 1):
    # -+ hypot(1 - 0.9603, 0) = -+ 0.0397, and there is no p-value.
    y = np.repeat([1, 0], PER_CLASS)
    rng = np.random.default_rng(0)
    a, b = y + rng.uniform(0, 0.9, y.size), 2 * y + rng.uniform(0, 0.5, y.size)
    out = delong_test(y, a, b)
    bound = 1 - auc_score_interval(1.0, PER_CLASS, PER_CLASS)[0]
    assert out["auc_a"] == out["auc_b"] == 1.0 and out["difference"] == 0.0
    assert (out["low"], out["high"]) == pytest.approx((-bound, bound), rel=1e-12)
    assert round(out["high"], 4) == 0.0397 and out["high"] - out["low"] > 0.07
    assert math.isnan(out["p"]) and out["method"] == metrics.DELONG_TEST_FALLBACK


def test_zero_variance_with_a_difference():
    # A ranks perfectly; B scores every image alike (every placement 1/2). The placement differences are all
    # 1/2, so DeLong's variance is 0 although the AUCs differ by 1/2: MOVER again, around 0.5, inside [-1, 1].
    y = np.repeat([1, 0], 20)
    out = delong_test(y, y.astype(float), np.full(y.size, 0.5))
    assert out["difference"] == 0.5 and math.isnan(out["p"])
    a_low = auc_score_interval(1.0, 20, 20)[0]
    b_low, b_high = auc_score_interval(0.5, 20, 20)
    assert out["low"] == pytest.approx(0.5 - math.hypot(1 - a_low, b_high - 0.5), rel=1e-12)
    assert out["high"] == pytest.approx(0.5 + math.hypot(0.0, 0.5 - b_low), rel=1e-12)
    assert -1 <= out["low"] < 0.5 < out["high"] <= 1


# --- calibration slope and intercept -----------------------------------------------------

def two_groups(k: int):
    """Scores 0.2 and 0.8, 3k images each, with k and 2k positives: observed rates 1/3 and 2/3.

    Two score values make the logistic model saturated, so its fit reproduces the rates:
    slope = (logit(2/3) - logit(1/3)) / (logit(0.8) - logit(0.2)) = (2 ln 2) / (2 ln 4) = 1/2 exactly, and by
    symmetry the calibration-in-the-large intercept is 0."""
    s = np.repeat([0.2, 0.8], 3 * k)
    y = np.concatenate([np.repeat([1, 0], [k, 2 * k]), np.repeat([1, 0], [2 * k, k])])
    return y, s


def log_likelihood(y, eta):
    return float(np.sum(y * eta - np.logaddexp(0, eta)))


@pytest.mark.parametrize("k", [1, 100])
def test_calibration_slope_and_intercept_golden(k):
    y, s = two_groups(k)
    x = special.logit(s)
    out = recalibration(y, s)
    assert out["slope"] == pytest.approx(0.5, abs=1e-12) and out["intercept"] == pytest.approx(0.0, abs=1e-12)
    assert out["slope_reason"] is None and out["intercept_reason"] is None
    # Fisher information: each group's fitted logit has variance 1 / (n p (1 - p)) = 1 / (3k * 2/9) = 3 / (2k),
    # and the slope is their difference over 2 ln 4, so se = sqrt(3 / k) / (4 ln 2).
    assert out["slope_se"] == pytest.approx(math.sqrt(3 / k) / (4 * math.log(2)), rel=1e-9)
    # The intercept's information at 0 is sum p (1 - p) over the fitted 0.2 and 0.8: 6k * 0.16.
    assert out["intercept_se"] == pytest.approx(1 / math.sqrt(0.96 * k), rel=1e-9)
    # Each profile bound drops the log-likelihood by chi2 / 2: by substitution, profiling the slope's
    # intercept with a separate optimiser.
    best = log_likelihood(y, x)
    for bound in out["intercept_interval"]:
        assert 2 * (best - log_likelihood(y, bound + x)) == pytest.approx(CHI2, rel=1e-6)

    def profile(b):
        return -optimize.minimize_scalar(lambda a: -log_likelihood(y, a + b * x)).fun

    joint = -optimize.minimize(lambda ab: -log_likelihood(y, ab[0] + ab[1] * x), [0, 0.5]).fun
    for bound in out["slope_interval"]:
        assert 2 * (joint - profile(bound)) == pytest.approx(CHI2, rel=1e-5)
    low, high = out["slope_interval"]
    # The profile interval is skewed where the likelihood is (wider above with 6 images), and close to the Wald
    # interval with 600.
    assert low < 0.5 < high
    if k == 100:
        assert (low, high) == pytest.approx((0.5 - Z * out["slope_se"], 0.5 + Z * out["slope_se"]), abs=0.01)


def test_calibrated_groups_give_slope_one():
    # Rates 1/5 at score 0.2 and 4/5 at 0.8: calibrated in each group, so slope 1 and intercept 0 exactly.
    s = np.repeat([0.2, 0.8], 5)
    y = np.array([1, 0, 0, 0, 0, 1, 1, 1, 1, 0])
    out = recalibration(y, s)
    assert out["slope"] == pytest.approx(1.0, abs=1e-12) and out["intercept"] == pytest.approx(0.0, abs=1e-12)


def test_recalibration_recovers_a_known_logistic_model():
    # Labels drawn as Bernoulli(score): slope 1 and intercept 0, within two SEs with this seed.
    rng = np.random.default_rng(0)
    s = rng.uniform(0.02, 0.98, 20000)
    out = recalibration((rng.random(s.size) < s).astype(int), s)
    assert abs(out["slope"] - 1) < 2 * out["slope_se"] and abs(out["intercept"]) < 2 * out["intercept_se"]
    assert out["slope_interval"][0] < 1 < out["slope_interval"][1]
    assert out["intercept_interval"][0] < 0 < out["intercept_interval"][1]
    # Labels drawn from logit P = 0.3 + 0.5 logit(score): slope 0.5 (scores too extreme), within two SEs.
    y = (rng.random(s.size) < special.expit(0.3 + 0.5 * special.logit(s))).astype(int)
    out = recalibration(y, s)
    assert abs(out["slope"] - 0.5) < 2 * out["slope_se"] and out["slope_interval"][1] < 1


def test_recalibration_under_separation_and_saturation():
    # Perfectly separated scores: no finite slope, and the reason says so; the intercept still exists.
    y = np.repeat([1, 0], 10)
    s = np.where(y == 1, 0.9, 0.1)
    out = recalibration(y, s)
    assert math.isnan(out["slope"]) and "separate" in out["slope_reason"]
    assert out["intercept"] == pytest.approx(0.0, abs=1e-12) and out["intercept_reason"] is None
    # Quasi-separation (a tie at the boundary) and saturated float32 outputs (exactly 0 and 1) do not crash.
    assert math.isnan(recalibration([1, 0, 1, 0], [0.9, 0.8, 0.8, 0.1])["slope"])
    saturated = recalibration([1, 1, 0, 1, 0, 0], [1.0, 0.7, 0.0, 0.2, 0.6, 0.0])
    assert math.isfinite(saturated["slope"]) and math.isfinite(saturated["intercept"])
    # One class only: neither exists. In the summary, missing values are JSON nulls with their reasons.
    assert recalibration([1, 1], [0.3, 0.6])["intercept_reason"] == "needs examples of both classes"
    summary = scores_summary(y, s, 0.5, n_resamples=50)
    json.dumps(summary, allow_nan=False)
    assert summary["recalibration"]["slope"] is None and summary["recalibration"]["slope_interval"] == [None, None]
    assert "separate" in summary["recalibration"]["slope_reason"]


# --- the ECE's interval and the ECE of a calibrated model ----------------------------------

def test_calibrated_ece_matches_a_direct_simulation():
    # 100 images with uniform scores: labels drawn as Bernoulli(score) give ECEs of about 0.08-0.10, never 0.
    s = np.random.default_rng(5).uniform(0, 1, 100)
    reference = calibrated_ece(s, n_draws=2000, seed=0)
    rng = np.random.default_rng(99)
    direct = np.array([expected_calibration_error((rng.random(s.size) < s).astype(int), s) for _ in range(1000)])
    # Monte Carlo SE of the difference: the ECEs' SD times sqrt(1/2000 + 1/1000).
    assert abs(reference - direct.mean()) < 4 * direct.std() * math.sqrt(1 / 2000 + 1 / 1000)
    assert 0.07 < reference < 0.11
    assert calibrated_ece(s, 500, seed=3) == calibrated_ece(s, 500, seed=3)


def test_ece_interval_is_the_percentile_bootstrap():
    # Miscalibrated scores (labels drawn from the square root of the score): the ECE is far above what a
    # calibrated model shows, and its interval contains it.
    rng = np.random.default_rng(2)
    s = rng.uniform(0, 1, 100)
    y = (rng.random(s.size) < np.sqrt(s)).astype(int)
    ece = expected_calibration_error(y, s)
    low, high = ece_interval(y, s, n_resamples=200, seed=4)
    assert low <= ece <= high and low > calibrated_ece(s)
    # The same resamples (200 are drawn in one piece) evaluated one at a time by expected_calibration_error.
    rows = stratified_resamples(y, 200, np.random.default_rng(4))
    slow = [expected_calibration_error(y[r], s[r]) for r in rows]
    assert (low, high) == pytest.approx(tuple(np.percentile(slow, [2.5, 97.5])), rel=1e-12)


def test_summary_carries_the_ece_interval_and_reference():
    rng = np.random.default_rng(1)
    s = rng.uniform(0, 1, 80)
    y = (rng.random(s.size) < s).astype(int)
    out = scores_summary(y, s, 0.5, n_resamples=200, seed=7)
    assert out["ece"] == pytest.approx(expected_calibration_error(y, s), rel=1e-12)
    assert out["ece_interval"] == pytest.approx(list(ece_interval(y, s, 200, 7)), rel=1e-12)
    assert out["ece_calibrated"] == pytest.approx(calibrated_ece(s, 200, 7), rel=1e-12)
    assert out["calibration"]["ece_calibrated"] == metrics.ECE_REFERENCE
    assert out["calibration"]["recalibration"] == metrics.RECALIBRATION
