"""Equivalence and non-inferiority of settings within a margin stated before training.

The all-pairs tests of ``engine.study.stats`` can show that a setting is
worse than another, never that two settings do not differ: a difference that
is not significant is only a difference the sweep could not resolve. A margin
D (``--margin``: a difference in the ranking statistic that does not matter,
written to sweep.json before any trial trains) turns that into questions the
sweep can answer:

* **A and B equivalent within D**: the 90 % interval of stat(B) - stat(A)
  lies inside (-D, +D). These are the two one-sided tests (TOST, Schuirmann
  1987) of H0 stat(B) - stat(A) <= -D and of H0 stat(B) - stat(A) >= +D,
  each at ``ALPHA`` = 5 %; the pair's p is the larger of the two.
* **X best within D**: for every other setting Z, the one-sided test at 5 %
  of H0 stat(X) - stat(Z) >= D against H1 stat(X) - stat(Z) < D (X is worse
  than Z by less than D, or better). The claim needs every one of them to
  reject; its p is the largest.

Both are intersection-union tests (Berger and Hsu 1996, Statistical Science
11: 283-319): a claim that needs every test in a set to reject is wrong only
when one of its null hypotheses is true, and that one test alone rejects with
chance at most 5 %, so each claim keeps the 5 % level with no adjustment.
Each pair's equivalence and each setting's "best within D" is such a claim
on its own; claims about several pairs or settings are not adjusted for one
another. Equivalence is mutual non-inferiority: A and B are equivalent within
D exactly when each is worse than the other by less than D. A pair whose 90 %
interval lies wholly beyond +D (or -D) is reported as differing by more than
D: the one-sided 5 % test on that side rejects H0 |difference| <= D.

The margin has to be fixed before the results are seen: chosen afterwards it
can be set just wide enough to cover whatever difference turned up, and then
every claim holds. The tests do not choose it either; without one (the
default) they are not run.

The differences, standard errors and degrees of freedom are those of
``stats.family``: a paired t over the units (seeds on one split, or split
replicates) where a pair shares at least 2 units, Welch's t otherwise, and
with ``ratio`` = n_val / n_train > 0 the corrected resampled t of Nadeau and
Bengio, whose variance of the mean is s^2 (1/n + ratio) rather than s^2 / n.
A pair with too few runs for either test has NaN p-values and supports no
claim: the report says it cannot tell.

``tost_power`` states the chance that TOST shows two settings equivalent: for
a paired t over n units, both one-sided tests reject exactly when the
estimate lies within D - t s_e of both margins, where s_e is the estimated
standard error; averaging that normal probability over the chi distribution
of the sample SD gives the power exactly for normal differences.

Like ``stats``, the functions work on arrays ``(..., settings, units)`` with
NaN for a missing run, so the report's sentences on one sweep and a
simulation of thousands of sweeps are the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import integrate
from scipy import stats as scipy_stats

from engine.study import stats
from engine.study.stats import ALPHA

# TOST at ALPHA on each side reads the (1 - 2 ALPHA) interval: 90 %.
COVERAGE = 1 - 2 * ALPHA


def check_margin(margin: float) -> float:
    """``margin`` as a float; a ValueError unless it is finite and positive
    (with D <= 0 no pair could ever be shown equivalent)."""
    margin = float(margin)
    if not math.isfinite(margin) or margin <= 0:
        raise ValueError(f"the margin must be a positive number, not {margin:g}")
    return margin


def below(estimate: np.ndarray, se: np.ndarray, df: np.ndarray) -> np.ndarray:
    """One-sided p of H0 true value >= 0 against H1 true value < 0 from a t
    statistic ``estimate / se``: P(T <= estimate / se). With no spread (se 0)
    p is 0 for a negative estimate, else 1; NaN where there is no test."""
    with stats.quiet():
        p = np.where(se > 0, scipy_stats.t.cdf(estimate / se, df), np.where(estimate < 0, 0.0, 1.0))
    return np.where(np.isnan(estimate) | np.isnan(se), np.nan, p)


@dataclass(frozen=True)
class MarginFamily:
    """Every pair (i, j) of a family of settings against the margin.

    ``difference[..., i, j]`` is stat(j) - stat(i) (positive: j is worse), as
    in ``stats.Family``, with the half width of its 90 % interval, standard
    error, degrees of freedom and whether it was paired. ``p_within[..., i, j]``
    is the one-sided p of H0 stat(i) - stat(j) >= margin (i is worse than j by
    the margin or more); NaN on the diagonal and where a pair has too few runs.
    """

    margin: float
    difference: np.ndarray
    half: np.ndarray
    p_within: np.ndarray
    se: np.ndarray
    df: np.ndarray
    paired: np.ndarray

    @property
    def low(self) -> np.ndarray:
        return self.difference - self.half

    @property
    def high(self) -> np.ndarray:
        return self.difference + self.half

    @property
    def tost_p(self) -> np.ndarray:
        """The TOST p of each pair: the larger of its two one-sided p-values
        (``p_within[i, j]`` tests H0 d <= -D, ``p_within[j, i]`` H0 d >= +D)."""
        return np.maximum(self.p_within, np.swapaxes(self.p_within, -1, -2))  # NaN stays NaN

    @property
    def equivalent(self) -> np.ndarray:
        """``equivalent[..., i, j]``: the 90 % interval of the pair's difference
        lies inside (-margin, +margin); False on the diagonal and untested pairs."""
        return self.tost_p < ALPHA

    @property
    def worst_p(self) -> np.ndarray:
        """Per setting, the largest of its one-sided p-values against the
        others (NaN when one pair is untested): the p of "best within D"."""
        k = self.p_within.shape[-1]
        if k < 2:
            return np.full(self.p_within.shape[:-1], np.nan)
        off = ~np.eye(k, dtype=bool)
        return np.max(self.p_within[..., off].reshape(*self.p_within.shape[:-1], k - 1), axis=-1)

    @property
    def best_within(self) -> np.ndarray:
        """Per setting: worse than every other setting by less than the margin
        (all its one-sided tests reject); never with fewer than 2 settings."""
        if self.p_within.shape[-1] < 2:
            return np.zeros(self.p_within.shape[:-1], bool)
        return self.worst_p < ALPHA


def family(values: np.ndarray, margin: float, *, ratio: float = 0.0) -> MarginFamily:
    """Every pair's equivalence and non-inferiority tests against ``margin``.

    Args:
        values: The ranking statistic ``(..., settings, units)``, NaN for a
            missing run; units are seeds, or splits with ``ratio`` > 0.
        margin: D, the difference in the ranking statistic that does not matter.
        ratio: n_val / n_train of split replicates (the corrected resampled t),
            0 for seeds.

    Returns:
        A ``MarginFamily``; its ``equivalent`` ``(..., settings, settings)``
        lists the equivalent pairs and ``best_within`` ``(..., settings)`` the
        settings best within D.
    """
    margin = check_margin(margin)
    values = np.asarray(values, float)
    # The same pairs, in the same direction, as stats.family: paired where a
    # pair shares 2 units, Welch otherwise, so both analyses rest on one estimate.
    a, b = values[..., :, None, :], values[..., None, :, :]
    mean, se, df, _ = stats.paired_arrays(a, b, ratio=ratio)
    w_mean, w_se, w_df = stats.welch_arrays(a, b, ratio=ratio)
    is_paired = ~np.isnan(mean)
    mean, se, df = (np.where(is_paired, x, y) for x, y in ((mean, w_mean), (se, w_se), (df, w_df)))
    k = values.shape[-2]
    diagonal = np.eye(k, dtype=bool)
    mean = np.where(diagonal, np.nan, mean)  # a setting is not tested against itself
    with stats.quiet():
        # The COVERAGE interval's ends are the 1 - ALPHA quantiles: each is one of the one-sided tests.
        half = np.where(se > 0, scipy_stats.t.ppf(1 - ALPHA, df) * se, 0.0)
    half = np.where(np.isnan(se), np.nan, half)
    # stat(i) - stat(j) = -mean; H0 it is >= D, i.e. -mean - D >= 0.
    p_within = below(-mean - margin, se, df)
    return MarginFamily(margin, mean, half, p_within, se, df, is_paired & ~diagonal)


def non_inferior(values: np.ndarray, best: int, margin: float, *, ratio: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Whether setting ``best`` is best within ``margin``: worse than every
    other setting Z by less than D, each by a one-sided test at 5 % of H0
    stat(best) - stat(Z) >= D; the claim needs all of them (intersection-union).

    Args:
        values: The ranking statistic ``(..., settings, units)``, NaN = missing run.
        best: The index of the setting X claimed best within D.
        margin: D.
        ratio: n_val / n_train of split replicates, 0 for seeds.

    Returns:
        ``(p, holds)``: ``p`` ``(..., settings)``, the one-sided p against each
        other setting (NaN at ``best`` itself and where a pair has too few runs);
        ``holds`` ``(...)``, True where every one of them is below ``ALPHA``
        (False with an untested pair or no other setting).
    """
    tests = family(values, margin, ratio=ratio)
    return tests.p_within[..., best, :][()], tests.best_within[..., best][()]


