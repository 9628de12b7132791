"""Equivalence and non-inferiority within a margin: TOST and the one-sided
tests against hand-computed values, missing runs, and simulated sweeps (seeds,
and split replicates with the corrected resampled t) pushed through the
report's own code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.study import equivalence, stats

SWEEPS = 4000  # Monte Carlo SE of a rate: 0.0034 at 5 %, 0.0063 at 80 %
MARGIN = 0.05
SETTINGS = 3
SEEDS, SEED_SD = 10, 0.05  # per-seed differences of two settings have SD SEED_SD
SPLITS, SPLIT_SD, RATIO = 8, 0.025, 0.2  # SPLIT_SD: SD of per-split differences about their mean


def monte_carlo_error(p: float, n: int = SWEEPS) -> float:
    return math.sqrt(p * (1 - p) / n)


def seed_sweeps(rng: np.random.Generator, offsets: list[float]) -> np.ndarray:
    """``(SWEEPS, settings, SEEDS)`` statistics: a seed effect every setting
    shares (the same data order and augmentations), each setting's true
    statistic ``0.5 + offset``, and run noise of SD SEED_SD / sqrt 2, so that
    per-seed differences have SD SEED_SD."""
    seed = 0.05 * rng.normal(size=(SWEEPS, 1, SEEDS))
    noise = SEED_SD / math.sqrt(2) * rng.normal(size=(SWEEPS, len(offsets), SEEDS))
    return 0.5 + np.array(offsets)[:, None] + seed + noise


def split_sweeps(rng: np.random.Generator, offsets: list[float]) -> np.ndarray:
    """``(SWEEPS, settings, SPLITS)`` per-split statistics under the model the
    corrected resampled t is exact for: a split effect every setting shares,
    and a (setting, split) offset correlated across a setting's splits by
    rho = r / (1 + r) (their training sets overlap). Per-split differences of
    two settings then vary about their sweep's mean with SD SPLIT_SD, and their
    mean about the truth with SD SPLIT_SD sqrt(1/J + r)."""
    rho = RATIO / (1 + RATIO)
    sd = SPLIT_SD / math.sqrt(2 * (1 - rho))  # each setting's offset; the within-sweep part is sd sqrt(1 - rho)
    pool = rng.normal(size=(SWEEPS, len(offsets), 1))
    own = rng.normal(size=(SWEEPS, len(offsets), SPLITS))
    split = 0.04 * rng.normal(size=(SWEEPS, 1, SPLITS))
    return 0.5 + np.array(offsets)[:, None] + split + sd * (math.sqrt(rho) * pool + math.sqrt(1 - rho) * own)


# --- by hand ------------------------------------------------------------------

# Three seeds; B - A = 0.05, 0.09, 0.04: mean 0.06, s^2 = (0.0001 + 0.0009 + 0.0004) / 2 = 0.0007,
# se = sqrt(0.0007 / 3) = 0.0152753, df 2. C is far worse than both.
A, B, C = [0.50, 0.60, 0.70], [0.55, 0.69, 0.74], [0.80, 0.91, 0.99]
SE = math.sqrt(0.0007 / 3)


def student2_cdf(t: float) -> float:
    """Student's t with 2 df in closed form."""
    return 0.5 + t / (2 * math.sqrt(t * t + 2))


def test_tost_by_hand():
    # The 0.95 quantile of t with 2 df: (2q - 1) / sqrt(2 q (1 - q)) at q = 0.95.
    half = 0.9 / math.sqrt(0.095) * SE  # 0.0446035
    e = equivalence.equivalent(np.array([A, B]), 0, 1, 0.12)
    assert (e.difference, e.low, e.high) == pytest.approx((0.06, 0.06 - half, 0.06 + half), abs=1e-12)
    # H0 d >= +0.12: P(T <= (0.06 - 0.12) / se); H0 d <= -0.12: P(T >= (0.06 + 0.12) / se).
    assert e.p_upper == pytest.approx(student2_cdf(-0.06 / SE), abs=1e-12)  # 0.0295625
    assert e.p_lower == pytest.approx(student2_cdf(-0.18 / SE), abs=1e-12)  # 0.0035624
    assert e.p == e.p_upper and e.equivalent
    assert (e.low, e.high) == pytest.approx((0.0153965, 0.1046035), abs=1e-7)
    # 0.1 sits inside the interval: not equivalent, and its p says so.
    narrow = equivalence.equivalent(np.array([A, B]), 0, 1, 0.1)
    assert narrow.p_upper == pytest.approx(student2_cdf(-0.04 / SE), abs=1e-12) and narrow.p_upper > 0.05
    assert not narrow.equivalent
    # Swapping the settings mirrors the interval and swaps the two tests.
    swapped = equivalence.equivalent(np.array([A, B]), 1, 0, 0.12)
    assert (swapped.low, swapped.high, swapped.p_lower, swapped.p_upper) == pytest.approx(
        (-e.high, -e.low, e.p_upper, e.p_lower), abs=1e-15)


