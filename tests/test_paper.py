"""The paper's claims checked on hand-made histories and statistics, and the deviations from its setup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine import options
from engine.study import axes, claims as claims_lib, curves, paper


def history(loss, val_loss, acc=None, val_acc=None):
    acc = acc or [0.5] * len(loss)
    val_acc = val_acc or acc
    return [{"epoch": i + 1, "loss": a, "val_loss": b, "accuracy": c, "val_accuracy": d}
            for i, (a, b, c, d) in enumerate(zip(loss, val_loss, acc, val_acc))]


def row(setting, lr, batch, by_seed, sweep_lr=None, epochs=3):
    return {"setting": setting, "lr": lr, "batch_size": batch, "statistic_by_unit": dict(enumerate(by_seed)),
            "sweep_lr": lr if sweep_lr is None else sweep_lr, "epochs": epochs}


def sweep(axis, **values):
    return options.sweep_config({"axis": axis, "preset": "paper", **values}, {}, None, Path("/x"))


def claims_of(cfg, rows, histories=None):
    return {c["claim"]: c for c in claims_lib.check(cfg, rows, histories or {})}


def test_spike_rule_by_hand():
    # changes 0.2, 0.15, 0.15, 0.05: median 0.15, so a rise must exceed max(0.2, 7 x 0.15) = 1.05
    assert curves.spike_threshold([0.5, 0.3, 0.45, 0.6, 0.55]) == pytest.approx(1.05)
    assert curves.spikes([0.5, 0.3, 0.45, 0.6, 0.55]) == []
    # changes 0.01 x 4 and two of 0.8: median 0.01, threshold 0.2; the jump rises 0.8 above the minimum 0.47
    calm = [0.5, 0.49, 0.48, 1.27, 0.47, 0.46, 0.45]
    assert curves.spike_threshold(calm) == 0.2
    assert curves.spikes(calm) == [pytest.approx((1.27, 0.79))]
    assert curves.spikes([0.9, 0.8, 0.7]) == []
    assert curves.share([0.1, 0.3, 0.15, 0.5], lambda v: v < 0.2) == 0.5


def test_spike_rule_is_robust_to_noise():
    rng = np.random.default_rng(6)
    # A flat curve with epoch-to-epoch SD 0.05 over 20 epochs: at most 5 % of 1,000 runs show a spike.
    flat = 0.5 + 0.05 * rng.standard_normal((1000, 20))
    false = np.mean([bool(curves.spikes(list(c))) for c in flat])
    assert false <= 0.05, false
    # A single 0.8 jump on such a curve is found.
    jumped = flat[:100].copy()
    jumped[:, 12] += 0.8
    assert np.mean([any(e[1] > 0.6 for e in curves.spikes(list(c))) for c in jumped]) >= 0.95
    # An erratic curve, as the paper's lr 1e-2: calm stretches broken by jumps of 0.5-1.0 up and back down.
    erratic = list(0.25 + 0.02 * rng.standard_normal(20))
    for epoch, jump in ((3, 0.6), (8, 1.0), (12, 0.5), (16, 0.8)):
        erratic[epoch] += jump
    assert len(curves.spikes(erratic)) == 4
    h = history(erratic, erratic, [0.95] * 20)
    assert curves.PROPERTIES["loss spikes to ~0.8-1.0"](h).held
    assert max(rise for _, rise in curves.spikes(erratic)) == pytest.approx(1.0, abs=0.1)
    assert curves.PROPERTIES["loss spikes"](h).numbers.startswith("largest spike +")
    # Fewer than 5 epochs cannot tell a spike from noise.
    assert curves.PROPERTIES["loss spikes"](history([0.2, 0.9, 0.2], [0.2, 0.9, 0.2])).held is None


def test_properties_and_their_numbers():
    good = history([0.1, 0.15, 0.3, 0.1], [0.1, 0.19, 0.25, 0.12], [0.97] * 4, [0.96, 0.99, 0.9, 0.95])
    shown = curves.PROPERTIES["loss mostly below 0.2"](good)
    assert shown.held and shown.numbers == "loss < 0.2 (train/val) in 75%/75% of epochs"
    assert curves.PROPERTIES["accuracy near 1"](good).held
    worse_val = history([0.1] * 4, [0.1, 0.3, 0.3, 0.3])  # train mostly below 0.2, val not
    assert not curves.PROPERTIES["loss mostly below 0.2"](worse_val).held


def test_a_claim_needs_one_run_showing_all_its_properties():
    cfg = sweep("lr", lrs=(1e-2, 1e-4, 1e-6))
    rows = [row("lr=0.0001", 1e-4, 5, [0.3, 0.3])]
    accurate_but_lossy = history([0.5] * 4, [0.5] * 4, [0.99] * 4)  # accuracy near 1, loss high
    low_loss_but_inaccurate = history([0.1] * 4, [0.1] * 4, [0.8] * 4)  # loss below 0.2, accuracy lower
    claim = claims_of(cfg, rows, {"lr=0.0001": [accurate_but_lossy, low_loss_but_inaccurate]})[
        "lr 1e-4 and 1e-5: accuracy near 1, loss mostly below 0.2"]
    assert claim["verdict"] == "disagree" and "0 of 2 runs show all" in claim["evidence"]
    assert "acc >= 0.95 (train/val) in 100%/100% of epochs; loss < 0.2 (train/val) in 0%/0% of epochs" in \
        claim["evidence"]
    both = history([0.1] * 4, [0.1] * 4, [0.99] * 4)
    split = claims_of(cfg, rows, {"lr=0.0001": [both, low_loss_but_inaccurate]})
    assert split["lr 1e-4 and 1e-5: accuracy near 1, loss mostly below 0.2"]["verdict"] == "cannot tell"
    # A diverged run (None) shows none of the properties.
    diverged = claims_of(cfg, rows, {"lr=0.0001": [both, None, None]})
    assert diverged["lr 1e-4 and 1e-5: accuracy near 1, loss mostly below 0.2"]["verdict"] == "disagree"
    assert "run 2: diverged" in diverged["lr 1e-4 and 1e-5: accuracy near 1, loss mostly below 0.2"]["evidence"]


def test_descriptive_verdicts_on_one_run_are_labelled():
    cfg = sweep("lr", lrs=(1e-2, 1e-4, 1e-6))
    rows = [row("lr=0.01", 1e-2, 5, [0.5]), row("lr=0.0001", 1e-4, 5, [0.1]), row("lr=1e-06", 1e-6, 5, [0.26])]
    erratic = list(0.25 + np.array([0.01, -0.01, 0.0, 0.8, 0.0, 0.01, -0.01, 0.0, 0.7, 0.0]))
    best = history([0.1] * 6, [0.15] * 6, [0.99] * 6)
    slow = history([0.5, 0.28, 0.25, 0.22, 0.25, 0.24], [0.45, 0.29, 0.26, 0.24, 0.23, 0.25])
    claims = claims_of(cfg, rows, {"lr=0.01": [history(erratic, erratic, [0.95] * 10)], "lr=0.0001": [best],
                                   "lr=1e-06": [slow]})
    near_one = claims["lr 1e-4 and 1e-5: accuracy near 1, loss mostly below 0.2"]
    assert near_one["verdict"] == "agree" and near_one["runs_label"] == "1 run"
    assert "setting absent: the sweep has no lr 1e-05" in near_one["evidence"]
    erratic_claim = claims["lr 1e-2 and 1e-3: accuracy high but the loss erratic, spikes to ~0.8-1.0"]
    assert erratic_claim["verdict"] == "agree" and "largest spike +0.81 to 1.05" in erratic_claim["evidence"]
    assert claims["lr 1e-6 and 1e-7: acceptable, loss mostly 0.2-0.3"]["verdict"] == "agree"
    # One run per setting: comparative claims cannot be told, with the reason.
    assert claims["lr 1e-4 and 1e-5 best"]["verdict"] == "cannot tell"
    assert claims["lr 1e-4 and 1e-5 best"]["evidence"].startswith("too few seeds")
    assert not any(c.startswith("batch") for c in claims)  # the lr axis touches no batch claim


def test_best_claim_follows_the_order_tests():
    cfg = sweep("batch")
    clear = [row("batch=5", 1e-4, 5, [0.10, 0.11, 0.12]), row("batch=10", 1e-4, 10, [0.30, 0.32, 0.31]),
             row("batch=15", 1e-4, 15, [0.50, 0.49, 0.52])]
    claims = claims_of(cfg, clear)
    # Seeds on one validation set: the comparative verdicts say so.
    assert claims["batch 5 best"]["verdict"] == "agree on this validation set"
    # paired differences 0.20, 0.21, 0.19: mean 0.2, sd 0.01, t = 0.2 / (0.01 / sqrt 3) = 20 sqrt 3 on 2 df,
    # one-sided p = (1 - t / sqrt(t^2 + 2)) / 2 = 0.000416
    assert "batch 10 minus batch 5: +0.2000 (one-sided p 0.00042; over 3 seeds)" in claims["batch 5 best"]["evidence"]
    assert "80 % power when every other setting is worse by" in claims["batch 5 best"]["evidence"]
    # every step up: 10 - 5 as above, 15 - 10 = 0.20, 0.17, 0.21
    assert claims["larger batch, larger loss"]["verdict"] == "agree on this validation set"
    assert "80 % power when each batch size is worse than the one before by" in \
        claims["larger batch, larger loss"]["evidence"]
    # Rank 1 by a hair is no longer "best": the tests cannot tell.
    close = [row("batch=5", 1e-4, 5, [0.30, 0.52, 0.40]), row("batch=10", 1e-4, 10, [0.45, 0.41, 0.38]),
             row("batch=15", 1e-4, 15, [0.42, 0.35, 0.50])]
    claims = claims_of(cfg, close)
    assert claims["batch 5 best"]["verdict"] == "cannot tell"
    assert claims["batch 5 best"]["evidence"].startswith("not distinguishable: not every other setting is "
                                                         "significantly worse")
    assert claims["larger batch, larger loss"]["verdict"] == "cannot tell"
    # Another setting significantly better: disagree, and the order the other way: disagree.
    reverse = [row("batch=5", 1e-4, 5, [0.50, 0.51, 0.52]), row("batch=10", 1e-4, 10, [0.30, 0.32, 0.31]),
               row("batch=15", 1e-4, 15, [0.10, 0.11, 0.12])]
    claims = claims_of(cfg, reverse)
    assert claims["batch 5 best"]["verdict"] == claims["larger batch, larger loss"]["verdict"] == \
        "disagree on this validation set"
    assert "reverse order: smallest one-sided Holm p over 3 pairs" in claims["larger batch, larger loss"]["evidence"]
    assert "(that batch 15 is better than batch 5)" in claims["larger batch, larger loss"]["evidence"]
    # With split replicates (ratio > 0) the words are the plain ones.
    split = {c["claim"]: c for c in claims_lib.check(cfg, reverse, {}, 0.2)}
    assert split["batch 5 best"]["verdict"] == "disagree"
    assert "over 3 splits" in split["batch 5 best"]["evidence"]
    assert {c["claim"]: c for c in claims_lib.check(cfg, reverse, {}, one_split=False)}["batch 5 best"]["verdict"] == \
        "disagree"


def test_two_setting_claim():
    cfg = sweep("lr", lrs=(1e-2, 1e-4, 1e-5))
    rows = [row("lr=0.01", 1e-2, 5, [0.60, 0.62, 0.61]), row("lr=0.0001", 1e-4, 5, [0.10, 0.12, 0.11]),
            row("lr=1e-05", 1e-5, 5, [0.30, 0.28, 0.33])]
    # lr 1e-2, the only other setting, is significantly worse than lr 1e-4 and than lr 1e-5.
    claim = claims_of(cfg, rows)["lr 1e-4 and 1e-5 best"]
    assert claim["verdict"] == "agree on this validation set"
    assert "lr 0.01 minus lr 0.0001: +0.5000" in claim["evidence"] and "lr 0.01 minus lr 1e-05: +0.3067" in \
        claim["evidence"]
    rows[0]["statistic_by_unit"] = {0: 0.01, 1: 0.02, 2: 0.015}  # lr 1e-2 better than both
    assert claims_of(cfg, rows)["lr 1e-4 and 1e-5 best"]["verdict"] == "disagree on this validation set"
    # lr 1e-4 far ahead but lr 1e-5 behind lr 1e-2: "1e-4 and 1e-5 best" is false and does not agree.
    rows[0]["statistic_by_unit"] = {0: 0.40, 1: 0.41, 2: 0.42}
    rows[2]["statistic_by_unit"] = {0: 0.50, 1: 0.52, 2: 0.51}
    assert claims_of(cfg, rows)["lr 1e-4 and 1e-5 best"]["verdict"] == "disagree on this validation set"


def test_trend_slope_by_hand():
    from engine.study import stats
    batch = np.array([5.0, 10.0, 15.0])
    values = np.outer(batch, [0.01, 0.02, 0.03])  # seeds whose statistic grows 0.01, 0.02, 0.03 per image
    values[1, 0] += 0.05  # the middle point moves no least-squares slope: sum((x - 10) y) / 50
    found = stats.trend(values, batch)
    # slopes 0.01, 0.02, 0.03: mean 0.02, sd 0.01, t = 0.02 / (0.01 / sqrt 3) = 2 sqrt 3 with 2 df,
    # whose two-sided p is 1 - t / sqrt(t^2 + 2) in closed form
    t = 2 * 3 ** 0.5
    assert found.difference == pytest.approx(0.02) and found.p == pytest.approx(1 - t / (t * t + 2) ** 0.5)
    assert found.method == "one-sample t on the per-seed slopes over 3 seeds"
    values[0, 2] = np.nan  # a seed missing in one batch size is left out of every slope
    assert stats.trend(values, batch).method.endswith("over 2 seeds")


def test_batch_claims_survive_lr_scaling():
    cfg = sweep("batch", lr_scaling="sqrt", repeats=3)
    lrs = {5: 1e-4, 10: 1e-4 * 2 ** 0.5, 15: 1e-4 * 3 ** 0.5}
    flat = [0.69, 0.70, 0.71]
    rows = [row(f"batch={b}", lrs[b], b, [v + 0.001 * b * (-1) ** i for i, v in enumerate(flat)], sweep_lr=1e-4)
            for b in (5, 10, 15)]
    claims = claims_of(cfg, rows)
    assert {"batch 5 best", "larger batch, larger loss", "batch 5: loss below 0.2"} <= set(claims)
    assert claims["batch 5 best"]["verdict"] == "cannot tell"
    assert claims["larger batch, larger loss"]["verdict"] == "cannot tell"
    assert "batch 10: lr 0.000141, 3 epochs" in claims["batch 5 best"]["evidence"]


def test_absent_setting_and_single_batch():
    # Some of the paper's batch sizes (10, 15) but not 5: no order mapping, batch 5 is absent.
    cfg = sweep("batch", batch_sizes=(10, 15, 20))
    rows = [row(f"batch={b}", 1e-4, b, v) for b, v in ((10, [0.3, 0.31]), (15, [0.2, 0.22]), (20, [0.4, 0.38]))]
    claims = claims_of(cfg, rows)
    assert claims["batch 5 best"] == {"claim": "batch 5 best", "shown": "batch 5 best", "verdict": "cannot tell",
                                      "runs_label": "", "evidence": "setting absent: the sweep has no batch 5",
                                      "reason": "the sweep has no batch 5", "remedy": "--batch-sizes 5,10,15"}
    assert claims["batch 5: loss below 0.2"]["verdict"] == "cannot tell"
    single = claims_of(sweep("batch", batch_sizes=(5,)), [row("batch=5", 1e-4, 5, [0.3, 0.31])])
    assert single["larger batch, larger loss"]["evidence"] == "nothing to compare with: a single batch size"
    assert single["batch 5 best"]["verdict"] == "cannot tell"
    assert single["batch 5 best"]["reason"] == "a single batch size: nothing to compare with"


def test_deviations_of_the_paper_preset():
    manifest = {"image_size": [299, 299], "resize": "nearest", "command": "engine build-records ...",
                "splits": {"train": {"count": 500}, "val": {"count": 100}, "test": {"count": 100}}}
    cfg = sweep("lr")
    # The paper preset resolves to 0.99 (Keras' momentum), float32 and the last epoch's model.
    assert cfg.base.bn_momentum == "keras" and cfg.base.precision == "float32" and cfg.base.select == "last"
    choice = {"precision": "float32", "xla": "off", "bn_momentum": 0.99}
    listed = {d["what"] for d in paper.deviations(cfg, manifest, choice, {"cpu": "AMD EPYC", "gpus": []})}
    assert listed == {"loss", "device"}
    quick = options.sweep_config({"axis": "batch"}, {}, None, Path("/x"))
    synthetic = dict(manifest, image_size=[96, 96], resize="area", command="(embedded synthetic set, seed 0, 96 px)")
    found = {d["what"]: d for d in paper.deviations(quick, synthetic, {"precision": "mixed_bfloat16", "xla": "off",
                                                                       "bn_momentum": 0.9}, {"gpus": []})}
    for what in ("weights", "epochs", "image size", "resize", "precision", "BatchNorm momentum", "data"):
        assert what in found, what
    assert "model scored" not in found  # the quick preset scores the last epoch's model, as the paper
    assert found["BatchNorm momentum"]["here"] == "0.9" and found["weights"]["here"] == "none (trained from scratch)"


# --- batch claims by order, and why a claim cannot tell ------------------------------

CALM = [0.15, 0.12, 0.1, 0.1, 0.09, 0.08]  # loss mostly below 0.2, no spike
SPIKY = [0.3, 0.29, 0.28, 1.0, 0.27, 0.26]  # a rise of 0.72 over a median change of 0.01: a spike


def five_splits(*sizes):
    """The quick preset's batch axis with 5 splits of the pool (``--repeats 5``)."""
    return options.sweep_config({"axis": "batch", "preset": "quick", "repeats": 5, "batch_sizes": sizes}, {}, None,
                                Path("/x"))


