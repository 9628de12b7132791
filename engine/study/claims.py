"""The paper's claims, checked on a sweep's runs, and their verdicts.

The claims' words are defined here, once (``RULES``, one rule an item, and
``DEFINITIONS``, the same as one paragraph, are printed in the report). A
descriptive claim ("lr 1e-4: accuracy near 1, loss mostly below 0.2") is
checked run by run (``engine.study.curves``): a run shows the claim when it
shows all of the claim's properties at once, and a setting shows it when more
than half of its runs do. A comparative claim ("X best", "larger batch,
larger loss") is a set of ordered pairs of settings within the claim's axis,
tested by ``stats.order_test``: it agrees only when every pair is
significantly in the claimed order, each by a one-sided t at 5 % (an
intersection-union test), and disagrees when some pair is significantly the
other way round (one-sided, Holm-adjusted). Each verdict is then wrong at most
5 % of the time (``ERROR_RATES``); ``NULL_ANY_CLAIM`` is the simulated chance
that some claim of a report's table says agree or disagree when nothing
differs.

The settings a claim names are found in the sweep's rows by
``engine.study.axes`` (by order on the batch axis of a sweep with none of the
paper's batch sizes). Every claim also carries the one line that decides it
(``reason``) and, where the design stands in the way of a verdict, the options
that would decide it (``remedy``).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from engine.config import SweepConfig
from engine.presets import PAPER_BATCHES, PAPER_LRS
from engine.study import stats
from engine.study.axes import compact, family, label, listed, named, pick, short, value_of
from engine.study.curves import HIGH, MOSTLY, NEAR_ONE, SPIKE_EPOCHS, SPIKE_FALSE, SPIKE_K, SPIKE_RISE, SPIKE_TO, tally

POWER_TEXT = f"{stats.POWER * 100:g} %"
# A comparison over fewer seeds or splits a setting than this is blocked by
# the design when it cannot tell: the remedy asks for this many
# (``--repeats``; the quick preset's 2 splits leave the corrected t 1 degree
# of freedom).
REMEDY_UNITS = 5
MORE_EPOCHS = f"--epochs {SPIKE_EPOCHS}"
MORE_REPEATS = f"--repeats {REMEDY_UNITS}"
PAPER_OPTIONS = {"lr": "--lrs " + ",".join(compact(v) for v in PAPER_LRS),
                 "batch": "--batch-sizes " + ",".join(f"{b:g}" for b in PAPER_BATCHES)}
RULES = [
    f"mostly = in at least {MOSTLY:.0%} of the epochs",
    "the loss = the training and the validation loss",
    f"a spike = an epoch whose loss is more than max({SPIKE_RISE}, {SPIKE_K} x the run's median absolute "
    f"epoch-to-epoch change) above the lowest loss of the epochs before it; a curve of fewer than {SPIKE_EPOCHS} "
    f"epochs cannot tell",
    f"on flat noise a run (both curves) shows a spike by chance in {SPIKE_FALSE[20] * 100:.1f} % of runs at 20 "
    f"epochs, {SPIKE_FALSE[5] * 100:.1f} % at 5 (simulated)",
    f"accuracy near 1 = at least {NEAR_ONE}, high = at least {HIGH} (train and val)",
    f"spikes to ~0.8-1.0 = a spike reaching at least {SPIKE_TO}",
    "a run shows a descriptive claim when it shows all of the claim's properties at once",
    "a diverged run shows a spike (also one to ~0.8-1.0) and none of: a loss below a bound, a loss mostly 0.2-0.3, "
    "accuracy near 1, accuracy high",
    "a setting shows a claim when more than half of its runs do, and does not when more than half do not",
    "descriptive claims: agree = every setting the claim names (that the sweep has) shows it, disagree = one does "
    "not, cannot tell = otherwise (runs split evenly, too few epochs, no run); \"(1 run)\" marks a verdict resting "
    "on a single run of a setting",
    "comparative claims: within the claim's axis, better = a lower ranking statistic, only with at least 2 seeds "
    "per setting (with split replicates: 2 splits, each the mean of its seeds, by the corrected resampled t)",
    f"\"X best\": agree = X significantly better than every other setting, each pair by a one-sided t at "
    f"{stats.ALPHA * 100:g} % (intersection-union: agree needs every pair, so no adjustment); disagree = some "
    f"setting significantly better than X (one-sided t's, Holm over the pairs with X)",
    "\"X and Y best\": agree = every other setting significantly worse than X and than Y (each pair one-sided, "
    "intersection-union); disagree = some other setting significantly better than X or than Y (one-sided, Holm "
    "over those pairs)",
    "\"larger batch, larger loss\": agree = each batch size significantly worse than the next smaller one (every "
    "step one-sided, intersection-union); disagree = some larger batch significantly better than a smaller one "
    "(one-sided, Holm over all pairs)",
    f"power: the smallest difference, the same for every pair, with which agree comes out {POWER_TEXT} of the time "
    f"(simulated from the pairs' standard errors and the correlation of their differences)",
    "with seeds on one validation set (no split replicates) a comparative verdict reads \"agree on this validation "
    "set\" or \"disagree on this validation set\": the seeds share its images, and another split may order the "
    "settings otherwise",
    f"checked by order: a batch sweep with none of the paper's batch sizes "
    f"{', '.join(f'{b:g}' for b in PAPER_BATCHES)} checks the batch claims on its own by rank (the paper's i-th "
    f"smallest as the sweep's i-th smallest; a rank it lacks is absent) and says so; with some of them, those only; "
    f"the lr claims are never mapped",
    f"cannot tell = neither, with its reason and what would decide it (nothing where the design blocks nothing): "
    f"a spike claim on fewer than {SPIKE_EPOCHS} epochs: {MORE_EPOCHS}; a comparison over fewer than "
    f"{REMEDY_UNITS} seeds or splits a setting: {MORE_REPEATS}; a setting absent: {PAPER_OPTIONS['lr']} or "
    f"{PAPER_OPTIONS['batch']}",
    "SDs (in a reason) = standard deviations of a per-seed, or per-split, difference between two settings",
]
DEFINITIONS = "; ".join(RULES)


# --- the claims -------------------------------------------------------------

# (the paper's words, the axis, the settings, the properties each must show)
DESCRIPTIVE = [
    ("lr 1e-4 and 1e-5: accuracy near 1, loss mostly below 0.2", "lr", (1e-4, 1e-5),
     ("accuracy near 1", "loss mostly below 0.2")),
    ("lr 1e-2 and 1e-3: accuracy high but the loss erratic, spikes to ~0.8-1.0", "lr", (1e-2, 1e-3),
     ("accuracy high", "loss spikes to ~0.8-1.0")),
    ("lr 1e-6 and 1e-7: acceptable, loss mostly 0.2-0.3", "lr", (1e-6, 1e-7), ("loss mostly 0.2-0.3",)),
    ("batch 5: loss below 0.2", "batch", (5,), ("loss mostly below 0.2",)),
    ("batch 10 and 15: loss spikes", "batch", (10, 15), ("loss spikes",)),
]
COMPARATIVE = [("lr 1e-4 and 1e-5 best", "lr", (1e-4, 1e-5)), ("batch 5 best", "batch", (5,))]
TREND = "larger batch, larger loss"  # the paper's general finding, over whatever batch sizes the sweep has

# How often each claim's verdict is wrong. Comparative: agree when the claim
# is false, and disagree when no setting is in truth better than a claimed
# one (for the trend: no larger batch better than a smaller one), each at most
# 5 % whatever the other settings do (``stats.order_test``). Descriptive: a
# count of runs against fixed thresholds; only the spike rule has a chance
# error, on flat noise.
ALPHA_TEXT = f"{stats.ALPHA * 100:g} %"
BEST_ERRORS = (f"agree when the claim is false: at most {ALPHA_TEXT} (intersection-union, each pair one-sided); "
               f"disagree when no other setting is better than a claimed one: at most {ALPHA_TEXT} (one-sided, Holm)")
TREND_ERRORS = (f"agree when the claim is false: at most {ALPHA_TEXT} (intersection-union, each step one-sided); "
                f"disagree when no larger batch is better than a smaller one: at most {ALPHA_TEXT} (one-sided, Holm)")
SPIKE_ERRORS = (f"a run of flat noise shows a spike in {SPIKE_FALSE[20] * 100:.1f} % of runs at 20 epochs "
                f"({SPIKE_FALSE[5] * 100:.1f} % at 5, both loss curves checked); a setting needs more than half of "
                f"its runs")
ERROR_RATES = {
    **{text: "no chance error: the curves against fixed thresholds" for text, *_ in DESCRIPTIVE},
    "lr 1e-2 and 1e-3: accuracy high but the loss erratic, spikes to ~0.8-1.0": SPIKE_ERRORS,
    "batch 10 and 15: loss spikes": SPIKE_ERRORS,
    **{text: BEST_ERRORS for text, *_ in COMPARATIVE},
    TREND: TREND_ERRORS,
}
# The chance that some claim of a report's table fires wrongly on a null sweep:
# a comparative claim says agree or disagree, or a spike claim agrees, when
# every setting is the same and every curve is flat noise (NULL_DESIGN). Each
# from 20,000 simulated sweeps through ``check`` (0.0465 and 0.0693, Monte
# Carlo SE 0.0015 and 0.0018); tests/test_claim_rules.py re-simulates them.
# Nearly all of it is the comparative claims' disagree: with 5 runs a setting,
# a spike claim needs 3 chance spikes in one setting.
NULL_DESIGN = ("the paper's axis (6 learning rates at batch 5, or batch 5, 10, 15 at lr 1e-4), 5 seeds on one "
               "validation set, 20 epochs; every curve flat Gaussian noise (loss SD 0.1 about 0.5 plus a level per "
               "seed shared by the settings, accuracy about 0.93)")
NULL_ANY_CLAIM = {"lr": 0.046, "batch": 0.069}


def check(sweep: SweepConfig, rows: list[dict], histories: dict[str, list[list[dict] | None]],
          ratio: float = 0.0, *, one_split: bool = True) -> list[dict]:
    """The paper's claims along the axes this sweep runs:
    ``{claim, shown, evidence, verdict, runs_label, reason, remedy}``.

    ``claim`` is the paper's words (``ERROR_RATES`` is keyed by them);
    ``shown`` the claim as checked: the paper's words, or, where a batch sweep
    has none of the paper's batch sizes, the claim on the sweep's own sizes by
    order (``named``). ``evidence`` holds every number; ``reason`` the one
    line that decides the verdict (for cannot tell, what in the design or the
    data keeps it undecided); ``remedy`` the options that would decide a
    cannot tell, "" where the design blocks nothing (the data just do not
    separate the settings) or the verdict is given.

    Args:
        sweep: the sweep.
        rows: the report's rows (``setting``, ``lr``, ``sweep_lr``, ``batch_size``,
            ``epochs``, ``statistic_by_unit``: each seed's ranking statistic,
            a diverged run counted as the worst; with split replicates each
            split's, the mean of its seeds).
        histories: per setting, the histories of its finished runs, None for
            each diverged run.
        ratio: with split replicates, n_val/n_train of the splits: the
            comparisons are then over splits, by the corrected resampled t
            (``stats``); 0: over seeds, by the paired t.
        one_split: the seeds were all trained and validated on one split (no
            split replicates, ``ratio`` 0): a comparative verdict then says
            "agree / disagree on this validation set".
    """
    one_set = one_split and ratio == 0
    out = []
    for text, axis, values, properties in DESCRIPTIVE:
        members = family(sweep, rows, axis)
        if members:
            found = descriptive(members, axis, values, properties, histories)
            out.append({"claim": text, "shown": named(members, axis, values).shown(text), **found})
    for text, axis, values in COMPARATIVE:
        members = family(sweep, rows, axis)
        if members:
            found = best_claim(sweep, members, axis, values, ratio, one_split=one_set)
            out.append({"claim": text, "shown": named(members, axis, values).shown(text), **found})
    members = family(sweep, rows, "batch")
    if members:
        out.append({"claim": TREND, "shown": TREND, **trend_claim(sweep, members, ratio, one_split=one_set)})
    return out


# --- the words of a reason ---------------------------------------------------------

def p_text(p: float, bound: bool = False) -> str:
    """A p-value to 2 significant digits ("p < 0.001" below that); ``bound``: the largest of several."""
    return "p < 0.001" if p < 0.001 else f"p {'≤ ' if bound else ''}{p:.2g}"


def sds_text(value: float) -> str:
    """A multiple of an SD to 2 significant digits: 12, 3.8, 120."""
    return f"{float(f'{value:.2g}'):g}"


@functools.lru_cache(maxsize=64)
def design_detectable(units: int, ratio: float, pairs: tuple[tuple[int, int], ...]) -> float:
    """The difference, common to every pair and in SDs of a per-unit
    difference, that an order claim's intersection-union test finds with
    ``stats.POWER`` over ``units`` seeds or splits a setting (``ratio``: the
    corrected resampled t), the settings independent with equal variance: the
    differences of two pairs that share a setting then correlate by +-1/2."""
    se = [math.sqrt(1 / units + ratio)] * len(pairs)
    corr = [[((j == m) - (j == k) - (i == m) + (i == k)) / 2 for k, m in pairs] for i, j in pairs]
    return stats.joint_detectable(se, units - 1, corr)


def remedy_ratio(ratio: float, split_mode: str) -> float:
    """The correction ``REMEDY_UNITS`` splits would take: the same for hold-outs
    (``overlap.correction_ratio`` does not depend on their number), another for
    K folds; 0 for seeds."""
    if ratio == 0 or split_mode != "kfold":
        return ratio
    from engine.study import overlap

    return overlap.correction_ratio("kfold", REMEDY_UNITS, None, None, None)


def power_reason(matrix: np.ndarray, pairs, ratio: float, split_mode: str) -> tuple[str, str]:
    """Why an order claim cannot tell, and what would decide it: with fewer than
    ``REMEDY_UNITS`` units the degrees of freedom (and what ``REMEDY_UNITS``
    would detect instead), else only the data."""
    units = int(np.min(np.sum(~np.isnan(matrix), axis=1)))
    now = sds_text(design_detectable(units, ratio, tuple(pairs)))
    if units >= REMEDY_UNITS:
        return f"not distinguishable: {POWER_TEXT} power only for differences ≥ {now} SDs", ""
    unit, df = unit_word(ratio), units - 1
    then = sds_text(design_detectable(REMEDY_UNITS, remedy_ratio(ratio, split_mode), tuple(pairs)))
    return (f"{units} {unit}s leave {df} degree{'s' if df != 1 else ''} of freedom: {POWER_TEXT} power only for "
            f"differences ≥ {now} SDs ({REMEDY_UNITS} {unit}s: {then})", MORE_REPEATS)


def units_reason(members: list[dict], axis: str, ratio: float) -> tuple[str, str]:
    """Why a comparison lacks 2 units in some setting, and what would decide it."""
    counts = [len(r["statistic_by_unit"]) for r in members]
    if max(counts) < 2:
        return "one run per setting: no spread to test a difference against", MORE_REPEATS
    fewest = members[counts.index(min(counts))]
    unit = unit_word(ratio)
    return (f"too few finished runs: {short(axis, value_of(fewest, axis))} has {min(counts)} {unit}"
            f"{'s' if min(counts) != 1 else ''}, a test needs 2", MORE_REPEATS if max(counts) < REMEDY_UNITS else "")


def single_reason(axis: str) -> str:
    return f"a single {'batch size' if axis == 'batch' else 'lr'}: nothing to compare with"


# --- checking the claims ------------------------------------------------------------

def descriptive(members: list[dict], axis: str, values: tuple, properties: tuple[str, ...],
                histories: dict[str, list[list[dict] | None]]) -> dict:
    """A descriptive claim on the settings of ``values`` the sweep has (by order, ``named``)."""
    names = named(members, axis, values)
    evidence, found = [], []
    for value in names.present:
        runs = histories.get(pick(members, axis, value)["setting"], [])
        if runs:
            counted = tally(runs, properties)
            found.append((short(axis, value), counted))
            evidence.append(f"{label(axis, value)}: {counted.text}")
    evidence.append(names.absent())

    def result(verdict: str, reason: str, remedy: str = "", runs_label: str = "") -> dict:
        return {"evidence": "; ".join(e for e in evidence if e), "verdict": verdict, "runs_label": runs_label,
                "reason": reason, "remedy": remedy}

    if not found:
        if names.present:
            evidence.insert(0, "no finished run")
            return result("cannot tell", f"no finished run of {listed(axis, names.present)}")
        return result("cannot tell", names.lacks(), PAPER_OPTIONS[axis])
    held = [t.held for _, t in found]
    if False in held:
        name, t = next((n, t) for n, t in found if t.held is False)
        return result("disagree", f"{name} shows it in {t.yes} of {t.runs} run{'s' if t.runs != 1 else ''}",
                      runs_label="1 run" if any(t.runs == 1 for _, t in found) else "")
    if None in held:
        evidence.append("cannot tell: runs split evenly or too few epochs")
        name, t = next((n, t) for n, t in found if t.held is None)
        if t.unknown:
            return result("cannot tell", f"the spike rule needs {SPIKE_EPOCHS} epochs; the runs have {t.epochs}",
                          MORE_EPOCHS)
        return result("cannot tell", f"runs split evenly: {name} shows it in {t.yes} of {t.runs} runs",
                      MORE_REPEATS if t.runs < REMEDY_UNITS else "")
    shows = ", ".join(f"{n} in {t.yes} of {t.runs}" for n, t in found).replace(" in ", " shows it in ", 1)
    lacks = names.lacks()
    return result("agree", f"{shows} run{'s' if found[-1][1].runs != 1 else ''}" + (f"; {lacks}" if lacks else ""),
                  runs_label="1 run" if any(t.runs == 1 for _, t in found) else "")


def unit_matrix(members: list[dict]) -> np.ndarray:
    """The members' statistics per unit (seed, or split with split
    replicates) as (settings, units), NaN where a run is missing."""
    seeds = sorted({s for r in members for s in r["statistic_by_unit"]})
    return np.array([[r["statistic_by_unit"].get(s, np.nan) for s in seeds] for r in members], float).reshape(
        len(members), len(seeds))


def runs_given(sweep: SweepConfig, members: list[dict], axis: str) -> str:
    """Which lr (and epochs) each batch size got, when the sweep scales them."""
    if axis != "batch" or (sweep.lr_scaling == "none" and sweep.budget == "epochs"):
        return ""
    return "each trained at: " + ", ".join(f"batch {r['batch_size']}: lr {r['lr']:.3g}, {r.get('epochs', '?')} "
                                           f"epochs" for r in members)


def unit_word(ratio: float) -> str:
    """What the evidence counts: seeds on one split, or splits (``ratio`` > 0)."""
    return "split" if ratio > 0 else "seed"


def too_few(members: list[dict], axis: str, ratio: float = 0.0) -> str:
    counts = ", ".join(f"{label(axis, value_of(r, axis))}: {len(r['statistic_by_unit'])}" for r in members)
    unit = unit_word(ratio)
    return f"too few {unit}s: a comparison needs at least 2 {unit}s per setting ({unit}s counted: {counts})"


VERDICTS = {stats.AGREE: "agree", stats.DISAGREE: "disagree", stats.CANNOT_TELL: "cannot tell"}
ON_ONE_SET = " on this validation set"


def verdict_word(code: int, one_set: bool) -> str:
    """A comparative verdict's words; on one validation set agree and disagree say so."""
    word = VERDICTS[int(code)]
    return word + ON_ONE_SET if one_set and code != stats.CANNOT_TELL else word


