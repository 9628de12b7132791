"""Split replicates: the corrected resampled t (Nadeau and Bengio 2003) against
hand-computed values, the variance components, and simulated sweeps of K
splits x S seeds pushed through the report's family of tests."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from engine.study import stats

SWEEPS = 4000  # Monte Carlo SE of a rate: 0.0034 at 5 %, 0.0063 at 80 %
SETTINGS, SPLITS, SEEDS = 3, 5, 2
RATIO = 100 / 500  # n_val / n_train
PAIRS = SETTINGS * (SETTINGS - 1) // 2
# The numbers: on one split's images one setting happens to do better,
# per-split differences of SD 0.04 from that alone; seed noise gives per-seed
# differences of SD 0.02. Each setting's offset has SD 0.04 / sqrt 2, each run's noise 0.02 / sqrt 2.
OFFSET_SD, NOISE_SD = 0.04 / math.sqrt(2), 0.02 / math.sqrt(2)


def monte_carlo_error(p: float, n: int = SWEEPS) -> float:
    return math.sqrt(p * (1 - p) / n)


def sweeps(rng: np.random.Generator, noise_sd: float = NOISE_SD, better: float = 0.0) -> np.ndarray:
    """``(SWEEPS, settings, splits, seeds)`` statistics of equal settings (setting 0
    lower by ``better``): a split effect shared by all settings (some splits are
    easier), a (setting, split) offset shared by that split's seeds and correlated
    across the splits of a setting by rho = r / (1 + r) (their training sets
    overlap: Nadeau-Bengio's model, rho / (1 - rho) = r), and seed noise."""
    rho = RATIO / (1 + RATIO)
    pool = rng.normal(size=(SWEEPS, SETTINGS, 1, 1))  # what every split of a setting shares
    own = rng.normal(size=(SWEEPS, SETTINGS, SPLITS, 1))
    offset = OFFSET_SD * (math.sqrt(rho) * pool + math.sqrt(1 - rho) * own)
    split = 0.04 * rng.normal(size=(SWEEPS, 1, SPLITS, 1))
    values = 0.5 + split + offset + noise_sd * rng.normal(size=(SWEEPS, SETTINGS, SPLITS, SEEDS))
    values[:, 0] -= better
    return values


# --- by hand ------------------------------------------------------------------

def test_corrected_t_by_hand():
    # J = 4 splits, differences 0.5, 0.9, 0.4, 0.6: mean 0.6, squares about it 0.01 + 0.09 + 0.04 + 0
    # = 0.14, s^2 = 0.14 / 3; r = 0.25 -> se^2 = (1/4 + 1/4) s^2 = 0.07 / 3, se = 0.1527525..., df 3.
    c = stats.corrected_t(np.array([0.5, 0.9, 0.4, 0.6]), 0.25)
    se = math.sqrt(0.07 / 3)
    t = 0.6 / se  # 3.927922...
    # Student's t with 3 df in closed form: two-sided p = 1 - (2/pi)(theta + sin theta cos theta),
    # theta = atan(t / sqrt 3); its 0.975 quantile is 3.182446305284263.
    theta = math.atan(t / math.sqrt(3))
    assert (se, t) == pytest.approx((0.15275252316519466, 3.927922024247863), rel=1e-12)
    assert c.difference == pytest.approx(0.6) and c.se == pytest.approx(se) and c.df == 3
    assert c.p == pytest.approx(1 - 2 / math.pi * (theta + math.sin(theta) * math.cos(theta)), rel=1e-9)
    assert c.p == pytest.approx(0.0293705, abs=1e-7)
    half = 3.182446305284263 * se  # 0.486124...
    assert (c.low, c.high) == pytest.approx((0.6 - half, 0.6 + half), rel=1e-9)
    assert c.method == "corrected resampled t (Nadeau-Bengio, n_val/n_train = 0.25) over 4 shared splits"
    # A missing split is left out; fewer than 2 differences: no test.
    assert stats.corrected_t(np.array([0.5, np.nan, 0.9, 0.4, 0.6]), 0.25) == c
    assert stats.corrected_t(np.array([0.5, np.nan]), 0.25) is None


def test_ratio_zero_is_the_paired_t():
    best, other = {0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 2.9, 2: 3.4, 7: 9.0}
    plain = stats.paired(best, other)
    assert stats.corrected_t(np.array([1.5 - 1.0, 2.9 - 2.0, 3.4 - 3.0]), 0.0) == plain
    assert plain.method == "paired t over 3 shared seeds" and stats.compare(best, other) == plain
    split = stats.compare(best, other, ratio=0.2)
    assert split.method == "corrected resampled t (Nadeau-Bengio, n_val/n_train = 0.2) over 3 shared splits"
    assert split.se == pytest.approx(plain.se * math.sqrt((1 / 3 + 0.2) * 3))  # s sqrt(1/3 + r) against s / sqrt 3
    assert split.difference == plain.difference and split.p > plain.p


def test_welch_with_ratio_inflates_each_variance():
    # variances 1 and 4 over 3 runs each, r = 0.5: se^2 = 1 (1/3 + 1/2) + 4 (1/3 + 1/2) = 25/6;
    # Satterthwaite's df as before, (25/6)^2 / ((5/6)^2 / 2 + (20/6)^2 / 2) = 50/17.
    c = stats.compare({0: 1.0, 1: 2.0, 2: 3.0}, {5: 2.0, 6: 4.0, 7: 6.0}, ratio=0.5)
    assert c.method == "Welch t, corrected resampled (Nadeau-Bengio, n_val/n_train = 0.5)"
    assert (c.difference, c.se, c.df) == pytest.approx((2.0, math.sqrt(25 / 6), 50 / 17))
    assert stats.welch([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]).se == pytest.approx(math.sqrt(5 / 3))  # unchanged at 0


def test_family_with_ratio_is_the_corrected_t_of_each_pair():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 6))
    means[2, 4] = np.nan  # one missing split
    tests = stats.family(means, ratio=RATIO)
    for i, j in ((0, 1), (0, 2), (2, 1)):
        c = stats.corrected_t(means[j] - means[i], RATIO)
        assert (tests.difference[i, j], tests.se[i, j], tests.p[i, j], tests.df[i, j]) == \
            pytest.approx((c.difference, c.se, c.p, c.df))
    assert stats.family(means, ratio=0.0).p == pytest.approx(stats.family(means).p, nan_ok=True)


