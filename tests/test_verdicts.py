"""The report's conclusions against its own tests: simulated sweeps pushed
through the report's analysis, and hand-written sweep folders (no training)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats
import pytest

from engine import options
from engine.study import claims as claims_lib, estimate, plan as plan_lib, ranking as ranking_lib, report, stats

SWEEPS = 10_000


def monte_carlo_error(p: float, n: int = SWEEPS) -> float:
    return math.sqrt(p * (1 - p) / n)


# --- simulations ----------------------------------------------------------------

def test_equal_settings_are_rarely_called_worse():
    """6 settings x 5 seeds, all equal, with a seed effect shared by the settings:
    the chance of any false "worse" stays within 5.5 % (a data-chosen best
    tested against the rest gave 9 %)."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(SWEEPS, 6, 5)) + rng.normal(size=(SWEEPS, 1, 5))
    tests = stats.family(values)
    false_worse = tests.worse.any(axis=-1).mean()
    assert false_worse <= 0.055, false_worse
    assert (tests.best_set.sum(axis=-1) == 6).mean() == 1 - false_worse  # the whole family is the best set


def test_a_planted_difference_is_found_at_the_stated_power():
    """One setting better by the difference the report states as detectable with
    80 % power is found better than another in at least 80 % of sweeps (less
    3 Monte Carlo SEs); so is the issue's 2 seed-SDs at its stated power."""
    rng = np.random.default_rng(1)
    pairs = 15
    sd = 1.0  # of each setting's statistic; per-seed differences have SD sqrt 2
    stated = stats.detectable_in_sds(5, pairs) * sd * math.sqrt(2)
    values = sd * rng.normal(size=(SWEEPS, 6, 5))
    values[:, 0] -= stated
    tests = stats.family(values)
    found = tests.beats[:, 0, 1].mean()
    assert found >= stats.POWER - 3 * monte_carlo_error(stats.POWER), found
    assert tests.best_set[:, 0].mean() >= 0.99  # the better setting stays in the best set
    # 2 seed-SDs: the power stated for it (at the Bonferroni level, a lower bound for Holm) holds.
    values = sd * rng.normal(size=(SWEEPS, 6, 5))
    values[:, 0] -= 2 * sd
    promised = stats.power(2 / math.sqrt(2) * math.sqrt(5), 4, stats.ALPHA / pairs)
    found = stats.family(values).beats[:, 0, 1].mean()
    assert promised > 0.1 and found >= promised - 3 * monte_carlo_error(promised), (found, promised)


def test_the_report_ranks_with_the_simulated_analysis():
    rows = [{"setting": f"s{i}", "statistic_by_unit": dict(enumerate(v)), "statistic": float(np.mean(v)),
             "flags": "", "final_val_loss": None} for i, v in enumerate(np.array([[0.1, 0.12, 0.11],
                                                                                   [0.3, 0.33, 0.31],
                                                                                   [0.12, 0.09, 0.13]]))]
    ranking = ranking_lib.rank(rows)
    tests = stats.family(claims_lib.unit_matrix(rows))
    assert ranking["best_set"] == ["s0", "s2"] == [r["setting"] for r, best in zip(rows, tests.best_set) if best]
    assert ranking["best"] is None and "**" not in ranking["text"]  # no bold winner for a set of two
    assert "cannot tell which of 2 settings (s0, s2)" in ranking["text"]
    worse = next(c for c in ranking["comparisons"] if c["setting"] == "s1")
    assert worse["verdict"] == "worse (than s0, s2)" and worse["p_holm"] == pytest.approx(tests.p_holm[0, 1])
    # The smallest detectable difference: 80 % power at 0.05 / 3 pairs for this comparison's se and df.
    assert worse["detectable"] == pytest.approx(stats.detectable(tests.se[0, 1], 2, 0.05 / 3))
    # Its interval is simultaneous over the 3 pairs (Bonferroni): valid for a leader the data picked.
    half = (worse["interval"][1] - worse["interval"][0]) / 2
    assert half == pytest.approx(scipy_stats.t.ppf(1 - 0.05 / 6, 2) * tests.se[0, 1])
    # No power computed from the observed difference (it says nothing the p-value does not).
    assert "would take" not in ranking["text"] and "resolv" not in ranking["text"]


