"""The paper's claim rules against what their words say: simulated sweeps pushed
through the claims' own tests (``stats.order_test``, the core ``claims.best_claim``
and ``claims.trend_claim`` call), null sweeps through ``claims.check``, and the
spike rule's chance rate through the property the descriptive claims use."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engine import options
from engine.study import axes, claims as claims_lib, curves as curves_lib, stats

SWEEPS = 10_000  # Monte Carlo SE of a rate: 0.0022 at 5 %, 0.0040 at 80 %
SEEDS = 5
LRS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)  # the lr family's order: ascending
BATCHES = (5, 10, 15)
CLAIMED_LRS = [LRS.index(1e-5), LRS.index(1e-4)]  # "lr 1e-4 and 1e-5 best"


def monte_carlo_error(p: float, n: int = SWEEPS) -> float:
    return math.sqrt(p * (1 - p) / n)


def at_most(rate: float, bound: float = stats.ALPHA, n: int = SWEEPS) -> bool:
    return rate <= bound + 3 * monte_carlo_error(bound, n)


def statistics(rng: np.random.Generator, means, n: int = SWEEPS) -> np.ndarray:
    """``(n, settings, SEEDS)`` ranking statistics: each setting's mean, a seed
    effect every setting shares (same data order and augmentations), and run
    noise of SD 1, so a per-seed difference has SD sqrt 2."""
    means = np.asarray(means, float)
    return means[:, None] + rng.normal(size=(n, 1, SEEDS)) + rng.normal(size=(n, len(means), SEEDS))


def rates(found: stats.OrderTest) -> tuple[float, float]:
    return float(np.mean(found.verdict == stats.AGREE)), float(np.mean(found.verdict == stats.DISAGREE))


def row(axis: str, value: float, by_unit: dict, epochs: int = 20) -> dict:
    """A row as collect.summarise makes it."""
    lr, batch = (value, 5) if axis == "lr" else (1e-4, value)
    return {"setting": f"{axis}={value:g}", "lr": lr, "sweep_lr": lr, "batch_size": batch, "epochs": epochs,
            "statistic_by_unit": by_unit}


def rows_of(axis: str, values, matrix: np.ndarray) -> list[dict]:
    """Rows of one sweep's ``(settings, units)`` statistics, NaN = no run at that unit."""
    return [row(axis, v, {u: float(x) for u, x in enumerate(m) if not np.isnan(x)}) for v, m in zip(values, matrix)]


def paper_sweep(axis: str) -> options.SweepConfig:
    return options.sweep_config({"axis": axis, "preset": "paper", "repeats": SEEDS}, {}, None, Path("/x"))


# --- the claims call the core the simulations use -------------------------------

def test_claims_are_the_vectorised_core():
    """On 60 sweeps of mixed truths, some with missing runs and with split units
    (ratio > 0), ``best_claim`` and ``trend_claim`` give the verdicts of
    ``stats.order_test`` on the same statistics."""
    rng = np.random.default_rng(10)
    lr_sweep, batch_sweep = paper_sweep("lr"), paper_sweep("batch")
    words = {stats.AGREE: "agree", stats.DISAGREE: "disagree", stats.CANNOT_TELL: "cannot tell"}
    seen = set()
    for k in range(60):
        ratio = 0.2 if k % 3 == 0 else 0.0
        lr_values = statistics(rng, rng.choice([-4.0, 0.0, 3.0], size=6), 1)[0]
        batch_values = statistics(rng, np.sort(rng.choice([-3.0, 0.0, 3.0], size=3)) * rng.choice([-1, 1]), 1)[0]
        if k % 5 == 0:
            lr_values[1, 2] = batch_values[2, 0] = np.nan  # a failed run
        best = claims_lib.best_claim(lr_sweep, rows_of("lr", LRS, lr_values), "lr", (1e-4, 1e-5), ratio)
        core = stats.order_test(lr_values, stats.best_pairs(CLAIMED_LRS, 6), ratio=ratio).verdict
        assert best["verdict"].removesuffix(claims_lib.ON_ONE_SET) == words[int(core)], (k, best)
        assert best["verdict"].endswith(claims_lib.ON_ONE_SET) == (ratio == 0 and core != stats.CANNOT_TELL)
        steps, reverse = stats.rise_pairs(3)
        trend = claims_lib.trend_claim(batch_sweep, rows_of("batch", BATCHES, batch_values), ratio)
        core = stats.order_test(batch_values, steps, reverse, ratio=ratio).verdict
        assert trend["verdict"].removesuffix(claims_lib.ON_ONE_SET) == words[int(core)], (k, trend)
        seen |= {best["verdict"], trend["verdict"]}
    assert {"agree", "disagree", "cannot tell", "agree on this validation set",
            "disagree on this validation set"} <= seen  # every verdict was exercised