def ordered(members: list[dict], axis: str, pairs: list[tuple[int, int]], against: list[tuple[int, int]],
            ratio: float, power_of: str) -> tuple[stats.OrderTest, list[str]]:
    """``stats.order_test`` of ``pairs`` (each second setting worse than the first)
    on the members' statistics, and its evidence: each pair's difference and
    one-sided p, the strongest reverse order among ``against`` (Holm), and the
    difference every pair needs for agree to come out with ``POWER``."""
    matrix = unit_matrix(members)
    found = stats.order_test(matrix, pairs, against, ratio=ratio)
    unit = unit_word(ratio)

    def name(i: int) -> str:
        return label(axis, value_of(members[i], axis))

    def over(i: int, j: int) -> str:
        shared = int(np.sum(~np.isnan(matrix[i] - matrix[j])))
        return f"over {shared} {unit}s" if shared >= 2 else "Welch t"

    lines = [f"{name(j)} minus {name(i)}: {found.difference[i, j]:+.4f} (one-sided p {found.p_above[n]:.2g}; "
             f"{over(i, j)})" for n, (i, j) in enumerate(pairs)]
    tested = int(np.sum(~np.isnan(found.p_below_holm)))
    if tested:
        m = int(np.nanargmin(found.p_below_holm))
        i, j = found.against[m]
        lines.append(f"reverse order: smallest one-sided Holm p over {tested} pair{'s' if tested != 1 else ''} "
                     f"{found.p_below_holm[m]:.2g} (that {name(j)} is better than {name(i)})")
    se = np.array([found.se[i, j] for i, j in pairs])
    df = min(float(found.df[i, j]) for i, j in pairs)
    if np.all(np.isfinite(se)) and math.isfinite(df):
        step = stats.joint_detectable(se, df, stats.difference_correlation(matrix, pairs))
        tests = {1: "the one-sided test", 2: "both one-sided tests"}.get(len(pairs),
                                                                        f"all {len(pairs)} one-sided tests")
        lines.append(f"agree needs {tests} at {ALPHA_TEXT}{' (intersection-union)' if len(pairs) > 1 else ''}: "
                     f"{POWER_TEXT} power when {power_of} {step:.4f}")
    return found, lines