def test_power_numbers_by_hand():
    # The paired t at 0.05 with 80 % power: 11.6 SDs with 2 seeds, 3.3 with 3, 1.7 with 5 (noncentral t).
    assert [stats.detectable_in_sds(n, 1) for n in (2, 3, 5)] == pytest.approx([11.6, 3.3, 1.7], abs=0.06)
    assert stats.power(0.0, 4, 0.05) == pytest.approx(0.05)
    n = stats.repeats_needed(1.0, 1.0, 1)
    assert stats.power(math.sqrt(n), n - 1, 0.05) >= 0.8 > stats.power(math.sqrt(n - 1), n - 2, 0.05)


# --- hand-written sweep folders -------------------------------------------------

def write_trial(folder: Path, val_losses: list[float], status: str = "done", reason: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {"status": status, "bn_momentum": 0.9} | ({"reason": reason} if reason else {})
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if status == "failed":
        return
    with open(folder / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "loss", "val_loss", "accuracy", "val_accuracy", "val_auc",
                                               "seconds", "images_per_second"])
        writer.writeheader()
        for i, v in enumerate(val_losses):
            writer.writerow({"epoch": i + 1, "loss": v, "val_loss": v, "accuracy": 0.5, "val_accuracy": 0.5,
                             "val_auc": 0.5, "seconds": 1.0, "images_per_second": 10.0})


def sweep_folder(out: Path, values: dict, **config) -> options.SweepConfig:
    """A finished sweep's folder: ``values(setting, seed)`` gives each trial's val
    losses, or ("failed", reason) / ("diverged", losses)."""
    cfg = options.sweep_config({"axis": "batch", "preset": "quick", "model": "TinyCNN", "weights": "none",
                                "batch_sizes": (5, 10, 15), "lrs": (1e-4,), "repeats": 3, "splits": 1, "epochs": 3,
                                **config},
                               {}, Path("/records"), out)
    (out / "sweep.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"config": cfg.to_json(), "command": ["compare", "--out", str(out)],
                                                "choice": {"precision": "float32", "xla": "off"},
                                                "deviations": [], "machine": {}}))
    for trial in plan_lib.trials(cfg):
        given = values(trial.setting, trial.config.seed)
        if isinstance(given, tuple):
            status, detail = given
            write_trial(trial.config.out, detail if status == "diverged" else [], status,
                        detail if status == "failed" else "")
        else:
            write_trial(trial.config.out, given)
    return cfg


@pytest.mark.parametrize("scaling", ["none", "sqrt"])
def test_a_sweep_that_learns_nothing_cannot_tell(tmp_path, scaling):
    """Done when: a batch sweep where nothing is learned says cannot tell for every
    comparative claim, with --lr-scaling sqrt too (which still checks its batch claims)."""
    rng = np.random.default_rng(5)
    noise = {(b, s): list(0.69 + 0.02 * rng.standard_normal(3)) for b in (5, 10, 15) for s in range(3)}
    sweep_folder(tmp_path, lambda setting, seed: noise[(int(setting.split("=")[1]), seed)], lr_scaling=scaling)
    written = report.write(tmp_path)
    claims = {c["claim"]: c for c in written["claims"]}
    assert {"batch 5 best", "larger batch, larger loss"} <= set(claims)
    for name in ("batch 5 best", "larger batch, larger loss"):
        assert claims[name]["verdict"] == "cannot tell", claims[name]
    assert written["ranking"]["best"] is None and len(written["ranking"]["best_set"]) == 3
    text = (tmp_path / "report.md").read_text()
    # The first screen: what was run, the answer (every val AUC is 0.5: it
    # says first that nothing was learned), the claims with their reasons and
    # what would decide them, all within the first 15 lines.
    first = text.split("\n\n")
    assert first[0] == "# batch study (quick preset)"
    assert first[1].startswith("**What was run:** 3 settings x 3 seeds on the records' own split")
    assert first[2].startswith("**Answer (validation only):** **No setting learned**")
    assert "No setting distinguishable: none has a significantly higher val loss than another" in first[2]
    table = first[3].splitlines()
    assert table[0] == "| the paper's claim | verdict | why | what would decide it |"
    assert "| batch 5 best | cannot tell | 3 seeds leave 2 degrees of freedom: 80 % power only for differences " \
           "≥ 2.7 SDs (5 seeds: 1.6) | `--repeats 5` |" in table
    assert "| batch 10 and 15: loss spikes | cannot tell | the spike rule needs 5 epochs; the runs have 3 | " \
           "`--epochs 5` |" in table
    assert set(table) <= set(text.splitlines()[:15])
    assert "Scope: the comparisons describe this one train/val split only (`--splits 1`)" in text
    assert ("Comparisons: paired t over 3 seeds on this validation set, Holm over 3 pairs; the design detects with "
            "80 % power a difference in the ranking statistic of") in text
    if scaling == "sqrt":
        assert "batch 15: lr 0.000173, 3 epochs" in claims["batch 5 best"]["evidence"]