# --- "X best" and "X and Y best" ------------------------------------------------

def test_best_claims_keep_their_error_rates():
    """Each wrong verdict of "X best" / "X and Y best" at most 5 % (+ 3 Monte Carlo
    SEs), on equal settings and where the words are false or true."""
    rng = np.random.default_rng(11)
    two_of_six = stats.best_pairs(CLAIMED_LRS, 6)
    # All six equal: the claim is false (agree wrong) and nothing beats the claimed (disagree wrong).
    agree, disagree = rates(stats.order_test(statistics(rng, [0] * 6), two_of_six))
    assert agree <= 0.002 and at_most(disagree), (agree, disagree)  # observed 0.0001, 0.045
    agree, disagree = rates(stats.order_test(statistics(rng, [0] * 3), stats.best_pairs([0], 3)))
    assert at_most(agree) and at_most(disagree), (agree, disagree)  # observed 0.010, 0.047
    # lr 1e-4 far ahead, lr 1e-5 the worst of all six: "1e-4 and 1e-5 best" is false.
    # (Agreeing when the better of the two beat every other setting did so in 88 % of sweeps.)
    means = [0, 0, 1, -6, 0, 0]
    agree, disagree = rates(stats.order_test(statistics(rng, means), two_of_six))
    assert agree == 0.0 and disagree > 0.2, (agree, disagree)  # observed 0, 0.24
    # lr 1e-5 equal to the other four: the closest the words come to true while false.
    agree, _ = rates(stats.order_test(statistics(rng, [0, 0, 0, -6, 0, 0]), two_of_six))
    assert at_most(agree), agree  # observed 0.001
    # batch 5 truly best by a little: the claim holds, disagree is the wrong verdict.
    _, disagree = rates(stats.order_test(statistics(rng, [-0.3, 0, 0]), stats.best_pairs([0], 3)))
    assert at_most(disagree), disagree  # observed 0.019


def test_best_claim_finds_a_planted_best_at_its_stated_power():
    """Batch 5 better than 10 and 15 by the difference the evidence states for 80 %
    joint power (both pairs one-sided at 5 %): agree in at least 80 % of sweeps,
    less 3 Monte Carlo SEs. Per-seed differences have SD sqrt 2; the two pairs
    share batch 5's noise, so they correlate by 1/2."""
    rng = np.random.default_rng(12)
    se = math.sqrt(2 / SEEDS)
    stated = stats.joint_detectable([se, se], SEEDS - 1, [[1, 0.5], [0.5, 1]])
    agree, _ = rates(stats.order_test(statistics(rng, [0, stated, stated]), stats.best_pairs([0], 3)))
    assert agree >= stats.POWER - 3 * monte_carlo_error(stats.POWER), (stated, agree)  # observed 0.81


