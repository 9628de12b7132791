"""How much the corrected resampled t must correct for overlapping splits, and
a check of that correction against a model it does not assume.

The report compares settings on J splits drawn from one pool of images by the
corrected resampled t (``engine.study.stats``): var(mean d) = s^2 (1/J + r)
for per-split differences d of sample variance s^2. That is exact when the
differences of two splits correlate by rho = r / (1 + r), and nothing else.
This module builds the differences from what the engine actually draws
(``engine.data.resample``) and derives r from them.

The model. Every setting is truly equal. Setting s's statistic on split j is
the setting x split interaction a_sj plus seed noise. The interaction (of
variance 1) has two independent parts:

* a share ``share`` of its variance comes from the training set: two splits
  share it as far as their training sets share images (hold-out: expected
  n_train / P of each training set for a pool of P; k-fold: (K - 2) / (K - 1));
* the rest comes from the validation set's own draw (on which images the
  setting happens to do better): two splits share it as far as their
  validation sets share images (hold-out: expected n_val / P; k-fold: 0, the
  folds are disjoint). A mean over a validation set that shares a fraction f
  of its images with another correlates with that one's mean by f, so this
  part is not independent across hold-outs; leaving it out would understate
  the correlation.

Seed noise (variance ``seed_var`` per run, relative to the interaction's) is
independent across runs, and a split's statistic is the mean over its seeds.
A split effect common to all settings (some splits are easier) cancels in
every paired difference and is left out. Then two splits' differences
correlate by

    rho = (share * train_overlap + (1 - share) * val_overlap) / (1 + seed_var / seeds)

and the correction is r = rho / (1 - rho) at seed_var = 0: seed noise only
dilutes the correlation, so assuming none is the worst case, and with it the
corrected t is exact under the model (equicorrelated normal differences: the
mean and s^2 are independent and t has J - 1 degrees of freedom). The share
cannot be estimated from a sweep (the report's variance components tell the
split from the seeds, not the training set from the validation set):
``SHARE`` is an assumption, and ``python -m engine.study.overlap`` prints how
the level moves when the true share differs from it.

``false_worse_rate`` pushes simulated sweeps through the report's own family
of tests (``stats.family``, Holm over all pairs) and counts the sweeps in
which some setting is called worse; ``grid`` does so for the presets' designs
with today's factor n_val / n_train (k-fold: 1 / (K - 1)) and with
``correction_ratio``. docs/overlap.md holds the tables it prints.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from engine.study import stats

# The assumed share of the setting x split interaction's variance that comes
# from the training set (the rest from the validation set's draw).
SHARE = 0.5
MODES = ("holdout", "kfold")
# The simulated grid: splits and settings (3: the batch axis, 6: the lr axis); NOISES below.
SPLITS = (2, 3, 5, 10)
SETTINGS = (3, 6)
# Seed noise of one run, as a variance relative to the interaction's: per-seed
# differences of SD 0.02 against per-split differences of SD 0.04, the sizes
# tests/test_split_stats.py simulates. The correction itself assumes 0.
SEED_VAR = 0.25
# The grid's seed columns: (seeds per split, seed noise): 1 and 2 seeds. Without seed noise
# (the worst case, where the correction is exact) seeds change nothing, so one
# column stands for any number.
NOISES = ((1, SEED_VAR), (2, SEED_VAR), (1, 0.0))
# The designs the engine draws: the quick and robust presets' 160/40 of 200
# images, the paper's 500/100 of 600, a --split-sizes draw of 300/100 from
# 600, and K folds of a pool (whose overlaps depend on K alone, so one row
# stands for a pool of 200 or 600).
DESIGNS = (
    {"label": "hold-out 160/40 of 200", "mode": "holdout", "train": 160, "val": 40, "pool": 200},
    {"label": "hold-out 500/100 of 600", "mode": "holdout", "train": 500, "val": 100, "pool": 600},
    {"label": "hold-out 300/100 of 600", "mode": "holdout", "train": 300, "val": 100, "pool": 600},
    {"label": "k-fold of 200 or 600", "mode": "kfold", "train": None, "val": None, "pool": 600},
)
# A cell passes when its false 'worse' rate is at most this: ALPHA plus room
# for the Monte Carlo error (SE 0.0015 at 5 % over SWEEPS sweeps).
LIMIT = 0.055
SWEEPS = 20_000
SEED = 0
# Sweeps per call of stats.family: its (sweeps, settings, settings, splits)
# temporaries stay near 100 MB at 6 settings x 10 splits.
CHUNK = 4000
# The true shares the level is checked at, beside the assumed one.
SHARES = (0.25, 0.5, 0.75, 1.0)
# The families of the power table: 3 settings (3 pairs, the batch axis) and 6 (15, the lr axis).
PAIRS = (3, 15)


# --- the overlaps and the correction ------------------------------------------

def _check(mode: str, splits: int, n_train: int | None, n_val: int | None, pool: int | None) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if splits < 2:
        raise ValueError(f"split replicates need at least 2 splits, not {splits}")
    if mode == "holdout" and not (n_train >= 1 and n_val >= 1 and n_train + n_val <= pool):
        raise ValueError(f"a hold-out of {n_train}/{n_val} cannot be drawn from a pool of {pool}")


def kfold_sizes(pool: int, splits: int) -> tuple[int, int]:
    """(train, val) images of one of K folds of ``pool``, as the engine
    expects them (``replicates.expected_counts``)."""
    val = pool // splits
    return pool - val, val


def train_overlap(mode: str, splits: int, n_train: int | None = None, pool: int | None = None) -> float:
    """The expected fraction of one split's training images that another
    split's training set holds too: a random n_train of P holds each image
    with chance n_train / P; two of K folds' training sets share K - 2 of
    their K - 1 folds."""
    if mode == "kfold":
        return (splits - 2) / (splits - 1)
    return n_train / pool


def val_overlap(mode: str, n_val: int | None = None, pool: int | None = None) -> float:
    """The expected fraction of one split's validation images that another
    split's validation set holds too: n_val / P for hold-outs, none for
    folds."""
    return 0.0 if mode == "kfold" else n_val / pool


def correlation(mode: str, splits: int, n_train: int | None, n_val: int | None, pool: int | None,
                share: float = SHARE, seed_var: float = 0.0, seeds: int = 1) -> float:
    """The correlation of two splits' per-split differences under the model
    (module docstring): the shared part of the interaction over the variance
    of a split's seed mean."""
    _check(mode, splits, n_train, n_val, pool)
    shared = share * train_overlap(mode, splits, n_train, pool) + (1 - share) * val_overlap(mode, n_val, pool)
    return shared / (1 + seed_var / seeds)