def test_non_inferior_by_hand():
    values = np.array([A, B, C])
    # B - C per seed: -0.25, -0.22, -0.25: mean -0.24, s^2 = (0.0001 + 0.0004 + 0.0001) / 2 = 0.0003.
    se_bc = math.sqrt(0.0003 / 3)
    p, holds = equivalence.non_inferior(values, 1, 0.12)
    # B against A: H0 stat(B) - stat(A) >= 0.12, P(T <= (0.06 - 0.12) / se); against C the same with -0.24.
    assert p[0] == pytest.approx(student2_cdf(-0.06 / SE), abs=1e-12)
    assert p[2] == pytest.approx(student2_cdf((-0.24 - 0.12) / se_bc), abs=1e-12)
    assert np.isnan(p[1]) and holds
    p, holds = equivalence.non_inferior(values, 1, 0.1)  # B against A: p = 0.0596, above 5 %
    assert p[0] == pytest.approx(student2_cdf(-0.04 / SE), abs=1e-12) and not holds
    assert not equivalence.non_inferior(values, 2, 0.12)[1]  # C is 0.3 worse than A


def test_lines_by_hand():
    names = ["lr=0.001", "lr=0.0003", "lr=0.0001"]
    assert equivalence.lines(names, np.array([A, B, C]), 0.12) == [
        "lr=0.001: best within 0.12 (non-inferior to every other setting, largest one-sided p = 0.0036)",
        "lr=0.0003: best within 0.12 (non-inferior to every other setting, largest one-sided p = 0.03)",
        "lr=0.001 and lr=0.0003: equivalent within 0.12 (lr=0.0003 minus lr=0.001: 90 % interval +0.015 to "
        "+0.105; TOST p = 0.03)",
        "lr=0.001 and lr=0.0001: differ by more than 0.12 (lr=0.0001 minus lr=0.001: 90 % interval +0.283 to "
        "+0.317; TOST p = 1)",
        "lr=0.0003 and lr=0.0001: differ by more than 0.12 (lr=0.0001 minus lr=0.0003: 90 % interval +0.211 to "
        "+0.269; TOST p = 1)",
    ]
    # A margin of 0.1: the interval of A and B reaches +0.105; A alone is best within it.
    assert equivalence.lines(names[:2], np.array([A, B]), 0.1) == [
        "lr=0.001: best within 0.1 (non-inferior to every other setting, largest one-sided p = 0.0045)",
        "lr=0.001 and lr=0.0003: cannot tell whether equivalent within 0.1 (lr=0.0003 minus lr=0.001: 90 % "
        "interval +0.015 to +0.105; TOST p = 0.06)",
    ]
    # E - A per seed: 0.05, -0.09, 0.01: mean -0.01, s^2 = (0.0036 + 0.0064 + 0.0004) / 2 = 0.0052, so E is
    # lowest, yet far from best within 0.01: its bound is -0.01 + 2.92 se = +0.1116 (half width 0.12: 2 places).
    noisy = [0.55, 0.51, 0.71]
    se = math.sqrt(0.0052 / 3)
    assert student2_cdf(-0.02 / se) == pytest.approx(0.3392, abs=1e-4)
    assert equivalence.lines(["lr=0.001", "lr=0.003"], np.array([A, noisy]), 0.01) == [
        "lr=0.003 (lowest statistic): cannot tell whether best within 0.01 (against lr=0.001: lr=0.003 minus "
        "lr=0.001 at most +0.11 by the one-sided 95 % bound; one-sided p = 0.34)",
        "lr=0.001 and lr=0.003: cannot tell whether equivalent within 0.01 (lr=0.003 minus lr=0.001: 90 % "
        "interval -0.13 to +0.11; TOST p = 0.5)",  # the mean sits on -D: t = 0
    ]
    assert equivalence.lines(names, np.array([A, B, C]), None) == []  # no margin stated: no sentences