def test_batch_5_best_by_order_keeps_its_level():
    """Batch 8, 16 and 32 equal (none of the paper's sizes, so "batch 5 best" is
    checked on batch 8 by order), over 5 splits whose differences correlate by
    r / (1 + r), r = 1 (the quick preset's hold-outs): agree and disagree each at
    most 5 % (+ 2 Monte Carlo SEs) of 2,000 sweeps through ``claims.best_claim``,
    whose verdicts are the core's on batch 8 as the claimed setting."""
    rng, sweeps, ratio, splits = np.random.default_rng(18), 2000, 1.0, 5
    rho = ratio / (1 + ratio)
    values = math.sqrt(rho) * rng.normal(size=(sweeps, 3, 1)) + math.sqrt(1 - rho) * rng.normal(size=(sweeps, 3,
                                                                                                       splits))
    cfg = options.sweep_config({"axis": "batch", "preset": "quick", "repeats": splits}, {}, None, Path("/x"))
    sizes = (8, 16, 32)
    assert axes.named(rows_of("batch", sizes, values[0]), "batch", (5,)).here == (8,)
    words = [claims_lib.best_claim(cfg, rows_of("batch", sizes, v), "batch", (5,), ratio)["verdict"] for v in values]
    core = stats.order_test(values, stats.best_pairs([0], 3), ratio=ratio).verdict
    assert words == [{stats.AGREE: "agree", stats.DISAGREE: "disagree"}.get(int(c), "cannot tell") for c in core]
    bound = stats.ALPHA + 2 * monte_carlo_error(stats.ALPHA, sweeps)
    agree, disagree = words.count("agree") / sweeps, words.count("disagree") / sweeps
    assert agree <= bound and disagree <= bound, (agree, disagree)  # observed 0.0095, 0.044


# --- "larger batch, larger loss" --------------------------------------------------

def test_rise_claim_keeps_its_error_rates():
    """Agree needs every step up: where one step is flat or down, agree at most 5 %
    (+ 3 Monte Carlo SEs), however far the last batch size is behind."""
    rng = np.random.default_rng(13)
    steps, reverse = stats.rise_pairs(3)
    agree, disagree = rates(stats.order_test(statistics(rng, [0, 0, 0]), steps, reverse))
    assert at_most(agree) and at_most(disagree), (agree, disagree)  # observed 0.0004, 0.050
    # 5 = 10 < 15: the worst case of the intersection-union test, at its level.
    # (The least-squares slope on the batch size agreed in 94 % of such sweeps.)
    for far in (3.0, 30.0):
        agree, _ = rates(stats.order_test(statistics(rng, [0, 0, far]), steps, reverse))
        assert at_most(agree), (far, agree)  # observed 0.047, 0.050
    # 10 better than 5 by less than a detectable difference, 15 the worst (the slope: 93 %).
    agree, _ = rates(stats.order_test(statistics(rng, [0, -1, 3]), steps, reverse))
    assert at_most(agree), agree  # observed 0.0014
    # 10 the best, 15 a little worse than 5 (the slope: 67 %): disagree is the right verdict.
    agree, disagree = rates(stats.order_test(statistics(rng, [0, -3, 2]), steps, reverse))
    assert agree == 0.0 and disagree > 0.8, (agree, disagree)  # observed 0, 0.88


def test_rise_claim_finds_a_planted_rise_at_its_stated_power():
    """A rise of the step stated for 80 % joint power, equal at each step, is agreed
    in 80 % of sweeps, within 3 Monte Carlo SEs either way: the stated power is
    the power. The successive differences share the middle batch size's noise
    with opposite signs (correlation -1/2); their sample SDs correlate the other
    way, and here the product of the two single powers (0.8945^2 = 0.800) happens
    to match the simulated joint power."""
    rng = np.random.default_rng(14)
    se, corr = math.sqrt(2 / SEEDS), [[1, -0.5], [-0.5, 1]]
    stated = stats.joint_detectable([se, se], SEEDS - 1, corr)
    assert stated == pytest.approx(2.256, abs=0.02)  # 1.6 SDs of a per-seed difference; 0.02 moves 1 % of power
    steps, reverse = stats.rise_pairs(3)
    agree, _ = rates(stats.order_test(statistics(rng, [0, stated, 2 * stated]), steps, reverse))
    assert abs(agree - stats.POWER) <= 3 * monte_carlo_error(stats.POWER), (stated, agree)  # observed 0.79


def test_rise_claim_over_splits_keeps_its_level():
    """With split replicates the steps are tested by the corrected resampled t:
    equal settings over 5 splits whose differences correlate by r / (1 + r)
    (overlapping training sets) agree or disagree at most 5 % (+ 3 SEs) each; the
    plain paired t over the same splits does not."""
    rng = np.random.default_rng(15)
    ratio, splits = 0.2, 5
    rho = ratio / (1 + ratio)
    shared = rng.normal(size=(SWEEPS, 3, 1))  # what every split of a setting shares
    values = math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.normal(size=(SWEEPS, 3, splits))
    steps, reverse = stats.rise_pairs(3)
    agree, disagree = rates(stats.order_test(values, steps, reverse, ratio=ratio))
    assert at_most(agree) and at_most(disagree), (agree, disagree)  # observed 0.0004, 0.046
    _, plain = rates(stats.order_test(values, steps, reverse))
    assert plain > 0.08, plain  # observed 0.11