def correction_ratio(mode: str, splits: int, n_train: int | None, n_val: int | None, pool: int | None,
                     share: float = SHARE) -> float:
    """The r to pass as ``ratio`` to ``stats.family``: rho / (1 - rho) for the
    correlation of two splits' differences with no seed noise (the largest
    the model allows), so var(mean d) = s^2 (1/J + r) holds exactly then and
    overstates it with seed noise. Hold-outs of the whole pool (n_train +
    n_val = P) give rho = share * n_train/P + (1 - share) * n_val/P, which is
    0.5 and r = 1 at the default share whatever the sizes."""
    rho = correlation(mode, splits, n_train, n_val, pool, share)
    return rho / (1 - rho)


def nadeau_bengio_ratio(mode: str, splits: int, n_train: int | None, n_val: int | None) -> float:
    """Today's factor: n_val / n_train (``resample.val_train_ratio``), which
    for K folds is 1 / (K - 1)."""
    return 1 / (splits - 1) if mode == "kfold" else n_val / n_train


def _simulated_train_overlap(mode: str) -> float:
    overlaps = [train_overlap(d["mode"], k, d["train"], d["pool"]) for d in DESIGNS if d["mode"] == mode
                for k in SPLITS]
    return max(overlaps)


def validated(mode: str, splits: int, n_train: int | None, n_val: int | None, pool: int | None) -> str | None:
    """None when the design lies within what ``grid`` simulated (2 to 10
    splits, training sets overlapping no more than in the simulated designs:
    the more they overlap, the more a share above ``SHARE`` would raise the
    correlation), else a one-line warning."""
    _check(mode, splits, n_train, n_val, pool)
    if splits > max(SPLITS):
        return (f"{splits} splits: the correction for overlapping splits was checked for {min(SPLITS)} to "
                f"{max(SPLITS)} splits only (docs/overlap.md)")
    most = _simulated_train_overlap(mode)
    overlap = train_overlap(mode, splits, n_train, pool)
    if overlap > most + 1e-12:
        return (f"the splits' training sets share {overlap:.0%} of their images, more than the {most:.0%} the "
                f"correction for overlapping splits was checked at (docs/overlap.md)")
    return None


# --- the simulation -----------------------------------------------------------

def equicorrelated(rng: np.random.Generator, shape: tuple[int, ...], splits: int, rho: float) -> np.ndarray:
    """Standard normals of shape ``(*shape, splits)`` whose last axis has
    correlation ``rho`` between every two splits (the Cholesky factor of the
    J x J matrix with 1 on the diagonal and rho off it)."""
    factor = np.linalg.cholesky((1 - rho) * np.eye(splits) + rho * np.ones((splits, splits)))
    return rng.standard_normal((*shape, splits)) @ factor.T