def test_the_margin_must_be_positive():
    for margin in (0.0, -0.05, math.nan, math.inf):
        with pytest.raises(ValueError, match="positive"):
            equivalence.family(np.array([A, B]), margin)


# --- the same estimates as the ranking ----------------------------------------

def test_the_differences_are_those_of_stats_family():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 4, 6))
    values[0, 1, 2] = np.nan  # one missing run: paired over the other 5 seeds
    values[1, 2, 2:] = np.nan  # shares 2 seeds: still paired
    values[2, 0, :4], values[2, 3, 4:] = np.nan, np.nan  # share none: Welch
    for ratio in (0.0, RATIO):
        ours, theirs = equivalence.family(values, MARGIN, ratio=ratio), stats.family(values, ratio=ratio)
        off = ~np.eye(4, dtype=bool)
        for name in ("difference", "se", "df", "paired"):
            assert getattr(ours, name)[..., off] == pytest.approx(getattr(theirs, name)[..., off]), name
    assert not equivalence.family(values, MARGIN).paired[2, 0, 3]
    # Welch's pair, by hand against stats.welch.
    welch = stats.welch(list(values[2, 0, 4:]), list(values[2, 3, :4]))
    e = equivalence.equivalent(values[2], 0, 3, MARGIN)
    assert (e.difference, e.high - e.difference) == pytest.approx(
        (welch.difference, welch.se * stats.scipy_stats.t.ppf(0.95, welch.df)))


def test_a_missing_run_and_too_few_units():
    values = np.array([A + [0.55], B + [np.nan], C + [0.85]])  # B lacks the 4th seed
    e = equivalence.equivalent(values, 0, 1, 0.12)
    assert (e.low, e.high, e.p_upper) == pytest.approx(
        tuple(getattr(equivalence.equivalent(np.array([A, B]), 0, 1, 0.12), k) for k in ("low", "high", "p_upper")),
        abs=1e-12)  # the pair is tested over the 3 seeds both have
    # One run of B left: no paired or Welch test of any pair with B.
    values = np.array([A, [0.65, np.nan, np.nan], C])
    e = equivalence.equivalent(values, 0, 1, 0.12)
    assert np.isnan(e.p_lower) and np.isnan(e.p_upper) and np.isnan(e.low) and not e.equivalent
    p, holds = equivalence.non_inferior(values, 0, 0.12)
    assert np.isnan(p[1]) and p[2] < 0.05 and not holds  # A beats C, but B is untested
    assert not equivalence.family(values, 0.12).best_within.any()
    assert equivalence.lines(["a", "b", "c"], values, 0.12) == [
        "a (lowest statistic): cannot tell whether best within 0.12 (against b: too few runs: each needs at least "
        "2 finished seeds)",
        "a and b: cannot tell whether equivalent within 0.12 (too few runs: each needs at least 2 finished seeds)",
        "a and c: differ by more than 0.12 (c minus a: 90 % interval +0.283 to +0.317; TOST p = 1)",
        "b and c: cannot tell whether equivalent within 0.12 (too few runs: each needs at least 2 finished seeds)",
    ]
    # One unit each: nothing can be told, and the sentences say it per split.
    single = equivalence.family(np.array([[0.5], [0.5]]), 0.12, ratio=RATIO)
    assert not single.equivalent.any() and not single.best_within.any()
    assert equivalence.lines(["a", "b"], np.array([[0.5], [0.5]]), 0.12, RATIO)[0].endswith(
        "(against b: too few runs: each needs at least 2 finished splits)")


def test_one_sweep_is_a_slice_of_many():
    """The report's single sweep and a simulation's thousands go through the same arrays."""
    values = seed_sweeps(np.random.default_rng(1), [0.0, 0.0, MARGIN])[:20]
    many = equivalence.family(values, MARGIN)
    for s in (0, 7, 19):
        one = equivalence.family(values[s], MARGIN)
        assert (one.equivalent == many.equivalent[s]).all() and (one.best_within == many.best_within[s]).all()
        assert one.p_within == pytest.approx(many.p_within[s], nan_ok=True)
    p, holds = equivalence.non_inferior(values, 2, MARGIN)
    assert p.shape == (20, 3) and holds.shape == (20,) and (holds == many.best_within[:, 2]).all()


# --- power --------------------------------------------------------------------

