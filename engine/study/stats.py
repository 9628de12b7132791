"""The statistics a sweep is ranked and compared with.

Each run is summarised by one number, the ranking statistic: the mean
validation loss of its last ``TAIL`` epochs (of all epochs when it has
fewer), so that one spiky final epoch does not decide a ranking. Two settings
are compared by the difference of their statistics: paired by seed where
they share seeds (the sweep gives every setting the same seeds, hence the
same data order and augmentations: a paired t interval over the seeds
finished in both), by Welch's t otherwise. The best setting's comparisons
with the others get Holm-adjusted p-values for their verdicts; the 95 %
intervals stay unadjusted.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats as scipy_stats

TAIL = 3
ALPHA = 0.05


def tail_mean(values: list[float | None], k: int = TAIL) -> float | None:
    """Mean of the last ``k`` values (all when fewer); None if any of them is not finite."""
    tail = values[-k:]
    if not tail or any(v is None or not math.isfinite(v) for v in tail):
        return None
    return statistics.fmean(tail)


@dataclass(frozen=True)
class Comparison:
    """``difference`` = other - best, its 95 % interval (unadjusted), two-sided p."""

    difference: float
    low: float
    high: float
    p: float
    method: str


def t_interval(mean: float, se: float, df: float, method: str) -> Comparison:
    if se == 0:  # every difference equal: no spread to test against
        return Comparison(mean, mean, mean, 1.0 if mean == 0 else 0.0, method)
    half = scipy_stats.t.ppf(0.975, df) * se
    p = 2 * scipy_stats.t.sf(abs(mean) / se, df)
    return Comparison(mean, mean - half, mean + half, float(p), method)


def paired(best: dict[int, float], other: dict[int, float]) -> Comparison | None:
    """Paired t over the seeds both finished (per-seed differences other - best);
    None with fewer than 2 such seeds."""
    seeds = sorted(set(best) & set(other))
    if len(seeds) < 2:
        return None
    differences = [other[s] - best[s] for s in seeds]
    se = statistics.stdev(differences) / math.sqrt(len(differences))
    return t_interval(statistics.fmean(differences), se, len(differences) - 1,
                      f"paired t over {len(seeds)} shared seeds")


def welch(best: list[float], other: list[float]) -> Comparison | None:
    """Welch's t on the means (other - best); None with fewer than 2 runs each."""
    if len(best) < 2 or len(other) < 2:
        return None
    va, vb = statistics.variance(best) / len(best), statistics.variance(other) / len(other)
    diff = statistics.fmean(other) - statistics.fmean(best)
    if va + vb == 0:
        return t_interval(diff, 0.0, 1, "Welch t")
    df = (va + vb) ** 2 / (va ** 2 / (len(best) - 1) + vb ** 2 / (len(other) - 1))
    return t_interval(diff, math.sqrt(va + vb), df, "Welch t")


def compare(best: dict[int, float], other: dict[int, float]) -> Comparison | None:
    """Paired where the two share at least 2 finished seeds, Welch otherwise."""
    return paired(best, other) or welch(list(best.values()), list(other.values()))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values, in their order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
