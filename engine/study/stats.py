"""The statistics a sweep is ranked and compared with.

Each run is summarised by one number, the ranking statistic: the mean
validation loss of its last ``TAIL`` epochs (of all epochs when it has
fewer), so that one spiky final epoch does not decide a ranking. Two settings
are compared by the difference of their statistics: paired by seed where
they share at least 2 seeds (the sweep gives every setting the same seeds,
hence the same data order and augmentations: a paired t test over the seeds
finished in both), by Welch's t otherwise.

A family of settings (a sweep, or one axis of it) is compared all pairs
against all pairs, with Holm-adjusted p-values, so the chance of calling any
setting "worse" when all are equal stays at most ``ALPHA`` (a data-chosen
best tested against the rest does not keep it). The settings that no other
setting beats form the set of best settings. Power is computed for the
Bonferroni level ``ALPHA / pairs``, the level Holm's first step uses, so the
stated power is a lower bound on the power of the Holm test actually run.

The functions work on arrays ``(..., settings, seeds)`` with NaN for a
missing run, so the report's analysis of one sweep and a simulation of
thousands of sweeps are the same code.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

TAIL = 3
ALPHA = 0.05
POWER = 0.8


def tail_mean(values: list[float | None], k: int = TAIL) -> float | None:
    """Mean of the last ``k`` values (all when fewer); None if any of them is not finite."""
    tail = values[-k:]
    if not tail or any(v is None or not math.isfinite(v) for v in tail):
        return None
    return float(np.mean(tail))


# --- two settings -------------------------------------------------------------

@contextmanager
def quiet():
    """A missing pair or setting is NaN by design: no warning for the empty slices."""
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def t_test(difference: np.ndarray, se: np.ndarray, df: np.ndarray, level: float = ALPHA):
    """Two-sided p and the half width of the (1 - level) interval of a t statistic
    ``difference / se``; with no spread (se 0) p is 1 for a zero difference, else 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(difference) / se
        p = np.where(se > 0, 2 * scipy_stats.t.sf(t, df), np.where(difference == 0, 1.0, 0.0))
        half = np.where(se > 0, scipy_stats.t.ppf(1 - level / 2, df) * se, 0.0)
    return p, half


def paired_arrays(a: np.ndarray, b: np.ndarray):
    """Per-seed differences ``b - a`` over the seeds both have (NaN = missing):
    (mean, se, df, count); NaN where fewer than 2 seeds are shared."""
    d = b - a
    n = np.sum(~np.isnan(d), axis=-1)
    with quiet():
        mean = np.nanmean(d, axis=-1)
        se = np.nanstd(d, axis=-1, ddof=1) / np.sqrt(n)
    usable = n >= 2
    return np.where(usable, mean, np.nan), np.where(usable, se, np.nan), np.where(usable, n - 1, np.nan), n


def welch_arrays(a: np.ndarray, b: np.ndarray):
    """Welch's t on the means (``b - a``), each over its own runs: (mean, se, df);
    NaN where either has fewer than 2 runs."""
    na, nb = np.sum(~np.isnan(a), axis=-1), np.sum(~np.isnan(b), axis=-1)
    with quiet():
        va, vb = np.nanvar(a, axis=-1, ddof=1) / na, np.nanvar(b, axis=-1, ddof=1) / nb
        mean = np.nanmean(b, axis=-1) - np.nanmean(a, axis=-1)
        df = np.where(va + vb > 0, (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)), 1.0)
    usable = (na >= 2) & (nb >= 2)
    return (np.where(usable, mean, np.nan), np.where(usable, np.sqrt(va + vb), np.nan),
            np.where(usable, df, np.nan))


@dataclass(frozen=True)
class Comparison:
    """``difference`` = other - best, its 95 % interval (unadjusted), two-sided p,
    and the standard error and degrees of freedom it rests on."""

    difference: float
    low: float
    high: float
    p: float
    method: str
    se: float = 0.0
    df: float = 1.0


def comparison(mean, se, df, method: str) -> Comparison:
    p, half = t_test(np.asarray(mean), np.asarray(se), np.asarray(df))
    return Comparison(float(mean), float(mean - half), float(mean + half), float(p), method, float(se), float(df))


def paired(best: dict[int, float], other: dict[int, float]) -> Comparison | None:
    """Paired t over the seeds both finished (per-seed differences other - best);
    None with fewer than 2 such seeds."""
    seeds = sorted(set(best) & set(other))
    if len(seeds) < 2:
        return None
    mean, se, df, _ = paired_arrays(np.array([best[s] for s in seeds]), np.array([other[s] for s in seeds]))
    return comparison(mean, se, df, f"paired t over {len(seeds)} shared seeds")


def welch(best: list[float], other: list[float]) -> Comparison | None:
    """Welch's t on the means (other - best); None with fewer than 2 runs each."""
    if len(best) < 2 or len(other) < 2:
        return None
    mean, se, df = welch_arrays(np.array(best, float), np.array(other, float))
    return comparison(mean, se, df, "Welch t")


def compare(best: dict[int, float], other: dict[int, float]) -> Comparison | None:
    """Paired where the two share at least 2 finished seeds, Welch otherwise."""
    return paired(best, other) or welch(list(best.values()), list(other.values()))


