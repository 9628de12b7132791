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

A claim about the order of settings (the paper's "X best", "larger batch,
larger loss") is a set of ordered pairs, each claimed to go one way
(``order_test``). It agrees only when every pair is significantly in the
claimed order, each by a one-sided t at ``ALPHA``: an intersection-union test,
whose chance of agreeing when the claim is false is at most ``ALPHA`` with no
adjustment, since a false claim has some pair not in order and agreeing needs
that pair too. It disagrees when some pair is significantly the other way
round (one-sided, Holm over the pairs that would contradict it). Its power is
the chance that all of its tests reject at once, simulated from the pairs'
standard errors and the correlation of their differences (``joint_power``):
with successive steps of one axis those differences share a setting, so the
product of single powers is only an approximation.

The functions work on arrays ``(..., settings, seeds)`` with NaN for a
missing run, so the report's analysis of one sweep and a simulation of
thousands of sweeps are the same code.

Split replicates. A sweep can instead train every setting on J train/val
splits drawn from one pool of images, S seeds per split. Then the unit is the
split, not the seed: ``split_means`` averages each setting's statistic over
the seeds of each split, and the settings are compared on those
``(..., settings, splits)`` means, paired by split. Seeds of one split share
its images, so a seed-only test sees none of the split-to-split spread (on
one split's images one setting may just happen to do better) and calls
differences that another split would not repeat. Differences of different
splits are not independent either: their training sets overlap, so a
difference that comes from the pool rather than the setting recurs on every
split, and the plain paired t over splits understates the variance of their
mean. The ``ratio`` argument (r = n_val / n_train) applies the corrected
resampled t of Nadeau and Bengio (2003, "Inference for the generalization
error", Machine Learning 52: 239-281): with per-split differences d_j of
sample variance s^2, ``t = mean(d) / sqrt((1/J + r) s^2)`` with J - 1
degrees of freedom. It is exact when the differences of two splits correlate
by rho = r / (1 + r) (rho / (1 - rho) = r, their heuristic for overlapping
training sets). For repeated hold-out r = n_val / n_train; for K-fold the same
form with r = 1 / (K - 1) is Bouckaert and Frank's (2004) corrected k-fold t.
r = 0 is the ordinary paired t over independent units, the seed analysis above.

The correction is conservative when the splits are drawn from a pool larger
than n_train + n_val: two training sets then overlap less than r assumes, and
the seed noise (independent across splits) dilutes the correlation further,
so the true variance of mean(d) is below the corrected one. The level stays
under ``ALPHA`` and the power stated from the corrected standard error
(``detectable``) stays a lower bound. ``variance_components`` says how much of
one setting's spread comes from the splits and how much from the seeds.
"""

from __future__ import annotations

import functools
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


def paired_arrays(a: np.ndarray, b: np.ndarray, *, ratio: float = 0.0):
    """Per-unit differences ``b - a`` over the units (seeds, or splits) both
    have (NaN = missing): (mean, se, df, count); NaN where fewer than 2 units
    are shared. ``ratio`` = n_val / n_train inflates the variance of the mean
    from s^2 / n to s^2 (1/n + ratio) (Nadeau-Bengio; 0: independent units)."""
    d = b - a
    n = np.sum(~np.isnan(d), axis=-1)
    with quiet():
        mean = np.nanmean(d, axis=-1)
        se = np.nanstd(d, axis=-1, ddof=1) * np.sqrt(1 / n + ratio)
    usable = n >= 2
    return np.where(usable, mean, np.nan), np.where(usable, se, np.nan), np.where(usable, n - 1, np.nan), n


def welch_arrays(a: np.ndarray, b: np.ndarray, *, ratio: float = 0.0):
    """Welch's t on the means (``b - a``), each over its own runs: (mean, se, df);
    NaN where either has fewer than 2 runs. ``ratio`` inflates each variance of
    a mean to var (1/n + ratio), as in ``paired_arrays``."""
    na, nb = np.sum(~np.isnan(a), axis=-1), np.sum(~np.isnan(b), axis=-1)
    with quiet():
        # Satterthwaite's df stays as it is: each variance still rests on n - 1 df.
        va = np.nanvar(a, axis=-1, ddof=1) * (1 / na + ratio)
        vb = np.nanvar(b, axis=-1, ddof=1) * (1 / nb + ratio)
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


def corrected_method(ratio: float, n: int) -> str:
    """How a paired comparison over ``n`` units was made."""
    if ratio == 0:
        return f"paired t over {n} shared seeds"
    return f"corrected resampled t (Nadeau-Bengio, n_val/n_train = {ratio:.2g}) over {n} shared splits"


def corrected_t(differences: np.ndarray, ratio: float) -> Comparison | None:
    """The corrected resampled t of one pair from its per-split differences
    (NaN = missing): mean(d) / sqrt((1/J + ratio) s^2) on J - 1 df; with
    ``ratio`` 0 the paired t. None with fewer than 2 differences."""
    d = np.asarray(differences, float)
    n = int(np.sum(~np.isnan(d)))
    if n < 2:
        return None
    mean, se, df, _ = paired_arrays(np.zeros_like(d), d, ratio=ratio)
    return comparison(mean, se, df, corrected_method(ratio, n))


def paired(best: dict[int, float], other: dict[int, float], *, ratio: float = 0.0) -> Comparison | None:
    """Paired t over the seeds (or, with ``ratio`` > 0, the splits) both finished
    (per-unit differences other - best); None with fewer than 2 such units."""
    units = sorted(set(best) & set(other))
    return corrected_t(np.array([other[u] - best[u] for u in units], float), ratio)


def welch(best: list[float], other: list[float], *, ratio: float = 0.0) -> Comparison | None:
    """Welch's t on the means (other - best); None with fewer than 2 runs each."""
    if len(best) < 2 or len(other) < 2:
        return None
    mean, se, df = welch_arrays(np.array(best, float), np.array(other, float), ratio=ratio)
    method = "Welch t" if ratio == 0 else f"Welch t, corrected resampled (Nadeau-Bengio, n_val/n_train = {ratio:.2g})"
    return comparison(mean, se, df, method)


def compare(best: dict[int, float], other: dict[int, float], *, ratio: float = 0.0) -> Comparison | None:
    """Paired where the two share at least 2 finished units, Welch otherwise."""
    return paired(best, other, ratio=ratio) or welch(list(best.values()), list(other.values()), ratio=ratio)


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


def pairwise(values: np.ndarray, *, ratio: float = 0.0):
    """Every ordered pair (i, j) of ``values`` ``(..., settings, units)`` (NaN =
    missing run): the mean of j's statistic minus i's, its se, df and whether it
    was paired (paired t where the pair shares at least 2 units, Welch's t
    otherwise; ``ratio`` > 0: the corrected resampled t). Each ``(..., k, k)``."""
    values = np.asarray(values, float)
    a, b = values[..., :, None, :], values[..., None, :, :]
    mean, se, df, _ = paired_arrays(a, b, ratio=ratio)
    w_mean, w_se, w_df = welch_arrays(a, b, ratio=ratio)
    is_paired = ~np.isnan(mean)
    mean, se, df = (np.where(is_paired, x, y) for x, y in ((mean, w_mean), (se, w_se), (df, w_df)))
    return mean, se, df, is_paired


def family(values: np.ndarray, *, ratio: float = 0.0) -> Family:
    """All-pairs tests of ``values`` ``(..., settings, units)`` (NaN = missing run):
    paired t where a pair shares at least 2 units, Welch's t otherwise, Holm over
    every tested pair. Units are seeds, or with ``ratio`` = n_val / n_train > 0
    splits (``split_means``), tested by the corrected resampled t."""
    values = np.asarray(values, float)
    mean, se, df, is_paired = pairwise(values, ratio=ratio)
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


# --- a claim about the order of settings --------------------------------------

AGREE, CANNOT_TELL, DISAGREE = 1, 0, -1


def one_sided(difference: np.ndarray, se: np.ndarray, df: np.ndarray) -> np.ndarray:
    """p of the one-sided t test of "the true difference is at most 0" (a small p:
    it is positive); with no spread (se 0) 0 for a positive difference, else 1;
    NaN where there is no test."""
    difference, se = np.asarray(difference, float), np.asarray(se, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(se > 0, scipy_stats.t.sf(difference / se, df), np.where(difference > 0, 0.0, 1.0))
    return np.where(np.isnan(difference), np.nan, p)


@dataclass
class OrderTest:
    """A claim that in every pair (i, j) of ``pairs`` setting j's statistic is above
    (worse than) setting i's, tested on one sweep or on many (leading axes).

    ``difference``, ``se``, ``df`` are every ordered pair's (``pairwise``: j minus
    i); ``p_above[..., n]`` is the one-sided p that pair n's difference is
    positive; ``p_below_holm[..., m]`` the Holm-adjusted one-sided p that pair m of
    ``against`` is negative; ``verdict`` is AGREE, DISAGREE or CANNOT_TELL."""

    pairs: tuple[tuple[int, int], ...]
    against: tuple[tuple[int, int], ...]
    difference: np.ndarray
    se: np.ndarray
    df: np.ndarray
    p_above: np.ndarray
    p_below_holm: np.ndarray
    verdict: np.ndarray


def order_test(values: np.ndarray, pairs, against=None, *, ratio: float = 0.0,
               level: float = ALPHA) -> OrderTest:
    """Whether setting j is worse than setting i for every (i, j) of ``pairs``, on
    ``values`` ``(..., settings, units)`` (NaN = missing run; units are seeds, or
    with ``ratio`` > 0 splits, by the corrected resampled t).

    Agree: every pair's difference is significantly positive, each by a
    one-sided t at ``level``. This is an intersection-union test: agreeing needs
    every pair, so when any one of them is in truth not positive the chance of
    agreeing is at most that pair's one-sided ``level``, with no adjustment for
    the number of pairs. Disagree: some pair (i, j) of ``against`` (default
    ``pairs``) is significantly negative (j better than i), one-sided t's
    Holm-adjusted over ``against``, so when none is in truth negative the chance
    of disagreeing is at most ``level``. Cannot tell otherwise, and when both
    hold at once (possible only with missing runs, which break the additivity
    of the paired differences). A pair without a test (too few runs) never
    agrees and is left out of Holm's family."""
    pairs = tuple((int(i), int(j)) for i, j in pairs)
    against = pairs if against is None else tuple((int(i), int(j)) for i, j in against)
    difference, se, df, _ = pairwise(values, ratio=ratio)

    def take(array, chosen):
        rows, cols = zip(*chosen) if chosen else ((), ())
        return array[..., list(rows), list(cols)]

    p_above = one_sided(take(difference, pairs), take(se, pairs), take(df, pairs))
    p_below = one_sided(-take(difference, against), take(se, against), take(df, against))
    p_below_holm = holm_array(p_below)
    agree = np.all(p_above < level, axis=-1) if pairs else np.zeros(difference.shape[:-2], bool)
    disagree = np.any(p_below_holm < level, axis=-1)  # NaN compares False: no test, no verdict
    verdict = np.where(agree & ~disagree, AGREE, np.where(disagree & ~agree, DISAGREE, CANNOT_TELL))
    return OrderTest(pairs, against, difference, se, df, p_above, p_below_holm, verdict)


def best_pairs(claimed, settings: int) -> list[tuple[int, int]]:
    """"The ``claimed`` settings are best": every other setting above each claimed one."""
    return [(c, o) for c in claimed for o in range(settings) if o not in claimed]


def rise_pairs(settings: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """"The statistic rises along the settings' order": each setting above the one
    before it (the pairs to agree on), and every later setting below an earlier
    one (the pairs that disagree)."""
    return ([(i, i + 1) for i in range(settings - 1)],
            [(i, j) for i in range(settings) for j in range(i + 1, settings)])


def difference_correlation(values: np.ndarray, pairs) -> np.ndarray:
    """The correlation matrix of the per-unit differences (j minus i) of ``pairs``
    of one sweep's ``(settings, units)`` over the units all their settings have;
    0 off the diagonal where it cannot be estimated (fewer than 3 such units, or
    a pair whose differences have no spread)."""
    values = np.asarray(values, float)
    k = len(pairs)
    differences = np.array([values[j] - values[i] for i, j in pairs]).reshape(k, -1)
    complete = differences[:, ~np.isnan(differences).any(axis=0)]
    if k < 2 or complete.shape[1] < 3:
        return np.eye(k)
    with quiet():
        corr = np.corrcoef(complete)
    return np.where(np.isfinite(corr), corr, np.eye(k))


# --- a trend along an axis ----------------------------------------------------

def trend(values: np.ndarray, x: np.ndarray, *, ratio: float = 0.0) -> Comparison | None:
    """Whether the statistic grows with ``x`` on average: the least-squares
    slope of each seed's statistics on ``x``, over the seeds every setting has,
    tested against 0 by a one-sample t over the seeds (paired by seed, as the
    settings share seeds). None with fewer than 2 such seeds or 2 values of x.
    With ``ratio`` > 0 the units are splits (``split_means``) and the slopes'
    se is the corrected one, sd sqrt(1/n + ratio). A slope is no test of "each
    larger x, a larger statistic": with three equally spaced x it is (y3 - y1)
    / (x3 - x1) and gives the middle setting no weight (``rise_pairs`` and
    ``order_test`` test every step)."""
    values, x = np.asarray(values, float), np.asarray(x, float)
    complete = ~np.isnan(values).any(axis=0)
    if complete.sum() < 2 or len(x) < 2:
        return None
    y = values[:, complete]
    centred = x - x.mean()
    slopes = centred @ (y - y.mean(axis=0)) / (centred @ centred)
    n = len(slopes)
    method = (f"one-sample t on the per-seed slopes over {n} seeds" if ratio == 0 else
              f"corrected resampled t (Nadeau-Bengio, n_val/n_train = {ratio:.2g}) on the per-split slopes "
              f"over {n} splits")
    return comparison(slopes.mean(), slopes.std(ddof=1) * math.sqrt(1 / n + ratio), n - 1, method)


# --- split replicates ---------------------------------------------------------

def split_means(values: np.ndarray) -> np.ndarray:
    """``(..., settings, splits, seeds)`` -> ``(..., settings, splits)``: each
    split's mean over its finished seeds, NaN where a split has no run."""
    with quiet():
        return np.nanmean(np.asarray(values, float), axis=-1)


def variance_components(values: np.ndarray) -> tuple[float, float]:
    """The variance of the split effect and of the seed noise of one setting's
    ``(splits, seeds)`` statistics (NaN = missing run), by the one-way
    random-effects ANOVA's method of moments: seed = the within-split mean
    square, split = (between - within mean square) / n0, truncated at 0, with
    n0 = (N - sum n_i^2 / N) / (a - 1) for a splits of n_i runs (N in all; n0 is
    the seeds per split when balanced). The seed part is NaN with no split of 2
    runs, the split part also with fewer than 2 splits with a run. Works on
    leading axes too (``(..., splits, seeds)``)."""
    values = np.asarray(values, float)
    counts = np.sum(~np.isnan(values), axis=-1)
    splits = np.sum(counts > 0, axis=-1)
    total = np.sum(counts, axis=-1)
    with quiet():
        means = np.nanmean(values, axis=-1)
        grand = np.nansum(values, axis=(-2, -1)) / total
        within = np.nansum((values - means[..., None]) ** 2, axis=(-2, -1)) / (total - splits)
        between = np.nansum(counts * (means - grand[..., None]) ** 2, axis=-1) / (splits - 1)
        n0 = (total - np.sum(counts ** 2, axis=-1) / total) / (splits - 1)
        seed = np.where(total - splits >= 1, within, np.nan)
        split = np.where((splits >= 2) & (total - splits >= 1), np.maximum(0.0, (between - within) / n0), np.nan)
    return split[()], seed[()]


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


def detectable_in_sds(seeds: int, pairs: int, *, ratio: float = 0.0) -> float:
    """The smallest difference a paired comparison over ``seeds`` seeds (or,
    with ``ratio`` > 0, splits, by the corrected t) finds with ``POWER`` in a
    family of ``pairs`` pairs, in SDs of the per-unit differences."""
    return detectable(math.sqrt(1 / seeds + ratio), seeds - 1, ALPHA / max(pairs, 1))


def repeats_needed(difference: float, sd: float, pairs: int, most: int = 1000, *,
                   ratio: float = 0.0) -> int | None:
    """The fewest seeds (or, with ``ratio`` > 0, splits) per setting with which a
    paired comparison finds ``difference`` (per-unit differences of SD ``sd``)
    with ``POWER`` in a family of ``pairs`` pairs; None beyond ``most`` (with
    ``ratio`` > 0 the se never falls below sd sqrt(ratio), so some differences
    are out of reach of any number of splits)."""
    if sd == 0:
        return 2
    level = ALPHA / max(pairs, 1)
    return next((n for n in range(2, most + 1)
                 if power(abs(difference) / (sd * math.sqrt(1 / n + ratio)), n - 1, level) >= POWER), None)


# --- the joint power of an intersection-union test ------------------------------

# Draws behind a joint power: its Monte Carlo SE is at most 0.4 % of power.
DRAWS = 10_000


@functools.lru_cache(maxsize=8)
def standard_draws(units: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``DRAWS`` samples of ``units`` standard normal k-vectors, the same on every
    call (a stated joint power then depends on the data only, not on a
    simulation's seed), kept as what a t needs of them: sqrt(units) times their
    mean ``(DRAWS, k)`` and their sample covariance ``(DRAWS, k, k)``."""
    draws = np.random.default_rng(0).standard_normal((DRAWS, units, k))
    mean = draws.mean(axis=1)
    centred = draws - mean[:, None, :]
    covariance = np.einsum("dui,duj->dij", centred, centred) / (units - 1)
    mean *= math.sqrt(units)
    mean.flags.writeable = covariance.flags.writeable = False
    return mean, covariance


def joint_thresholds(se, df: float, corr, level: float = ALPHA) -> np.ndarray:
    """Per simulated replicate of a design, the smallest true difference, common to
    k pairs, at which all k one-sided t tests at ``level`` reject.

    Each pair's estimate has the true standard error ``se[n]`` (the observed one
    taken as true, as ``detectable`` does) and the per-unit differences of the
    pairs correlate by ``corr``; each t has ``df`` degrees of freedom (the fewest
    of the pairs', rounded down; the corrected resampled t has the same form: its
    mean is independent of its spread). With units u of the correlated standard
    normals, t_n = (delta / se_n + z_n) / s_n, z_n = sqrt(units) mean(u_n), s_n =
    sd(u_n); all reject exactly when delta > max_n se_n (c s_n - z_n), c the
    one-sided critical t, so one set of draws gives the power at every delta."""
    se = np.asarray(se, float)
    units = max(int(math.floor(df)), 1) + 1
    values, vectors = np.linalg.eigh(np.asarray(corr, float))
    root = vectors * np.sqrt(np.clip(values, 0.0, None))  # corr = root root^T, also when singular
    mean, covariance = standard_draws(units, len(se))
    # einsum, not matmul: these thin products are slower through a threaded BLAS on a busy machine.
    z = np.einsum("di,ki->dk", mean, root)
    weights = (root[:, :, None] * root[:, None, :]).reshape(len(se), -1)
    s = np.sqrt(np.clip(np.einsum("dm,km->dk", covariance.reshape(len(covariance), -1), weights), 0.0, None))
    critical = scipy_stats.t.ppf(1 - level, units - 1)
    return np.max(se * (critical * s - z), axis=-1)


def joint_detectable(se, df: float, corr, level: float = ALPHA, target: float = POWER) -> float:
    """The smallest difference, common to every pair, that an intersection-union
    test (each pair one-sided at ``level``) finds with probability ``target``."""
    return max(0.0, float(np.quantile(joint_thresholds(se, df, corr, level), target)))


def joint_power(difference: float, se, df: float, corr, level: float = ALPHA) -> float:
    """The chance that every pair's one-sided t at ``level`` rejects when each true
    difference is ``difference`` (``joint_thresholds``)."""
    return float(np.mean(joint_thresholds(se, df, corr, level) < difference))