def split_claims(cfg, rows, histories=None, ratio=1.0):
    """Claims over split replicates (corrected resampled t, r = 1: the quick preset's hold-outs)."""
    return {c["claim"]: c for c in claims_lib.check(cfg, rows, histories or {}, ratio, one_split=False)}


def test_batch_claims_by_order_find_a_planted_best():
    """A sweep of batch 8, 16, 32 (none of the paper's) checks "batch 5 best" on
    its smallest batch size, and says so; the claim keeps the paper's words."""
    cfg = five_splits(8, 16, 32)
    rows = [row(f"batch={b}", 1e-3, b, [m + 0.01 * k % 0.03 for k in range(5)])
            for b, m in ((8, 0.1), (16, 0.3), (32, 0.5))]
    histories = {"batch=8": [history(CALM, CALM)] * 5, "batch=16": [history(SPIKY, SPIKY)] * 5,
                 "batch=32": [history(SPIKY, SPIKY)] * 5}
    claims = split_claims(cfg, rows, histories)
    assert set(claims) == {"batch 5: loss below 0.2", "batch 10 and 15: loss spikes", "batch 5 best",
                           "larger batch, larger loss"} <= set(claims_lib.ERROR_RATES)
    best = claims["batch 5 best"]
    assert best["verdict"] == "agree" and best["remedy"] == ""
    assert best["shown"] == "smallest batch (8) best — the paper's batch 5, checked by order"
    assert best["reason"].startswith("batch 8 lower than batch 16 and 32, each one-sided p")
    spikes = claims["batch 10 and 15: loss spikes"]
    assert spikes["shown"].startswith("2nd and 3rd smallest batches (16, 32): loss spikes — the paper's batch 10 "
                                      "and 15, checked by order")
    assert spikes["verdict"] == "agree" and spikes["reason"] == "batch 16 shows it in 5 of 5, batch 32 in 5 of 5 runs"
    low = claims["batch 5: loss below 0.2"]
    assert low["verdict"] == "agree" and low["shown"].startswith("smallest batch (8): loss below 0.2")
    trend = claims["larger batch, larger loss"]
    assert trend["verdict"] == "agree" and trend["shown"] == trend["claim"]
    assert all(len(c["reason"]) <= 110 for c in claims.values())