def order_reason(found: stats.OrderTest, members: list[dict], axis: str, agreed: str) -> str:
    """The statistic that decides an order claim: for agree ``agreed`` and the
    largest one-sided p of its pairs; for disagree the strongest reverse pair
    and its Holm p."""
    if int(found.verdict) == stats.AGREE:
        many = len(found.pairs) > 1
        return f"{agreed}, {'each ' if many else ''}one-sided {p_text(float(np.max(found.p_above)), many)}"
    m = int(np.nanargmin(found.p_below_holm))
    i, j = found.against[m]
    return (f"{short(axis, value_of(members[j], axis))} lower than {short(axis, value_of(members[i], axis))}, "
            f"one-sided Holm {p_text(float(found.p_below_holm[m]))}")


def best_claim(sweep: SweepConfig, members: list[dict], axis: str, values: tuple, ratio: float = 0.0, *,
               one_split: bool = True) -> dict:
    """"``values`` best" along ``axis`` (by order, ``named``): every other setting
    significantly worse than each claimed one (``stats.order_test`` of
    ``stats.best_pairs``)."""
    names = named(members, axis, values)
    claimed = [i for i, r in enumerate(members) if any(math.isclose(value_of(r, axis), v) for v in names.present)]
    extra = runs_given(sweep, members, axis)

    def result(verdict: str, reason: str, remedy: str, *evidence: str) -> dict:
        return {"verdict": verdict, "evidence": "; ".join(e for e in (*evidence, extra) if e), "runs_label": "",
                "reason": reason, "remedy": remedy}

    if not claimed:
        return result("cannot tell", names.lacks(), PAPER_OPTIONS[axis], names.absent())
    if len(members) < 2:
        return result("cannot tell", single_reason(axis), PAPER_OPTIONS[axis],
                      f"nothing to compare with: a single {'batch size' if axis == 'batch' else 'lr'}")
    if any(len(r["statistic_by_unit"]) < 2 for r in members):
        return result("cannot tell", *units_reason(members, axis, ratio), too_few(members, axis, ratio),
                      names.absent())
    if len(claimed) == len(members):
        return result("cannot tell", "only the claimed settings: nothing to compare with", PAPER_OPTIONS[axis],
                      "nothing to compare with: the sweep has only the claimed settings")
    pairs = stats.best_pairs(claimed, len(members))
    found, lines = ordered(members, axis, pairs, pairs, ratio, "every other setting is worse by")
    code = int(found.verdict)
    if code == stats.CANNOT_TELL:
        reason, remedy = power_reason(unit_matrix(members), pairs, ratio, sweep.split_mode)
    else:
        others = [value_of(r, axis) for i, r in enumerate(members) if i not in claimed]
        reason, remedy = order_reason(found, members, axis, f"{listed(axis, names.present)} lower than "
                                                            f"{listed(axis, others)}"), ""
    why = ["not distinguishable: not every other setting is significantly worse, and none significantly "
           "better"] if code == stats.CANNOT_TELL else []
    return result(verdict_word(code, one_split and ratio == 0), reason, remedy, *why, *lines, names.absent())