def test_divergence_counts_against_a_setting_and_failures_are_missing(tmp_path):
    """2 of 3 runs of batch 5 diverge and its survivor is the lowest run of the
    sweep: batch 5 does not lead. A failed run is missing, listed with its reason
    and rerun command, and a setting with only failed runs is not ranked."""
    table = {("batch=5", 0): [0.3, 0.1, 0.1], ("batch=5", 1): ("diverged", [0.5, math.nan]),
             ("batch=5", 2): ("diverged", [0.4, 0.2, math.inf]),
             ("batch=10", 0): [0.2] * 3, ("batch=10", 1): [0.21] * 3, ("batch=10", 2): ("failed", "MemoryError: oom"),
             ("batch=15", 0): [0.31] * 3, ("batch=15", 1): [0.30] * 3, ("batch=15", 2): [0.29] * 3}
    sweep_folder(tmp_path, lambda setting, seed: table[(setting, seed)])
    written = report.write(tmp_path)
    rows = {r["setting"]: r for r in written["rows"]}
    assert rows["batch=5"]["statistic_by_unit"] == {0: pytest.approx(0.5 / 3), 1: 0.31, 2: 0.31}
    assert rows["batch=10"]["statistic_by_unit"] == pytest.approx({0: 0.2, 1: 0.21})  # the failed seed is missing
    assert written["ranking"]["leader"] == "batch=10"
    text = (tmp_path / "report.md").read_text()
    assert "2 of 3 diverged" in text and "counts as the sweep's worst finished run" in text
    assert "batch10_seed2: failed (MemoryError: oom); rerun: `engine compare --out" in text
    assert "--trial batch10_seed2`" in text


def test_a_setting_whose_runs_all_failed_is_not_ranked(tmp_path):
    sweep_folder(tmp_path, lambda setting, seed: ("failed", "Killed") if setting == "batch=15" else [0.3, 0.2, 0.2])
    written = report.write(tmp_path)
    assert written["ranking"]["not_ranked"] == [{"setting": "batch=15", "flags": "3 of 3 failed (Killed)"}]
    assert "batch=15" not in written["ranking"]["best_set"]


def test_dry_run_says_what_the_design_can_detect():
    one = options.sweep_config({"axis": "batch", "repeats": 1}, {}, None, Path("/x"))
    assert estimate.repeats_summary(one)["text"].startswith("one run per setting (--repeats 1): no comparative verdict")
    # --repeats 3 without --splits: 3 hold-outs of a 160/40 pool of 200, one seed each, the corrected t (r = 1).
    counts = {"train": 160, "val": 40, "pool": 200}
    three = estimate.repeats_summary(options.sweep_config({"axis": "batch", "repeats": 3}, {}, None, Path("/x")),
                                     counts)
    assert three["ratio"] == pytest.approx(1.0) and three["warning"] is None
    assert three["detectable_sds"] == pytest.approx(stats.detectable_in_sds(3, 3, ratio=1.0), abs=0.05)
    assert three["text"].startswith("3 splits x 1 seed: each of the 3 comparisons between settings (corrected "
                                    "resampled t over the splits, r = 1) detects with 80 % power only differences "
                                    "of at least 11.3 SDs of a per-split difference; 5 splits would detect 5.6")
    # --splits 1: 3 seeds on one validation set, 80 % power at 0.05 / 3 with 3 seeds.
    seeds = estimate.repeats_summary(options.sweep_config({"axis": "batch", "repeats": 3, "splits": 1}, {}, None,
                                                       Path("/x")))
    assert seeds["detectable_sds"] == pytest.approx(stats.detectable_in_sds(3, 3), abs=0.05)
    assert "detects with 80 % power differences of at least 5.7 SDs of a per-seed difference, on this validation " \
           "set only" in seeds["text"]