def test_the_evidence_states_the_joint_power_of_its_own_sweep():
    cfg = paper_sweep("batch")
    matrix = np.array([[0.30, 0.32, 0.31, 0.35], [0.33, 0.36, 0.31, 0.40], [0.41, 0.37, 0.45, 0.42]])
    claim = claims_lib.trend_claim(cfg, rows_of("batch", BATCHES, matrix))
    steps, _ = stats.rise_pairs(3)
    found = stats.order_test(matrix, steps)
    # the per-seed steps: 10 - 5 = 0.03, 0.04, 0.00, 0.05; 15 - 10 = 0.08, 0.01, 0.14, 0.02
    assert np.corrcoef([[0.03, 0.04, 0.0, 0.05], [0.08, 0.01, 0.14, 0.02]])[0, 1] == pytest.approx(
        stats.difference_correlation(matrix, steps)[0, 1])
    step = stats.joint_detectable([found.se[0, 1], found.se[1, 2]], 3, stats.difference_correlation(matrix, steps))
    assert f"agree needs both one-sided tests at 5 % (intersection-union): 80 % power when each batch size is " \
           f"worse than the one before by {step:.4f}" in claim["evidence"]
    assert claim["evidence"].startswith("not distinguishable") and claim["verdict"] == "cannot tell"


def test_joint_power_of_one_pair_is_the_noncentral_t():
    """One pair: the simulated power is the one-sided noncentral t's, within the
    draws' Monte Carlo error (0.4 % of power)."""
    from scipy import stats as scipy_stats

    se, df = 0.5, 4
    critical = scipy_stats.t.ppf(1 - stats.ALPHA, df)
    for difference in (0.5, 1.0, 1.5):
        exact = scipy_stats.nct.sf(critical, df, difference / se)
        assert stats.joint_power(difference, [se], df, [[1.0]]) == pytest.approx(exact, abs=3 * 0.005)


# --- descriptive claims -----------------------------------------------------------

def test_a_diverged_run_is_a_spike_and_no_low_loss():
    spiking, erratic = "batch 10 and 15: loss spikes", "lr 1e-2 and 1e-3: accuracy high but the loss erratic, " \
                                                      "spikes to ~0.8-1.0"
    batch = {c["claim"]: c for c in claims_lib.check(paper_sweep("batch"), rows_of("batch", BATCHES, np.ones((3, 2))),
                                                {"batch=10": [None, None], "batch=15": [None, None, None],
                                                 "batch=5": [None]})}
    assert batch[spiking]["verdict"] == "agree"
    assert "run 1: diverged (counts as a spike)" in batch[spiking]["evidence"]
    assert batch["batch 5: loss below 0.2"]["verdict"] == "disagree"
    assert "run 1: diverged (none of: loss mostly below 0.2)" in batch["batch 5: loss below 0.2"]["evidence"]
    # The erratic claim also needs a high accuracy, which a diverged run does not show.
    lr = {c["claim"]: c for c in claims_lib.check(paper_sweep("lr"), rows_of("lr", LRS, np.ones((6, 2))),
                                             {"lr=0.01": [None], "lr=0.001": [None]})}
    assert lr[erratic]["verdict"] == "disagree" and "diverged (none of: accuracy high)" in lr[erratic]["evidence"]
    assert curves_lib.run_shows(None, ("loss spikes to ~0.8-1.0",)).held is True
    for name in ("accuracy near 1", "loss mostly below 0.2", "accuracy high", "loss mostly 0.2-0.3"):
        assert curves_lib.run_shows(None, (name,)).held is False