@dataclass(frozen=True)
class Equivalence:
    """TOST of one pair: ``difference`` = stat(b) - stat(a) with its 90 %
    interval (``low``, ``high``); ``p_lower`` tests H0 difference <= -D,
    ``p_upper`` H0 difference >= +D; ``equivalent`` when both are below
    ``ALPHA``, i.e. the interval lies inside (-D, +D). NaN p-values and not
    equivalent where the pair has too few runs."""

    difference: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p_lower: np.ndarray
    p_upper: np.ndarray
    equivalent: np.ndarray

    @property
    def p(self) -> np.ndarray:
        """The TOST p: the larger of the two one-sided p-values."""
        return np.maximum(self.p_lower, self.p_upper)


def equivalent(values: np.ndarray, a: int, b: int, margin: float, *, ratio: float = 0.0) -> Equivalence:
    """Whether settings ``a`` and ``b`` are equivalent within ``margin`` by TOST.

    Args:
        values: The ranking statistic ``(..., settings, units)``, NaN = missing run.
        a: The index of one setting.
        b: The index of the other (the difference is stat(b) - stat(a)).
        margin: D.
        ratio: n_val / n_train of split replicates, 0 for seeds.

    Returns:
        An ``Equivalence`` of arrays over the leading axes (numpy scalars for
        one sweep).
    """
    if a == b:
        raise ValueError("a setting is not compared with itself")
    tests = family(values, margin, ratio=ratio)
    pick = (..., a, b)
    return Equivalence(tests.difference[pick][()], tests.low[pick][()], tests.high[pick][()],
                       tests.p_within[pick][()], tests.p_within[..., b, a][()], tests.equivalent[pick][()])