def test_tost_power():
    # At a true difference of exactly D one test is at its boundary: at most ALPHA.
    assert equivalence.tost_power(MARGIN, SEED_SD, SEEDS, difference=MARGIN) <= stats.ALPHA
    assert equivalence.tost_power(MARGIN, SEED_SD, SEEDS, difference=-MARGIN) <= stats.ALPHA
    stated = equivalence.tost_power(MARGIN, SEED_SD, SEEDS)  # 0.795
    assert stated == pytest.approx(0.795, abs=0.001)
    assert equivalence.tost_power(MARGIN, SEED_SD, SEEDS, difference=0.02) < stated  # harder nearer the margin
    assert equivalence.tost_power(MARGIN, SEED_SD, 2 * SEEDS) > stated
    # Splits: the se never falls below sd sqrt(r), whatever their number.
    assert equivalence.tost_power(MARGIN, SEED_SD, 1000, RATIO) < equivalence.tost_power(MARGIN, SEED_SD, SEEDS)
    assert equivalence.tost_power(MARGIN, 0.0, SEEDS) == 1.0 and equivalence.tost_power(MARGIN, SEED_SD, 1) == 0.0
    # Large n: the t becomes normal, the sample SD exact, and the power 2 Phi(D / se - z) - 1.
    se = SEED_SD / math.sqrt(2000)
    z = stats.scipy_stats.norm.ppf(0.95)
    assert equivalence.tost_power(MARGIN / 20, SEED_SD, 2000) == pytest.approx(
        2 * stats.scipy_stats.norm.cdf(MARGIN / 20 / se - z) - 1, abs=0.002)


# --- simulated sweeps ---------------------------------------------------------

@pytest.mark.parametrize("design", ["seeds", "splits"])
def test_a_difference_of_exactly_the_margin_is_rarely_called_within_it(design):
    """Setting 1 is worse than setting 0 by exactly D (setting 2 by 10 D): "1 best
    within D" and "0 and 1 equivalent" each at most 5 % (+ 3 Monte Carlo SEs)."""
    offsets = [0.0, MARGIN, 10 * MARGIN]
    if design == "seeds":
        values, ratio = seed_sweeps(np.random.default_rng(2), offsets), 0.0
        values[np.random.default_rng(3).random(values.shape) < 0.1] = np.nan  # a tenth of the runs missing
    else:
        values, ratio = split_sweeps(np.random.default_rng(4), offsets), RATIO
    tests = equivalence.family(values, MARGIN, ratio=ratio)
    limit = stats.ALPHA + 3 * monte_carlo_error(stats.ALPHA)
    # Observed: seeds 0.050 and 0.049, splits 0.047 and 0.047 (the limit is 0.060).
    within, equal = tests.best_within[:, 1].mean(), tests.equivalent[:, 0, 1].mean()
    assert within <= limit and equal <= limit, (within, equal)
    assert tests.best_within[:, 0].mean() > 0.9 and not tests.best_within[:, 2].any()


@pytest.mark.parametrize("design", ["seeds", "splits"])
def test_equal_settings_are_shown_equivalent_at_the_stated_power(design):
    """Three equal settings: each pair is shown equivalent within D at least as
    often as ``tost_power`` states (less 3 Monte Carlo SEs), and, the formula
    being exact for these sweeps, not much more often."""
    if design == "seeds":
        values, ratio = seed_sweeps(np.random.default_rng(5), [0.0] * SETTINGS), 0.0
        stated = equivalence.tost_power(MARGIN, SEED_SD, SEEDS)  # 0.795
    else:
        values, ratio = split_sweeps(np.random.default_rng(6), [0.0] * SETTINGS), RATIO
        stated = equivalence.tost_power(MARGIN, SPLIT_SD, SPLITS, RATIO)  # 0.866
    tests = equivalence.family(values, MARGIN, ratio=ratio)
    error = monte_carlo_error(stated)
    # Observed: seeds 0.799, 0.791, 0.802 (stated 0.795); splits 0.858, 0.868, 0.865 (stated 0.866).
    found = [tests.equivalent[:, i, j].mean() for i, j in ((0, 1), (0, 2), (1, 2))]
    assert all(stated - 3 * error <= f <= stated + 3 * error for f in found), (stated, found)
    # Equivalence is mutual non-inferiority: where every pair is equivalent, every setting is best within D.
    upper = np.triu_indices(SETTINGS, 1)
    all_equivalent = tests.equivalent[:, upper[0], upper[1]].all(axis=-1)
    assert all_equivalent.any() and tests.best_within[all_equivalent].all()