def simulate(rng: np.random.Generator, sweeps: int, settings: int, splits: int, seeds: int, train: float,
             val: float, share: float = SHARE, seed_var: float = SEED_VAR) -> np.ndarray:
    """``(sweeps, settings, splits, seeds)`` statistics of equal settings:
    the interaction's training part correlated ``train`` between splits, its
    validation part ``val``, independent across settings, plus seed noise."""
    interaction = (math.sqrt(share) * equicorrelated(rng, (sweeps, settings), splits, train)
                   + math.sqrt(1 - share) * equicorrelated(rng, (sweeps, settings), splits, val))
    noise = math.sqrt(seed_var) * rng.standard_normal((sweeps, settings, splits, seeds))
    return interaction[..., None] + noise


def false_worse_rate(values: np.ndarray, ratio: float) -> float:
    """The share of sweeps ``(sweeps, settings, splits, seeds)`` in which the
    report calls some setting worse: split means, ``stats.family`` with this
    ``ratio`` (Holm over all pairs), any ``worse``."""
    means = stats.split_means(values)
    worse = [stats.family(means[i:i + CHUNK], ratio=ratio).worse.any(axis=-1) for i in range(0, len(means), CHUNK)]
    return float(np.concatenate(worse).mean())


def cell(design: dict, splits: int, settings: int, seeds: int, seed_var: float = SEED_VAR, share: float = SHARE,
         sweeps: int = SWEEPS, seed: int = SEED) -> dict:
    """The false 'worse' rates of one cell with today's factor and with
    ``correction_ratio`` (at the assumed ``SHARE``), on the same simulated
    sweeps. The generator is keyed by the cell, so a cell's numbers do not
    depend on which others are run."""
    mode, pool = design["mode"], design["pool"]
    n_train, n_val = kfold_sizes(pool, splits) if mode == "kfold" else (design["train"], design["val"])
    key = [seed, MODES.index(mode), pool, n_train, n_val, splits, settings, seeds, round(1000 * seed_var),
           round(1000 * share)]
    values = simulate(np.random.default_rng(key), sweeps, settings, splits, seeds,
                      train_overlap(mode, splits, n_train, pool), val_overlap(mode, n_val, pool), share, seed_var)
    today = nadeau_bengio_ratio(mode, splits, n_train, n_val)
    chosen = correction_ratio(mode, splits, n_train, n_val, pool)
    return {"design": design["label"], "splits": splits, "settings": settings, "seeds": seeds,
            "seed_var": seed_var, "share": share, "today_ratio": today, "chosen_ratio": chosen,
            "today": false_worse_rate(values, today), "chosen": false_worse_rate(values, chosen)}


def grid(sweeps: int = SWEEPS, seed: int = SEED) -> list[dict]:
    """Every cell: design x splits x settings x ``NOISES``, at the assumed share."""
    return [cell(design, splits, settings, seeds, seed_var, SHARE, sweeps, seed)
            for design in DESIGNS for splits in SPLITS for settings in SETTINGS for seeds, seed_var in NOISES]


def share_rows(sweeps: int = SWEEPS, seed: int = SEED) -> list[dict]:
    """The level of the chosen correction (which assumes ``SHARE``) when the
    true share is another: 6 settings, 1 seed with no seed noise (the worst
    case), 5 and 10 splits, the quick preset's hold-out and k-fold."""
    return [cell(design, splits, 6, 1, 0.0, share, sweeps, seed)
            for design in (DESIGNS[0], DESIGNS[3]) for splits in (5, 10) for share in SHARES]


# --- the power cost -----------------------------------------------------------

def detectable(design: dict, splits: int, pairs: int, factor: str = "chosen") -> float:
    """The smallest difference the report's test finds with ``stats.POWER``
    at the family level for ``pairs`` pairs, in SDs of the per-split
    differences (their sample SD across splits, as the report measures it),
    with the chosen factor or today's (``factor="today"``)."""
    mode, pool = design["mode"], design["pool"]
    n_train, n_val = kfold_sizes(pool, splits) if mode == "kfold" else (design["train"], design["val"])
    r = (nadeau_bengio_ratio(mode, splits, n_train, n_val) if factor == "today" else
         correction_ratio(mode, splits, n_train, n_val, pool))
    return stats.detectable_in_sds(splits, pairs, ratio=r)