def tost_power(margin: float, sd: float, n: int, ratio: float = 0.0, *, difference: float = 0.0,
               level: float = ALPHA) -> float:
    """The chance that TOST at ``level`` shows two settings equivalent within
    ``margin`` when their true difference is ``difference``: a paired t over
    ``n`` units whose differences have SD ``sd`` about their mean (what their
    sample SD estimates), standard error sd sqrt(1/n + ratio), n - 1 df.

    Given the sample SD s, the estimate d ~ N(difference, se^2) is independent
    of it, and both tests reject exactly when -D + c se s/sd < d < D - c se s/sd
    (c the one-sided critical t); the power is that normal probability averaged
    over s, with sqrt(n - 1) s / sd ~ chi(n - 1). Exact for normal per-unit
    differences, and under the correlation r / (1 + r) between splits that the
    corrected resampled t assumes.
    """
    margin = check_margin(margin)
    if n < 2:
        return 0.0  # no spread to test with
    if sd == 0:
        return float(abs(difference) < margin)
    df = n - 1
    se = sd * math.sqrt(1 / n + ratio)
    critical = scipy_stats.t.ppf(1 - level, df)
    upper, lower = (margin - difference) / se, (-margin - difference) / se  # the margins in se from the truth

    def given(v: float) -> float:
        shrink = critical * v / math.sqrt(df)  # c s_e / se at chi value v
        return scipy_stats.chi.pdf(v, df) * max(0.0, scipy_stats.norm.cdf(upper - shrink)
                                                - scipy_stats.norm.cdf(lower + shrink))

    # Past v = sqrt(df) D / (c se) the interval is wider than the margins allow: nothing to add.
    top = math.sqrt(df) * margin / (critical * se)
    return float(integrate.quad(given, 0.0, top, epsabs=1e-12, epsrel=1e-10, limit=200)[0])


# --- the report's sentences ---------------------------------------------------

