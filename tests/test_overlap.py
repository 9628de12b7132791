"""The correction for overlapping splits (engine.study.overlap): its overlaps
and ratios against hand-computed values, its simulation against the
correlation it is built to have, and the report's tests on simulated sweeps of
equal settings: the chosen factor keeps the false 'worse' rate within
``LIMIT`` where today's n_val/n_train does not. The full grid of
docs/overlap.md runs with --run-slow."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.study import overlap, stats

QUICK, PAPER, SIZES, KFOLD = overlap.DESIGNS
NOISE = overlap.SEED_VAR
# A representative cell of each kind, at the doc's sweeps and seed, so these
# are docs/overlap.md's own numbers: (design, splits, settings, seeds, seed noise).
# The no-seed-noise cells are the worst case, where the chosen factor is exact
# and the rate sits near ALPHA; k-fold at 2 splits is exact at any noise.
CELLS = [
    (QUICK, 5, 6, 2, NOISE),   # --preset robust on the lr axis
    (QUICK, 10, 6, 1, 0.0),
    (PAPER, 2, 3, 1, 0.0),
    (SIZES, 3, 3, 1, 0.0),
    (KFOLD, 2, 6, 1, NOISE),
    (KFOLD, 10, 3, 1, 0.0),
]


@pytest.fixture(scope="module")
def cells():
    return [overlap.cell(design, splits, settings, seeds, seed_var)
            for design, splits, settings, seeds, seed_var in CELLS]


# --- by hand ------------------------------------------------------------------

def test_overlaps_by_hand():
    # Hold-out: a random 160 of 200 holds each image with chance 0.8; 40 of 200 with 0.2.
    assert overlap.train_overlap("holdout", 5, 160, 200) == pytest.approx(0.8)
    assert overlap.val_overlap("holdout", 40, 200) == pytest.approx(0.2)
    assert overlap.train_overlap("holdout", 5, 500, 600) == pytest.approx(5 / 6)
    assert overlap.train_overlap("holdout", 5, 300, 600) == pytest.approx(0.5)
    # K folds: two training sets share K - 2 of their K - 1 folds; validation folds are disjoint.
    assert [overlap.train_overlap("kfold", k) for k in (2, 3, 5, 10)] == pytest.approx([0, 0.5, 0.75, 8 / 9])
    assert overlap.val_overlap("kfold") == 0.0
    assert overlap.kfold_sizes(200, 10) == (180, 20) and overlap.kfold_sizes(600, 7) == (515, 85)


def test_correlation_by_hand():
    # 160/40 of 200 at share 0.5: 0.5 * 0.8 + 0.5 * 0.2 = 0.5; seed noise 0.25 of the
    # interaction's per run divides it by 1 + 0.25 (one seed) or 1 + 0.125 (two).
    assert overlap.correlation("holdout", 5, 160, 40, 200) == pytest.approx(0.5)
    assert overlap.correlation("holdout", 5, 160, 40, 200, seed_var=0.25) == pytest.approx(0.4)
    assert overlap.correlation("holdout", 5, 160, 40, 200, seed_var=0.25, seeds=2) == pytest.approx(0.5 / 1.125)
    # 300/100 of 600: 0.5 * 0.5 + 0.5 * 1/6 = 1/3; all from training at share 1: 0.5.
    assert overlap.correlation("holdout", 5, 300, 100, 600) == pytest.approx(1 / 3)
    assert overlap.correlation("holdout", 5, 300, 100, 600, share=1.0) == pytest.approx(0.5)


def test_correction_ratio_golden_values():
    # r = rho / (1 - rho): 0.5 -> 1 (any hold-out of the whole pool at share 0.5), 1/3 -> 0.5,
    # 5 folds 0.375 -> 0.6, 10 folds 4/9 -> 0.8, 2 folds 0 -> 0 (the plain paired t).
    assert overlap.correction_ratio("holdout", 5, 160, 40, 200) == pytest.approx(1.0)
    assert overlap.correction_ratio("holdout", 10, 500, 100, 600) == pytest.approx(1.0)
    assert overlap.correction_ratio("holdout", 5, 300, 100, 600) == pytest.approx(0.5)
    assert overlap.correction_ratio("kfold", 5, 160, 40, 200) == pytest.approx(0.6)
    assert overlap.correction_ratio("kfold", 10, 180, 20, 200) == pytest.approx(0.8)
    assert overlap.correction_ratio("kfold", 2, 100, 100, 200) == 0.0
    # Today's factor: n_val / n_train, 1 / (K - 1) for folds.
    assert overlap.nadeau_bengio_ratio("holdout", 5, 160, 40) == pytest.approx(0.25)
    assert overlap.nadeau_bengio_ratio("kfold", 5, 160, 40) == pytest.approx(0.25)
    assert overlap.nadeau_bengio_ratio("kfold", 10, 180, 20) == pytest.approx(1 / 9)


def test_impossible_designs_are_refused():
    with pytest.raises(ValueError, match="mode"):
        overlap.correction_ratio("bootstrap", 5, 160, 40, 200)
    with pytest.raises(ValueError, match="at least 2 splits"):
        overlap.correction_ratio("holdout", 1, 160, 40, 200)
    with pytest.raises(ValueError, match="pool of 150"):
        overlap.correction_ratio("holdout", 5, 160, 40, 150)


def test_validated_warns_outside_the_grid():
    assert overlap.validated("holdout", 5, 160, 40, 200) is None
    assert overlap.validated("holdout", 10, 500, 100, 600) is None
    assert overlap.validated("kfold", 10, 540, 60, 600) is None
    assert overlap.validated("holdout", 5, 500, 100, 5000) is None  # a larger pool overlaps less
    many = overlap.validated("holdout", 20, 160, 40, 200)
    assert many.startswith("20 splits: ") and "2 to 10 splits" in many and "\n" not in many
    assert overlap.validated("kfold", 11, 540, 60, 600).startswith("11 splits")
    # 1000 of 1100 share 91 % of their images, beyond the 83 % of the paper's 500 of 600.
    close = overlap.validated("holdout", 5, 1000, 100, 1100)
    assert close is not None and "91%" in close and "83%" in close


# --- the simulation -----------------------------------------------------------

def test_simulated_differences_have_the_model_correlation():
    # Built from two Cholesky-correlated parts and seed noise, never from the correction:
    # two splits' differences correlate by (0.5 * 0.8 + 0.5 * 0.2) / (1 + 0.25) = 0.4 and
    # each difference has variance 2 (1 + 0.25).
    rng = np.random.default_rng(1)
    values = overlap.simulate(rng, 100_000, 2, 3, 1, train=0.8, val=0.2, share=0.5, seed_var=0.25)
    assert values.shape == (100_000, 2, 3, 1)
    d = values[:, 1, :, 0] - values[:, 0, :, 0]
    c = np.corrcoef(d.T)
    expected = overlap.correlation("holdout", 3, 160, 40, 200, seed_var=0.25)
    assert c[np.triu_indices(3, 1)] == pytest.approx([expected] * 3, abs=0.01)  # SE of each about 0.003
    assert d.var(axis=0) == pytest.approx([2.5] * 3, rel=0.02)


def test_false_worse_rate_is_the_reports_verdict_in_chunks(monkeypatch):
    rng = np.random.default_rng(2)
    values = overlap.simulate(rng, 50, 3, 4, 2, train=0.5, val=0.1)
    values[:20, 0] -= 30.0  # setting 0 far better in the first 20 sweeps
    direct = stats.family(stats.split_means(values), ratio=0.5).worse.any(axis=-1).mean()
    monkeypatch.setattr(overlap, "CHUNK", 7)  # chunk boundaries inside the batch change nothing
    assert overlap.false_worse_rate(values, 0.5) == direct
    assert direct >= 20 / 50


def test_chosen_correction_holds_in_representative_cells(cells):
    for row in cells:
        assert row["chosen"] <= overlap.LIMIT, row


def test_todays_factor_fails_a_cell(cells):
    # The same sweeps with n_val/n_train: the check can fail, and does for today's factor,
    # far beyond the limit at 10 hold-outs of the quick preset (r = 0.25 against the model's 1).
    assert cells[1]["today"] > 4 * overlap.LIMIT
    # 2 folds: disjoint training sets, so today's r = 1 over-corrects where the chosen r = 0 does not.
    assert cells[4]["today"] < cells[4]["chosen"] <= overlap.LIMIT


@pytest.mark.slow
def test_chosen_correction_holds_in_every_cell():
    rows = overlap.grid()
    assert len(rows) == len(overlap.DESIGNS) * len(overlap.SPLITS) * len(overlap.SETTINGS) * 3
    assert [r for r in rows if r["chosen"] > overlap.LIMIT] == []
    assert sum(r["today"] > overlap.LIMIT for r in rows) > len(rows) / 2


# --- the power cost and the page ----------------------------------------------

def test_detectable_is_stats_with_the_chosen_ratio():
    assert overlap.detectable(QUICK, 10, 15) == stats.detectable_in_sds(10, 15, ratio=1.0)
    assert overlap.detectable(QUICK, 10, 15, "today") == stats.detectable_in_sds(10, 15, ratio=0.25)
    assert overlap.detectable(KFOLD, 5, 3) == stats.detectable_in_sds(5, 3, ratio=0.6)
    rows = overlap.detectable_rows()
    assert len(rows) == 3 * len(overlap.SPLITS) * len(overlap.PAIRS)
    # More splits always help, and more pairs always cost.
    for design in {r["design"] for r in rows}:
        for pairs in overlap.PAIRS:
            sds = [r["chosen"] for r in rows if (r["design"], r["pairs"]) == (design, pairs)]
            assert sds == sorted(sds, reverse=True) and all(math.isfinite(s) for s in sds)
        for splits in overlap.SPLITS:
            few, many = ([r["chosen"] for r in rows if (r["design"], r["splits"], r["pairs"]) == (design, splits, p)]
                         for p in overlap.PAIRS)
            assert few < many


def test_the_page_tables_come_from_main(capsys):
    overlap.main(["--sweeps", "100", "--seed", "3"])
    out = capsys.readouterr().out
    rate_rows = [line for line in out.splitlines() if line.startswith("| hold-out") or line.startswith("| k-fold")]
    grid_rows = len(overlap.DESIGNS) * len(overlap.SPLITS) * len(overlap.SETTINGS)
    assert len(rate_rows) == grid_rows + 4  # the grid, and the share table's 4 rows
    assert "100 simulated sweeps" in out and "seed 3" in out