def test_batch_claims_by_order_never_agree_when_the_smallest_is_worst():
    cfg = five_splits(8, 16, 32)
    worst = [row(f"batch={b}", 1e-3, b, [m + 0.01 * k % 0.03 for k in range(5)])
             for b, m in ((8, 0.5), (16, 0.3), (32, 0.1))]
    claims = split_claims(cfg, worst)
    assert claims["batch 5 best"]["verdict"] == claims["larger batch, larger loss"]["verdict"] == "disagree"
    assert claims["batch 5 best"]["reason"].endswith(" lower than batch 8, one-sided Holm p < 0.001")
    assert claims["batch 5 best"]["remedy"] == ""
    # Batch 8 worse by 2 SDs of a split's statistic, in 300 noisy sweeps: never agree.
    rng = np.random.default_rng(3)
    verdicts = {claims_lib.best_claim(cfg, [row(f"batch={b}", 1e-3, b, m + rng.normal(size=5))
                                       for b, m in ((8, 2.0), (16, 0.0), (32, 0.0))], "batch", (5,), 1.0)["verdict"]
                for _ in range(300)}
    assert "agree" not in verdicts and "disagree" in verdicts, verdicts


def test_the_paper_batch_sizes_are_not_mapped():
    cfg = sweep("batch")
    rows = [row(f"batch={b}", 1e-4, b, [0.1 * b, 0.1 * b + 0.02, 0.1 * b + 0.01]) for b in (5, 10, 15)]
    claims = claims_of(cfg, rows)
    assert all(c["shown"] == c["claim"] for c in claims.values())
    assert claims["batch 5 best"]["reason"].startswith("batch 5 lower than batch 10 and 15")