def trend_claim(sweep: SweepConfig, members: list[dict], ratio: float = 0.0, *, one_split: bool = True) -> dict:
    """"larger batch, larger loss": each batch size significantly worse than the
    next smaller one (``stats.order_test`` of ``stats.rise_pairs``)."""
    members = sorted(members, key=lambda r: r["batch_size"])
    extra = runs_given(sweep, members, "batch")

    def result(verdict: str, reason: str, remedy: str, *evidence: str) -> dict:
        return {"verdict": verdict, "evidence": "; ".join(e for e in (*evidence, extra) if e), "runs_label": "",
                "reason": reason, "remedy": remedy}

    if len(members) < 2:
        return result("cannot tell", single_reason("batch"), PAPER_OPTIONS["batch"],
                      "nothing to compare with: a single batch size")
    if any(len(r["statistic_by_unit"]) < 2 for r in members):
        return result("cannot tell", *units_reason(members, "batch", ratio), too_few(members, "batch", ratio))
    steps, reverse = stats.rise_pairs(len(members))
    found, lines = ordered(members, "batch", steps, reverse, ratio, "each batch size is worse than the one before by")
    code = int(found.verdict)
    means = "means " + ", ".join(f"batch {r['batch_size']}: {np.mean(list(r['statistic_by_unit'].values())):.4f}"
                                 for r in members)
    if code == stats.CANNOT_TELL:
        reason, remedy = power_reason(unit_matrix(members), steps, ratio, sweep.split_mode)
    else:
        sizes = " < ".join(f"{r['batch_size']:g}" for r in members)
        reason, remedy = order_reason(found, members, "batch", f"higher at every larger batch ({sizes})"), ""
    why = ["not distinguishable: not every step significantly up, and no larger batch significantly "
           "better"] if code == stats.CANNOT_TELL else []
    return result(verdict_word(code, one_split and ratio == 0), reason, remedy, *why, *lines, means)