def detectable_rows(designs: tuple[dict, ...] = (DESIGNS[0], DESIGNS[2], DESIGNS[3])) -> list[dict]:
    """Per design, splits and pairs: the detectable difference (in SDs of a
    per-split difference) with the chosen correction and with today's."""
    return [{"design": d["label"], "splits": k, "pairs": p, "chosen": detectable(d, k, p),
             "today": detectable(d, k, p, "today")} for d in designs for k in SPLITS for p in PAIRS]


# --- the tables ---------------------------------------------------------------

def _pct(rate: float) -> str:
    flag = "**" if rate > LIMIT else ""
    return f"{flag}{100 * rate:.1f}{flag}"


def rate_table(rows: list[dict]) -> list[str]:
    """``grid``'s rows as a markdown table, one line per design, splits and settings."""
    lines = ["| design | N | S | r today | r chosen | 1 seed: today | chosen | 2 seeds: today | chosen | "
             "no seed noise: today | chosen |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    by_cell: dict[tuple, dict] = {}
    for row in rows:
        by_cell.setdefault((row["design"], row["splits"], row["settings"]), {})[
            (row["seeds"], row["seed_var"])] = row
    for (design, splits, settings), runs in by_cell.items():
        first = next(iter(runs.values()))
        rates = [_pct(runs[noise][factor]) for noise in NOISES for factor in ("today", "chosen")]
        lines.append(f"| {design} | {splits} | {settings} | {first['today_ratio']:.3g} | "
                     f"{first['chosen_ratio']:.3g} | " + " | ".join(rates) + " |")
    return lines


def share_table(rows: list[dict]) -> list[str]:
    """``share_rows`` as a markdown table, one line per design and splits."""
    lines = ["| design | N | " + " | ".join(f"true share {s:g}" for s in SHARES) + " |",
             "|---|--:|" + "--:|" * len(SHARES)]
    by_cell: dict[tuple, dict] = {}
    for row in rows:
        by_cell.setdefault((row["design"], row["splits"]), {})[row["share"]] = row
    for (design, splits), runs in by_cell.items():
        lines.append(f"| {design} | {splits} | " + " | ".join(_pct(runs[s]["chosen"]) for s in SHARES) + " |")
    return lines


def detectable_table(rows: list[dict]) -> list[str]:
    """``detectable_rows`` as a markdown table, one line per number of splits."""
    designs = list(dict.fromkeys(r["design"] for r in rows))
    lines = ["| N | " + " | ".join(f"{d}, {p} pairs" for d in designs for p in PAIRS) + " |",
             "|--:|" + "--:|" * (len(designs) * len(PAIRS))]
    for splits in SPLITS:
        cells = [next(r for r in rows if (r["design"], r["splits"], r["pairs"]) == (d, splits, p))
                 for d in designs for p in PAIRS]
        lines.append(f"| {splits} | " + " | ".join(f"{c['chosen']:.2f} ({c['today']:.2f})" for c in cells) + " |")
    return lines


def markdown(sweeps: int = SWEEPS, seed: int = SEED) -> str:
    """The tables of docs/overlap.md, as ``python -m engine.study.overlap`` prints them."""
    start = time.perf_counter()
    rows, shares = grid(sweeps, seed), share_rows(sweeps, seed)
    seconds = time.perf_counter() - start
    se = 100 * math.sqrt(stats.ALPHA * (1 - stats.ALPHA) / sweeps)
    lines = [f"False 'worse' rate in % of {sweeps:,} simulated sweeps of equal settings per cell (seed {seed}; "
             f"Monte Carlo SE {se:.2f} points at 5 %), with today's factor r = n_val/n_train (k-fold 1/(K-1)) and the "
             f"chosen r = rho/(1-rho) at share {SHARE:g}. N splits, S settings (3: batch axis, 6: lr axis); seed "
             f"noise variance {SEED_VAR:g} of the interaction's per run, or none. Bold: above {100 * LIMIT:g} %.",
             "", *rate_table(rows), "",
             f"The chosen correction (share {SHARE:g} assumed) when the true share is another: 6 settings, one "
             f"seed, no seed noise, {sweeps:,} sweeps per cell.", "", *share_table(shares), "",
             f"Detectable difference at {100 * stats.POWER:g} % power (two-sided, level {stats.ALPHA:g} / pairs), "
             f"in SDs of the per-split differences, with the chosen correction (today's in brackets).", "",
             *detectable_table(detectable_rows()), "",
             f"({len(rows) + len(shares)} cells in {seconds:.0f} s.)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print docs/overlap.md's tables: the false 'worse' rates of the "
                                                 "corrected resampled t with today's and the chosen factor.")
    parser.add_argument("--sweeps", type=int, default=SWEEPS, help="simulated sweeps per cell")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the simulation")
    args = parser.parse_args(argv)
    print(markdown(args.sweeps, args.seed))


if __name__ == "__main__":
    main()
