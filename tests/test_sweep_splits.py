"""engine compare --splits K: the trial list, sweep.json, a kill -9 and its
resume on the same splits, and a report that compares settings across splits."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import factories
from engine import options
from engine.data import synthetic
from engine.errors import UserError
from engine.study import compare, plan as plan_lib, report, sweep


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Records with patients (1-3 images each), as the embedded set's."""
    return factories.synthetic_records(tmp_path_factory.mktemp("splits"), {"train": 40, "val": 12, "test": 8}, 32,
                                       patient_pattern=synthetic.FILENAME_PATTERN)


def split_sweep(records, out, **values):
    flat = dict(axis="lr", lrs=(1e-3, 1e-2), batch_sizes=(8,), epochs=2, repeats=1, splits=3, model="TinyCNN",
                weights="none", image_size=32, precision="float32", xla="off", bn_stats="moving")
    flat.update(values)
    return options.sweep_config(flat, {}, records, out)


def test_splits_multiply_the_trials_and_one_split_keeps_the_names(pool, tmp_path):
    cfg = split_sweep(pool, tmp_path / "s", repeats=2)
    listed = plan_lib.trials(cfg)
    assert len(listed) == 2 * 3 * 2
    assert [t.name for t in listed[:4]] == ["lr0.001_split1_seed0", "lr0.001_split1_seed1", "lr0.001_split2_seed0",
                                            "lr0.001_split2_seed1"]
    assert listed[2].config.records == tmp_path / "s" / "splits" / "split2" and listed[2].config.subset is None
    one = plan_lib.trials(split_sweep(pool, tmp_path / "s", splits=1))
    assert [t.name for t in one] == ["lr0.001_seed0", "lr0.01_seed0"] and one[0].config.records == pool
    # --dry-run --json: the job array grows with the splits; nothing is written.
    plan = compare.plan(cfg, "1")
    assert plan["count"] == 12 and [t["split"] for t in plan["trials"][:4]] == [1, 1, 2, 2]
    assert plan["splits"]["count"] == 3 and "3 repeated hold-outs" in plan["splits"]["text"]
    assert "(corrected resampled t over the splits, r = " in plan["repeats"]["text"]
    assert not (tmp_path / "s").exists()
    # An lr sweep and a batch sweep on the same records with the same split flags share their splits.
    from engine.study import replicates

    batch = split_sweep(pool, tmp_path / "b", axis="batch", lrs=(1e-3,), batch_sizes=(4, 8), repeats=2)
    assert [m.digest for m in replicates.draw(batch)] == [m.digest for m in replicates.draw(cfg)]
    assert replicates.draw(split_sweep(pool, tmp_path / "b", split_seed=1))[0].digest != \
        replicates.draw(cfg)[0].digest


def test_split_options_are_checked_in_one_line():
    with pytest.raises(UserError, match="--split-sizes and --split-mode need --splits 2 or more"):
        split_sweep(None, None, splits=1, split_mode="kfold")
    with pytest.raises(UserError, match="--split-sizes is for --split-mode holdout"):
        split_sweep(None, None, split_mode="kfold", split_sizes=(20, 10))


def test_a_split_that_cannot_be_drawn_fails_before_any_training(pool, tmp_path):
    out = tmp_path / "k"
    with pytest.raises(UserError, match="fewer than the 40 folds"):  # --dry-run says so too
        compare.plan(split_sweep(pool, out, splits=40, split_mode="kfold"), "1")
    with pytest.raises(UserError) as err:
        sweep.run(split_sweep(pool, out, splits=40, split_mode="kfold"))
    assert "\n" not in str(err.value) and "fold" in str(err.value)
    assert not (out / "trials").exists() and not (out / "sweep.json").exists()


def test_killed_split_sweep_resumes_on_the_same_splits_and_reports_across_them(pool, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    args = ["compare", str(pool), "--out", str(out), "--axis", "lr", "--lrs", "1e-3,1e-2", "--batch-sizes", "8",
            "--epochs", "4", "--repeats", "1", "--splits", "3", "--model", "TinyCNN", "--weights", "none",
            "--image-size", "32", "--precision", "float32", "--xla", "off", "--bn-stats", "moving",
            "--parallel", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                                                                    ENGINE_LOCK_HEARTBEAT_SECONDS="0.5"))
    state = out / "trials" / "lr0.001_split2_seed0" / "ckpt" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and not state.is_file() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-sweep: split 1 done, split 2 after its first epoch (of 4)
    proc.wait()
    assert state.is_file(), "killed before the trial's first checkpoint"
    # Unfinished when killed: its checkpoint holds the epochs it will resume after.
    assert not (state.parents[1] / "metrics.json").exists(), "the trial finished before the kill landed"
    done = json.loads(state.read_text())["epoch"] + 1
    stored = json.loads((out / "sweep.json").read_text())["splits"]
    members = [json.loads((out / m["members_file"]).read_text()) for m in stored["members"]]
    assert [m["sha256"] for m in members] == [m["sha256"] for m in stored["members"]]
    written = {m["index"]: (out / m["folder"] / "manifest.json").stat().st_mtime for m in stored["members"]}

    # The killed runner ran on this host: its trial lock is stale at once and taken over.
    events = []
    results = sweep.run(split_sweep(pool, out, epochs=4), on_event=lambda kind, trial, info: events.append(
        (kind, trial.name, info.get("epoch") if isinstance(info, dict) else None)))
    assert [r["status"] for r in results] == ["done"] * 6, results
    assert ("start", "lr0.001_split1_seed0", None) not in events  # finished before the kill: skipped
    resumed = [e[2] for e in events if e[0] == "epoch" and e[1] == "lr0.001_split2_seed0"]
    assert done >= 1 and resumed == list(range(done + 1, 5))  # resumed after its checkpoint, not restarted
    # The same splits, not drawn and written again.
    assert json.loads((out / "sweep.json").read_text())["splits"] == stored
    assert {m["index"]: (out / m["folder"] / "manifest.json").stat().st_mtime for m in stored["members"]} == written
    run = json.loads((out / "trials" / "lr0.01_split3_seed0" / "config.json").read_text())
    assert run["records"] == str(out / "splits" / "split3")

    written = report.write(out)
    text = (out / "report.md").read_text()
    paragraphs = text.split("\n\n")
    assert any(p.startswith("Scope: the comparisons describe the variation across 3 splits") for p in paragraphs)
    assert any(p.startswith("Comparisons: corrected resampled t over 3 splits (r = ") for p in paragraphs)
    assert "corrected resampled t over 3 shared splits (r = " in written["ranking"]["text"]
    assert "## Across splits" in text and (out / "splits.png").is_file()
    assert written["rows"][0]["statistic_by_unit"].keys() == {1, 2, 3}