def test_trend_with_ratio_inflates_the_se():
    # 3 settings at x = 1, 2, 3 over 3 splits; per-split slopes 1, 2, 3 (mean 2, sd 1).
    x = np.array([1.0, 2.0, 3.0])
    values = np.outer(x, [1.0, 2.0, 3.0]) + np.array([0.3, -0.1, 0.2])
    plain, split = stats.trend(values, x), stats.trend(values, x, ratio=0.2)
    assert plain.difference == split.difference == pytest.approx(2.0)
    assert plain.se == pytest.approx(1 / math.sqrt(3)) and split.se == pytest.approx(math.sqrt(1 / 3 + 0.2))
    assert split.df == plain.df == 2 and split.p > plain.p
    assert plain.method == "one-sample t on the per-seed slopes over 3 seeds"
    assert split.method == ("corrected resampled t (Nadeau-Bengio, n_val/n_train = 0.2) on the per-split slopes "
                            "over 3 splits")


def test_power_with_ratio():
    # Units are splits: the se of the mean difference is s sqrt(1/J + r), not s / sqrt J.
    assert stats.detectable_in_sds(5, 3, ratio=0.2) == pytest.approx(
        stats.detectable(math.sqrt(0.4), 4, 0.05 / 3))
    assert stats.detectable_in_sds(5, 3, ratio=0.0) == stats.detectable_in_sds(5, 3)
    n = stats.repeats_needed(1.0, 1.0, 1, ratio=0.05)
    assert stats.power(1 / math.sqrt(1 / n + 0.05), n - 1, 0.05) >= 0.8 > \
        stats.power(1 / math.sqrt(1 / (n - 1) + 0.05), n - 2, 0.05)
    assert n > stats.repeats_needed(1.0, 1.0, 1)
    # The se never falls below s sqrt(r): 1 SD at r = 0.2 is at most 2.24 se, out of reach of 80 % power.
    assert stats.repeats_needed(1.0, 1.0, 1, ratio=0.2) is None


def test_split_means_average_the_seeds_quietly():
    values = np.array([[[0.1, 0.3], [np.nan, 0.5], [np.nan, np.nan]]])  # (settings, splits, seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty split is NaN by design, not a warning
        means = stats.split_means(values)
    assert means.shape == (1, 3)
    assert means[0, :2] == pytest.approx([0.2, 0.5]) and np.isnan(means[0, 2])
    assert stats.split_means(np.zeros((7, 3, 5, 2))).shape == (7, 3, 5)


def test_variance_components_by_hand():
    # Splits (1, 3), (4, 6), (2, missing): means 2, 5, 2; N = 5 runs, a = 3 splits, grand mean 3.2.
    # Within: (1 + 1 + 1 + 1 + 0) / (5 - 3) = 2. Between: (2 * 1.44 + 2 * 3.24 + 1.44) / 2 = 5.4.
    # n0 = (5 - (4 + 4 + 1) / 5) / 2 = 1.6; split = (5.4 - 2) / 1.6 = 2.125.
    split, seed = stats.variance_components(np.array([[1.0, 3.0], [4.0, 6.0], [2.0, np.nan]]))
    assert (split, seed) == pytest.approx((2.125, 2.0), rel=1e-12)
    assert isinstance(split, float) and isinstance(seed, float)
    # Between (1) below within (2): the split part is truncated at 0.
    assert stats.variance_components(np.array([[1.0, 3.0], [2.0, 4.0]])) == pytest.approx((0.0, 2.0))
    # One split with runs: no split part. No split with 2 runs: neither part.
    split, seed = stats.variance_components(np.array([[1.0, 3.0], [np.nan, np.nan]]))
    assert np.isnan(split) and seed == pytest.approx(2.0)
    assert np.isnan(stats.variance_components(np.array([[1.0, np.nan], [2.0, np.nan]]))).all()