def holm_array(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment over the last axis; NaN (no test) stays NaN
    and is not counted in the family."""
    m = np.sum(~np.isnan(p), axis=-1, keepdims=True)
    order = np.argsort(p, axis=-1)  # NaN sorts last
    ranked = np.minimum(1.0, (m - np.arange(p.shape[-1])) * np.take_along_axis(p, order, -1))
    ranked = np.fmax.accumulate(ranked, axis=-1)  # fmax skips the trailing NaN
    out = np.empty_like(ranked)
    np.put_along_axis(out, order, ranked, -1)
    return np.where(np.isnan(p), np.nan, out)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values, in their order."""
    return holm_array(np.array(pvalues, float)).tolist() if pvalues else []


# --- a family of settings -----------------------------------------------------

@dataclass
class Family:
    """Every pair (i, j) of a family of settings: ``difference[i, j]`` is the
    mean of j's statistic minus i's (positive: j is worse), with its 95 %
    interval half width, p, Holm-adjusted p over the family's tested pairs,
    standard error, degrees of freedom and whether it was paired."""

    difference: np.ndarray
    half: np.ndarray
    p: np.ndarray
    p_holm: np.ndarray
    se: np.ndarray
    df: np.ndarray
    paired: np.ndarray
    tested_pairs: np.ndarray

    @property
    def beats(self) -> np.ndarray:
        """``beats[i, j]``: i significantly better (lower) than j at the family-wise level."""
        return (self.p_holm < ALPHA) & (self.difference > 0)

    @property
    def worse(self) -> np.ndarray:
        """Per setting: some other setting is significantly better than it."""
        return self.beats.any(axis=-2)

    @property
    def best_set(self) -> np.ndarray:
        """The settings no other setting beats: the set of best settings."""
        return ~self.worse


def family(values: np.ndarray) -> Family:
    """All-pairs tests of ``values`` ``(..., settings, seeds)`` (NaN = missing run):
    paired t where a pair shares at least 2 seeds, Welch's t otherwise, Holm over
    every tested pair."""
    values = np.asarray(values, float)
    a, b = values[..., :, None, :], values[..., None, :, :]
    mean, se, df, _ = paired_arrays(a, b)
    w_mean, w_se, w_df = welch_arrays(a, b)
    is_paired = ~np.isnan(mean)
    mean, se, df = (np.where(is_paired, x, y) for x, y in ((mean, w_mean), (se, w_se), (df, w_df)))
    p, half = t_test(mean, se, df)
    p = np.where(np.isnan(mean), np.nan, p)
    k = values.shape[-2]
    upper = np.triu_indices(k, 1)
    adjusted = holm_array(p[..., upper[0], upper[1]])
    p_holm = np.full(p.shape, np.nan)
    p_holm[..., upper[0], upper[1]] = adjusted
    p_holm[..., upper[1], upper[0]] = adjusted
    tested = np.sum(~np.isnan(adjusted), axis=-1)
    return Family(mean, half, p, p_holm, se, df, is_paired, tested)


# --- a trend along an axis ----------------------------------------------------

def trend(values: np.ndarray, x: np.ndarray) -> Comparison | None:
    """Whether the statistic grows with ``x`` (e.g. the batch size): the least-squares
    slope of each seed's statistics on ``x``, over the seeds every setting has,
    tested against 0 by a one-sample t over the seeds (paired by seed, as the
    settings share seeds). None with fewer than 2 such seeds or 2 values of x."""
    values, x = np.asarray(values, float), np.asarray(x, float)
    complete = ~np.isnan(values).any(axis=0)
    if complete.sum() < 2 or len(x) < 2:
        return None
    y = values[:, complete]
    centred = x - x.mean()
    slopes = centred @ (y - y.mean(axis=0)) / (centred @ centred)
    n = len(slopes)
    return comparison(slopes.mean(), slopes.std(ddof=1) / math.sqrt(n), n - 1,
                      f"one-sample t on the per-seed slopes over {n} seeds")


# --- power --------------------------------------------------------------------

def power(noncentrality: float, df: float, level: float) -> float:
    """The chance a two-sided t test at ``level`` rejects when the true
    difference is ``noncentrality`` standard errors."""
    critical = scipy_stats.t.ppf(1 - level / 2, df)
    # The lower tail as the upper tail of the mirrored distribution: scipy's
    # nct.cdf is NaN far in the tail.
    return float(np.nan_to_num(scipy_stats.nct.sf(critical, df, noncentrality))
                 + np.nan_to_num(scipy_stats.nct.sf(critical, df, -noncentrality)))


def detectable(se: float, df: float, level: float, target: float = POWER) -> float:
    """The smallest true difference a two-sided t test at ``level`` finds with
    probability ``target``, for this standard error and degrees of freedom."""
    high = 1.0
    while power(high, df, level) < target:
        high *= 2
    return float(optimize.brentq(lambda nc: power(nc, df, level) - target, 0.0, high)) * se


def detectable_in_sds(seeds: int, pairs: int) -> float:
    """The smallest difference a paired comparison over ``seeds`` seeds finds
    with ``POWER`` in a family of ``pairs`` pairs, in SDs of the per-seed differences."""
    return detectable(1 / math.sqrt(seeds), seeds - 1, ALPHA / max(pairs, 1))


def repeats_needed(difference: float, sd: float, pairs: int, most: int = 1000) -> int | None:
    """The fewest seeds per setting with which a paired comparison finds
    ``difference`` (per-seed differences of SD ``sd``) with ``POWER`` in a
    family of ``pairs`` pairs; None beyond ``most``."""
    if sd == 0:
        return 2
    level = ALPHA / max(pairs, 1)
    return next((n for n in range(2, most + 1)
                 if power(abs(difference) * math.sqrt(n) / sd, n - 1, level) >= POWER), None)