def test_two_batch_sizes_map_what_they_can():
    """Batch 8 and 16: the paper's 5 and 10 map to them, its 15 is absent."""
    cfg = five_splits(8, 16)
    rows = [row(f"batch={b}", 1e-3, b, [m + 0.01 * k % 0.03 for k in range(5)]) for b, m in ((8, 0.1), (16, 0.3))]
    claims = split_claims(cfg, rows, {"batch=8": [history(CALM, CALM)] * 5, "batch=16": [history(SPIKY, SPIKY)] * 5})
    best = claims["batch 5 best"]
    assert best["verdict"] == "agree"
    assert best["shown"] == "smallest batch (8) best — the paper's batch 5, checked by order"
    assert best["reason"].startswith("batch 8 lower than batch 16, one-sided p")  # one pair: no "each"
    spikes = claims["batch 10 and 15: loss spikes"]
    assert spikes["shown"] == "2nd smallest batch (16): loss spikes — the paper's batch 10 and 15, checked by order"
    assert spikes["verdict"] == "agree"
    assert spikes["reason"] == "batch 16 shows it in 5 of 5 runs; the sweep has no 3rd smallest batch size (the " \
                               "paper's batch 15)"
    assert "setting absent: no 3rd smallest batch size (the paper's batch 15), by order" in spikes["evidence"]
    # One batch size: the paper's 10 and 15 have no rank to map to.
    one = claims_of(five_splits(8), [row("batch=8", 1e-3, 8, [0.1, 0.2])])
    assert one["batch 10 and 15: loss spikes"]["reason"] == "the sweep has no 2nd or 3rd smallest batch size (the " \
                                                            "paper's batch 10 and 15)"
    assert one["batch 10 and 15: loss spikes"]["remedy"] == "--batch-sizes 5,10,15"