def test_variance_components_recover_known_ones():
    rng = np.random.default_rng(1)
    # 2000 splits x 4 seeds: split SD 0.04, seed SD 0.02 -> 0.0016 and 0.0004. The estimates'
    # relative SEs are about 3.4 % (split) and 1.8 % (seed); 10 % is 3 SEs for the split part.
    values = 0.5 + 0.04 * rng.normal(size=(2000, 1)) + 0.02 * rng.normal(size=(2000, 4))
    assert stats.variance_components(values) == pytest.approx((0.0016, 0.0004), rel=0.1)
    # A fifth of the runs missing (unbalanced, some splits with one run or none): still recovered.
    values[rng.random(values.shape) < 0.2] = np.nan
    assert stats.variance_components(values) == pytest.approx((0.0016, 0.0004), rel=0.12)
    # Leading axes: one pair of components per setting.
    split, seed = stats.variance_components(np.stack([values, 2 * values]))
    assert split.shape == seed.shape == (2,) and seed[1] == pytest.approx(4 * seed[0])


# --- simulated sweeps ---------------------------------------------------------

def test_equal_settings_over_splits_are_rarely_called_worse():
    """5 splits x 2 seeds, 3 equal settings, a split x setting interaction correlated
    across splits by r / (1 + r). The corrected t over the split means keeps the
    chance of any false "worse" within 5.5 %; the paired t over the seeds of one
    split and the plain paired t over the splits do not."""
    rng = np.random.default_rng(2)
    values = sweeps(rng)
    means = stats.split_means(values)
    corrected = stats.family(means, ratio=RATIO).worse.any(axis=-1).mean()
    # Observed 0.043 (the correction is conservative here: seed noise, independent
    # across splits, dilutes the correlation below r / (1 + r)); MC SE at 0.05 is 0.0034.
    assert corrected <= 0.055, corrected
    # Seeds of one split share its images: the interaction looks like a real difference.
    # Observed 0.135, even with 1 df (2 seeds); with 3 seeds per split it was 0.37, with 5 0.72.
    seed_only = stats.family(values[:, :, 0, :]).worse.any(axis=-1).mean()
    assert seed_only > 0.1, seed_only
    # Splits are not independent: the plain paired t over them understates the se. Observed 0.13.
    plain = stats.family(means).worse.any(axis=-1).mean()
    assert plain > 0.1, plain
    # Nadeau-Bengio's model exactly (no seed noise: the split differences correlate by r / (1 + r)):
    # the corrected t is no longer conservative, yet keeps its level. Observed 0.043.
    exact = stats.family(stats.split_means(sweeps(rng, noise_sd=0.0)), ratio=RATIO).worse.any(axis=-1).mean()
    assert exact <= 0.055, exact


def test_a_planted_difference_over_splits_is_found_at_the_stated_power():
    """Setting 0 better by what ``detectable`` states for the true se of the design's
    mean per-split difference is found better than setting 1 in at least 80 % of
    sweeps (less 3 Monte Carlo SEs)."""
    rng = np.random.default_rng(3)
    rho = RATIO / (1 + RATIO)
    # Per-split differences of two settings: variance 2 OFFSET^2 + 2 NOISE^2 / S (0.0018), covariance
    # between two splits 2 rho OFFSET^2; the true variance of their mean over J splits is
    # var (rho_d + (1 - rho_d) / J), rho_d = cov / var = 0.148 (below rho = 0.167: conservative).
    var = 2 * OFFSET_SD ** 2 + 2 * NOISE_SD ** 2 / SEEDS
    rho_d = 2 * rho * OFFSET_SD ** 2 / var
    true_se = math.sqrt(var * (rho_d + (1 - rho_d) / SPLITS))  # 0.0239
    corrected_se = math.sqrt((1 / SPLITS + RATIO) * var * (1 - rho_d))  # 0.0248, what the test divides by
    assert corrected_se >= true_se
    planted = stats.detectable(true_se, SPLITS - 1, stats.ALPHA / PAIRS)  # 0.123
    tests = stats.family(stats.split_means(sweeps(rng, better=planted)), ratio=RATIO)
    found = tests.beats[:, 0, 1].mean()  # observed 0.837
    assert found >= stats.POWER - 3 * monte_carlo_error(stats.POWER), found
    assert tests.best_set[:, 0].mean() >= 0.99  # the better setting stays in the best set