@pytest.mark.parametrize("epochs", [20, 5])
def test_the_spike_rule_false_rate_is_the_stated_one(epochs):
    """Runs whose training and validation loss are flat Gaussian noise (SD 1: the
    0.2 floor never binds, the rule's worst case) show a spike, by the property
    the claims use, in ``SPIKE_FALSE[epochs]`` of runs within 3 Monte Carlo SEs
    (plus the stated number's rounding)."""
    rng = np.random.default_rng(16 + epochs)
    runs = 6000
    curves = (0.5 + rng.normal(size=(runs, 2, epochs))).tolist()
    shown = [curves_lib.PROPERTIES["loss spikes"]([{"loss": a, "val_loss": b} for a, b in zip(*c)]).held
             for c in curves]
    rate, stated = np.mean(shown), curves_lib.SPIKE_FALSE[epochs]
    assert abs(rate - stated) <= 3 * monte_carlo_error(stated, runs) + 0.0005, (rate, stated)


# --- the whole table on a null sweep ------------------------------------------------

def null_sweep(rng: np.random.Generator, axis: str, seeds: int = SEEDS, epochs: int = 20):
    """Rows and histories of a sweep in which nothing differs (``claims.NULL_DESIGN``):
    every curve flat noise, loss SD 0.1 about 0.5 plus a level per seed that the
    settings share, accuracy about 0.93; each row's statistic is its runs' mean
    validation loss of the last 3 epochs, as the report takes it."""
    values = LRS if axis == "lr" else BATCHES
    level = 0.5 + 0.05 * rng.standard_normal(seeds)
    loss = (level[None, :, None, None] + 0.1 * rng.standard_normal((len(values), seeds, 2, epochs))).tolist()
    accuracy = (0.93 + 0.01 * rng.standard_normal((len(values), seeds, 2, epochs))).tolist()
    rows, histories = [], {}
    for v, setting_loss, setting_accuracy in zip(values, loss, accuracy):
        r = row(axis, v, {s: stats.tail_mean(c[1]) for s, c in enumerate(setting_loss)}, epochs)
        rows.append(r)
        histories[r["setting"]] = [[{"epoch": e + 1, "loss": lo[0][e], "val_loss": lo[1][e], "accuracy": ac[0][e],
                                     "val_accuracy": ac[1][e]} for e in range(epochs)]
                                   for lo, ac in zip(setting_loss, setting_accuracy)]
    return rows, histories


def wrong(claim: dict) -> bool:
    """A verdict wrong on a null sweep: any comparative agree or disagree, or a
    spike claim's agree (its curves are flat)."""
    comparative = claim["claim"] in {c[0] for c in claims_lib.COMPARATIVE} | {claims_lib.TREND}
    if comparative:
        return claim["verdict"] != "cannot tell"
    return "spikes" in claim["claim"] and claim["verdict"] == "agree"


def null_rate(axis: str, sweeps: int, seed: int) -> float:
    rng, cfg = np.random.default_rng(seed), paper_sweep(axis)
    return float(np.mean([any(wrong(c) for c in claims_lib.check(cfg, *null_sweep(rng, axis)))
                          for _ in range(sweeps)]))


@pytest.mark.parametrize("axis", ["lr", "batch"])
def test_the_stated_chance_of_a_wrong_claim_on_a_null_sweep(axis):
    sweeps = 600  # Monte Carlo SE 0.009 (lr) and 0.010 (batch)
    stated = claims_lib.NULL_ANY_CLAIM[axis]
    rate = null_rate(axis, sweeps, 17)
    assert abs(rate - stated) <= 3 * monte_carlo_error(stated, sweeps), (rate, stated)


# --- the words ---------------------------------------------------------------------

def test_rules_definitions_and_error_rates_cover_every_claim():
    assert claims_lib.DEFINITIONS == "; ".join(claims_lib.RULES)
    assert all(len(rule) <= 320 for rule in claims_lib.RULES)  # a list of short rules, not paragraphs
    claims = {c[0] for c in claims_lib.DESCRIPTIVE} | {c[0] for c in claims_lib.COMPARATIVE} | {claims_lib.TREND}
    assert set(claims_lib.ERROR_RATES) == claims
    assert claims_lib.ERROR_RATES["batch 5 best"].startswith("agree when the claim is false: at most 5 % "
                                                        "(intersection-union")
    assert "3.6 % of runs at 20 epochs (1.4 % at 5" in claims_lib.ERROR_RATES["batch 10 and 15: loss spikes"]
    assert set(claims_lib.NULL_ANY_CLAIM) == {"lr", "batch"}