def test_every_claim_of_the_quick_batch_sweep_says_why():
    """The quick preset's batch axis (8, 16, 32; 3 epochs; 2 splits x 1 seed,
    r = 1): every claim has a verdict, or cannot tell with the design's reason
    and the options that would decide it."""
    from engine.study import overlap, stats

    cfg = options.sweep_config({"axis": "batch", "preset": "quick"}, {}, None, Path("/x"))
    assert (cfg.batch_sizes, cfg.base.epochs, cfg.splits, cfg.repeats) == ((8, 16, 32), 3, 2, 1)
    ratio = overlap.correction_ratio("holdout", 2, 160, 40, 200)
    rng = np.random.default_rng(4)
    for k in range(30):
        rows = [row(f"batch={b}", 1e-3, b, list(0.4 + 0.05 * rng.normal(size=2) + 0.02 * k % 0.1))
                for b in (8, 16, 32)]
        histories = {f"batch={b}": [history(list(0.1 + 0.3 * rng.random(3)), list(0.1 + 0.3 * rng.random(3)))
                                    for _ in range(2)] for b in (8, 16, 32)}
        claims = split_claims(cfg, rows, histories, ratio)
        assert len(claims) == 4
        for c in claims.values():
            assert c["reason"] and len(c["reason"]) <= 110, c
            assert c["verdict"] != "cannot tell" or c["remedy"], c
            assert "setting absent" not in c["evidence"], c
        spikes = claims["batch 10 and 15: loss spikes"]
        assert spikes["verdict"] == "cannot tell" and spikes["remedy"] == "--epochs 5"
        assert spikes["reason"] == "the spike rule needs 5 epochs; the runs have 3"
        for name in ("batch 5 best", "larger batch, larger loss"):
            assert claims[name]["verdict"] != "cannot tell" or claims[name]["remedy"] == "--repeats 5", claims[name]
    # The degrees of freedom and the detectable difference, by hand: two pairs sharing batch 8 correlate by
    # 1/2, each with se sqrt(1/J + r) SDs of a per-split difference, on J - 1 df.
    rows = [row(f"batch={b}", 1e-3, b, v) for b, v in ((8, [0.30, 0.36]), (16, [0.33, 0.35]), (32, [0.40, 0.37]))]
    best = split_claims(cfg, rows, ratio=ratio)["batch 5 best"]
    two, five = (claims_lib.sds_text(stats.joint_detectable([(1 / j + ratio) ** 0.5] * 2, j - 1, [[1, 0.5], [0.5, 1]]))
                 for j in (2, 5))
    assert best["reason"] == f"2 splits leave 1 degree of freedom: 80 % power only for differences ≥ {two} SDs " \
                             f"(5 splits: {five})"
    assert (best["verdict"], best["remedy"]) == ("cannot tell", "--repeats 5")
    # One run per setting: nothing to test against.
    once = split_claims(cfg, [row(f"batch={b}", 1e-3, b, [0.3]) for b in (8, 16, 32)], ratio=ratio)["batch 5 best"]
    assert (once["reason"], once["remedy"]) == ("one run per setting: no spread to test a difference against",
                                                "--repeats 5")