def places(half: float) -> int:
    """Decimal places that show ``half`` (an interval's half width) to 2
    significant digits: the interval's ends are not written finer than it."""
    if not math.isfinite(half) or half <= 0:
        return 4
    return max(0, 1 - math.floor(math.log10(half)))


def p_text(p: float) -> str:
    """A p-value to 2 significant digits, written out; below 0.001 as "< 0.001"."""
    # The "g" format keeps 2 significant digits and, above 0.001, never an exponent.
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def lines(settings: list[str], values: np.ndarray, margin: float | None, ratio: float = 0.0) -> list[str]:
    """The report's sentences on the margin: the settings best within it (or
    "cannot tell" for the setting of lowest statistic), then every pair,
    equivalent, differing by more than the margin, or "cannot tell", with its
    90 % interval and TOST p. Interval ends carry the decimals of 2
    significant digits of the interval's half width; the margin is written as
    given.

    Args:
        settings: The settings' names, in the order of ``values``.
        values: One sweep's ranking statistic ``(settings, units)``, NaN = missing run.
        margin: D as the sweep stated it; None (no margin) gives no sentences.
        ratio: n_val / n_train of split replicates, 0 for seeds.

    Returns:
        One sentence per line, without list markers; empty without a margin or
        with fewer than 2 settings.
    """
    values = np.asarray(values, float)
    if values.shape[0] != len(settings):
        raise ValueError(f"{len(settings)} settings named, {values.shape[0]} in the values")
    if margin is None or len(settings) < 2:
        return []
    tests = family(values, margin, ratio=ratio)
    d = f"{tests.margin:g}"
    unit = "split" if ratio > 0 else "seed"
    too_few = f"too few runs: each needs at least 2 finished {unit}s"
    out = [f"{settings[i]}: best within {d} (non-inferior to every other setting, largest one-sided p = "
           f"{p_text(float(tests.worst_p[i]))})" for i in range(len(settings)) if tests.best_within[i]]
    if not out:
        out.append(not_best_within(settings, values, tests, too_few))
    for i in range(len(settings)):
        for j in range(i + 1, len(settings)):
            pair = f"{settings[i]} and {settings[j]}"
            if np.isnan(tests.p_within[i, j]):
                out.append(f"{pair}: cannot tell whether equivalent within {d} ({too_few})")
                continue
            n = places(float(tests.half[i, j]))
            numbers = (f"{settings[j]} minus {settings[i]}: {COVERAGE * 100:g} % interval {tests.low[i, j]:+.{n}f} to "
                       f"{tests.high[i, j]:+.{n}f}; TOST p = {p_text(float(tests.tost_p[i, j]))}")
            if tests.equivalent[i, j]:
                verdict = "equivalent within"
            elif tests.low[i, j] > tests.margin or tests.high[i, j] < -tests.margin:
                verdict = "differ by more than"  # the one-sided 5 % test of H0 |difference| <= D on that side
            else:
                verdict = "cannot tell whether equivalent within"
            out.append(f"{pair}: {verdict} {d} ({numbers})")
    return out


def not_best_within(settings: list[str], values: np.ndarray, tests: MarginFamily, too_few: str) -> str:
    """"cannot tell" for the setting of lowest mean statistic, with the pair
    that stops it from being best within the margin."""
    with stats.quiet():
        means = np.nanmean(values, axis=-1)
    d = f"{tests.margin:g}"
    if np.isnan(means).all():
        return f"Best within {d}: cannot tell ({too_few})"
    x = int(np.nanargmin(means))
    # The pair that blocks the claim: an untested one first, else the largest p.
    p = np.where(np.isnan(tests.p_within[x]), np.inf, tests.p_within[x])
    p[x] = -np.inf
    z = int(np.argmax(p))
    if np.isnan(tests.p_within[x, z]):
        return (f"{settings[x]} (lowest statistic): cannot tell whether best within {d} (against {settings[z]}: "
                f"{too_few})")
    n = places(float(tests.half[x, z]))
    # The one-sided test reads the upper end of the 90 % interval of stat(x) - stat(z).
    bound = -float(tests.low[x, z])
    return (f"{settings[x]} (lowest statistic): cannot tell whether best within {d} (against {settings[z]}: "
            f"{settings[x]} minus {settings[z]} at most {bound:+.{n}f} by the one-sided {(1 - ALPHA) * 100:g} % "
            f"bound; one-sided p = {p_text(float(tests.p_within[x, z]))})")