def test_batchnorm_line_gives_each_settings_residual_share():
    from engine.study.report import momentum_text

    rows = [{"setting": f"batch={b}", "batch_size": b, "bn_momentum": [0.9]} for b in (8, 16, 32)]
    text = momentum_text(rows, 160, "moving")
    # 0.9 ** 20, 0.9 ** 10, 0.9 ** 5 of the starting statistics after one epoch of 160 images
    assert "batch=8 12.2% (momentum 0.9, 20 steps)" in text
    assert "batch=16 34.9% (momentum 0.9, 10 steps)" in text
    assert "batch=32 59.0% (momentum 0.9, 5 steps)" in text
    assert "differs across the settings" in text
    same = momentum_text([{"setting": "lr=0.1", "batch_size": 5, "bn_momentum": [0.99]},
                          {"setting": "lr=0.2", "batch_size": 5, "bn_momentum": [0.99]}], 500, "moving")
    assert "36.6%" in same and "differs" not in same  # 0.99 ** 100
    assert "nothing of their starting values is left" in momentum_text(rows, 160, "precise")


def test_a_damaged_trial_file_is_a_failed_trial_not_a_traceback(tmp_path):
    cfg = sweep_folder(tmp_path, lambda setting, seed: [0.3, 0.2, 0.2])
    trial = next(t for t in plan_lib.trials(cfg) if t.setting == "batch=10")
    (trial.config.out / "metrics.json").write_text('{"status": "do')  # cut short
    other = next(t for t in plan_lib.trials(cfg) if t.setting == "batch=15")
    (other.config.out / "history.csv").write_text("epoch,val_loss\n1,zz\n")
    written = report.write(tmp_path)
    rows = {r["setting"]: r for r in written["rows"]}
    assert rows["batch=10"]["repeats_done"] == 2 and "1 of 3 failed" in rows["batch=10"]["flags"]
    assert "metrics.json is damaged" in rows["batch=10"]["flags"]
    assert "history.csv is damaged" in rows["batch=15"]["flags"]


def test_a_margin_stated_before_training_finds_an_equal_pair_equivalent(tmp_path):
    # batch 5 and 10 equal up to tiny seed noise, batch 15 worse by 0.2: within a margin of 0.05, 5 and 10 are
    # equivalent, and 15 is not within it.
    level = {"batch=5": 0.30, "batch=10": 0.30, "batch=15": 0.50}
    shift = {0: 0.0, 1: 0.003, 2: -0.002}
    sweep_folder(tmp_path, lambda setting, seed: [level[setting] + shift[seed] + (0.001 if setting == "batch=10"
                                                                                  else 0.0)] * 3, margin=0.05)
    written = report.write(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "## Within the margin of 0.05 (stated before training)" in text
    assert "- batch=5 and batch=10: equivalent within 0.05" in text
    assert "batch=15: best within" not in text
    assert json.loads((tmp_path / "sweep.json").read_text())["config"]["margin"] == 0.05
    assert written["ranking"]["leader"] == "batch=5"


def test_simultaneous_intervals_against_a_data_chosen_leader_keep_their_level():
    # 6 equal settings x 5 seeds (a seed effect shared by the settings): the report's intervals of every setting
    # against the lowest-statistic one, simultaneous over the 15 pairs (Bonferroni), exclude 0 in at most 5 % of
    # sweeps; unadjusted 95 % intervals against the same data-chosen leader do so far more often.
    rng = np.random.default_rng(11)
    sweeps, settings, seeds = 4000, 6, 5
    values = rng.normal(0, 1, (sweeps, 1, seeds)) + rng.normal(0, 0.5, (sweeps, settings, seeds))
    tests = stats.family(values)
    leader = np.argmin(values.mean(axis=-1), axis=-1)
    rows = np.arange(sweeps)
    difference, se, df = (x[rows, leader] for x in (tests.difference, tests.se, tests.df))
    others = np.arange(settings)[None, :] != leader[:, None]

    def excludes_zero(level):
        half = scipy_stats.t.ppf(1 - level / 2, df) * se
        return (((difference - half > 0) | (difference + half < 0)) & others).any(axis=-1).mean()
    simultaneous, unadjusted = excludes_zero(0.05 / 15), excludes_zero(0.05)
    assert simultaneous <= 0.05 + 3 * monte_carlo_error(0.05), simultaneous
    assert unadjusted > 0.2, unadjusted
    # A setting truly worse by 3 SDs of a per-seed difference is excluded from 0 most of the time.
    planted = values.copy()
    planted[:, 5] += 3 * 0.5 * np.sqrt(2)
    tests = stats.family(planted)
    leader = np.argmin(planted.mean(axis=-1), axis=-1)
    difference, se, df = (x[rows, leader, 5] for x in (tests.difference, tests.se, tests.df))
    half = scipy_stats.t.ppf(1 - 0.05 / 30, df) * se
    assert ((difference - half > 0) & (leader != 5)).mean() > 0.5