def test_an_lr_sweep_without_the_paper_rates_says_which_and_how():
    cfg = options.sweep_config({"axis": "lr", "preset": "quick"}, {}, None, Path("/x"))  # lr 1e-2, 1e-3, 1e-4
    rows = [row(f"lr={v:g}", v, 16, [0.3, 0.31]) for v in (1e-2, 1e-3, 1e-4)]
    good = history([0.1] * 3, [0.1] * 3, [0.99] * 3)
    claims = claims_of(cfg, rows, {"lr=0.0001": [good, good]})
    assert all(c["shown"] == c["claim"] for c in claims.values())  # lr claims are never mapped
    slow = claims["lr 1e-6 and 1e-7: acceptable, loss mostly 0.2-0.3"]
    assert (slow["verdict"], slow["reason"], slow["remedy"]) == (
        "cannot tell", "the sweep has no lr 1e-6, 1e-7", "--lrs 1e-2,1e-3,1e-4,1e-5,1e-6,1e-7")
    near_one = claims["lr 1e-4 and 1e-5: accuracy near 1, loss mostly below 0.2"]
    assert near_one["verdict"] == "agree"
    assert near_one["reason"] == "lr 1e-4 shows it in 2 of 2 runs; the sweep has no lr 1e-5"
    other = options.sweep_config({"axis": "lr", "preset": "quick", "lrs": (1e-2, 1e-3, 3e-4)}, {}, None, Path("/x"))
    best = claims_of(other, [row(f"lr={v:g}", v, 16, [0.3, 0.31]) for v in (1e-2, 1e-3, 3e-4)])["lr 1e-4 and 1e-5 best"]
    assert (best["reason"], best["remedy"]) == ("the sweep has no lr 1e-4, 1e-5", "--lrs 1e-2,1e-3,1e-4,1e-5,1e-6,1e-7")


def test_numbers_in_a_reason_carry_two_digits():
    assert [claims_lib.p_text(p) for p in (0.00042, 0.0123, 0.2)] == ["p < 0.001", "p 0.012", "p 0.2"]
    assert claims_lib.p_text(0.0456, bound=True) == "p ≤ 0.046"
    assert [claims_lib.sds_text(x) for x in (12.31, 3.849, 123.4, 0.456)] == ["12", "3.8", "120", "0.46"]
    assert [axes.compact(v) for v in (1e-2, 1e-4, 3e-4, 1e-7, 0.5)] == ["1e-2", "1e-4", "3e-4", "1e-7", "0.5"]
