"""The paper's claims checked on hand-made histories, and the deviations from its setup."""

from __future__ import annotations

from pathlib import Path


from engine import options
from engine.study import paper


def history(loss, val_loss, acc=None, val_acc=None):
    acc = acc or [0.5] * len(loss)
    val_acc = val_acc or acc
    return [{"epoch": i + 1, "loss": a, "val_loss": b, "accuracy": c, "val_accuracy": d}
            for i, (a, b, c, d) in enumerate(zip(loss, val_loss, acc, val_acc))]


def row(setting, lr, batch, statistic, repeats=2):
    return {"setting": setting, "lr": lr, "batch_size": batch, "statistic": statistic, "repeats_done": repeats}


def sweep(axis, **values):
    return options.sweep_config({"axis": axis, "preset": "paper", **values}, {}, None, Path("/x"))


def test_spikes_and_mostly_by_hand():
    assert paper.spikes([0.5, 0.3, 0.45, 0.6]) == [0.6]  # 0.45 is within 0.2 of 0.3, 0.6 is not
    assert paper.spikes([0.9, 0.8, 0.7]) == []
    assert paper.share([0.1, 0.3, 0.15, 0.5], lambda v: v < 0.2) == 0.5
    good = history([0.1, 0.15, 0.3, 0.1], [0.1, 0.19, 0.25, 0.12], [0.97] * 4, [0.96, 0.99, 0.9, 0.95])
    assert paper.PROPERTIES["loss mostly below 0.2"](good) and paper.PROPERTIES["accuracy near 1"](good)
    worse_val = history([0.1] * 4, [0.1, 0.3, 0.3, 0.3])  # train mostly below 0.2, val not
    assert not paper.PROPERTIES["loss mostly below 0.2"](worse_val)


def test_lr_claims_agree_disagree_and_cannot_tell():
    cfg = sweep("lr", lrs=(1e-2, 1e-4, 1e-6))
    rows = [row("lr=0.01", 1e-2, 5, 0.50, repeats=1), row("lr=0.0001", 1e-4, 5, 0.10, repeats=1),
            row("lr=1e-06", 1e-6, 5, 0.26, repeats=1)]
    erratic = history([0.2, 0.1, 0.6, 0.1], [0.3, 0.2, 0.9, 0.25], [0.95] * 4)
    best = history([0.1] * 4, [0.15] * 4, [0.99] * 4)
    slow = history([0.5, 0.28, 0.25, 0.22], [0.45, 0.29, 0.26, 0.24])
    claims = {c["claim"]: c for c in paper.check(cfg, rows, {"lr=0.01": [erratic], "lr=0.0001": [best],
                                                             "lr=1e-06": [slow]})}
    assert claims["lr 1e-4 and 1e-5: accuracy near 1, loss mostly below 0.2"]["verdict"] == "agree"
    assert "the sweep has no lr 1e-05" in claims["lr 1e-4 and 1e-5: accuracy near 1, loss mostly below 0.2"][
        "evidence"]
    assert claims["lr 1e-2 and 1e-3: accuracy high but the loss erratic, spikes to ~0.8-1.0"]["verdict"] == "agree"
    assert claims["lr 1e-6 and 1e-7: acceptable, loss mostly 0.2-0.3"]["verdict"] == "agree"
    # One run per setting: comparative claims cannot be told.
    assert claims["lr 1e-4 and 1e-5 best"]["verdict"] == "cannot tell"
    assert not any(c.startswith("batch") for c in claims)  # the lr axis touches no batch claim
    calm = history([0.2, 0.15, 0.12, 0.1], [0.3, 0.25, 0.2, 0.18], [0.95] * 4)  # no spike
    claims = {c["claim"]: c for c in paper.check(cfg, rows, {"lr=0.01": [calm], "lr=0.0001": [best],
                                                             "lr=1e-06": [best]})}
    assert claims["lr 1e-2 and 1e-3: accuracy high but the loss erratic, spikes to ~0.8-1.0"]["verdict"] == \
        "disagree"
    assert claims["lr 1e-6 and 1e-7: acceptable, loss mostly 0.2-0.3"]["verdict"] == "disagree"


def test_comparative_claims_with_repeats():
    cfg = sweep("batch")
    histories = {"batch=5": [history([0.1] * 3, [0.1] * 3)] * 2, "batch=10": [history([0.3] * 3, [0.3] * 3)] * 2,
                 "batch=15": [history([0.2, 0.1, 0.5], [0.2, 0.1, 0.5])] * 2}
    rows = [row("batch=5", 1e-4, 5, 0.1), row("batch=10", 1e-4, 10, 0.2), row("batch=15", 1e-4, 15, 0.3)]
    claims = {c["claim"]: c for c in paper.check(cfg, rows, histories)}
    assert claims["batch 5 best"]["verdict"] == "agree" and claims["batch 5 best"]["evidence"].startswith(
        "rank 1: batch 5")
    assert claims["larger batch, larger loss"]["verdict"] == "agree"
    assert claims["batch 5: loss below 0.2"]["verdict"] == "agree"
    # batch 10 (flat 0.3) has no spike; batch 15 rises 0.4 above its minimum
    assert claims["batch 10 and 15: loss spikes"]["verdict"] == "disagree"
    assert "batch 15: loss spikes: 2 of 2 runs" in claims["batch 10 and 15: loss spikes"]["evidence"]
    quick = options.sweep_config({"axis": "batch"}, {}, None, Path("/x"))  # batch 8, 16, 32 at lr 1e-3
    quick_rows = [row(f"batch={b}", 1e-3, b, v) for b, v in ((8, 0.3), (16, 0.2), (32, 0.4))]
    claims = {c["claim"]: c for c in paper.check(quick, quick_rows, {})}
    assert set(claims) == {"larger batch, larger loss"} and claims["larger batch, larger loss"]["verdict"] == \
        "disagree"
    rows[1]["statistic"], rows[0]["statistic"] = 0.05, 0.1
    claims = {c["claim"]: c for c in paper.check(cfg, rows, histories)}
    assert claims["batch 5 best"]["verdict"] == "disagree" and claims["larger batch, larger loss"]["verdict"] == \
        "disagree"


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
    for what in ("weights", "epochs", "image size", "resize", "precision", "BatchNorm momentum", "data",
                 "model scored"):
        assert what in found, what
    assert found["BatchNorm momentum"]["here"] == "0.9" and found["weights"]["here"] == "none (trained from scratch)"
