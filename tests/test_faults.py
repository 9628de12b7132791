"""Faults and damaged state: one clear line, a way out, nothing lost, nothing mislabelled.

Faults are done for real where the machine allows it (truncated and random
files, a symlink loop, SIGINT and SIGTERM to this process) and injected at the
write where it does not (tests run as root: a chmod'ed folder stays writable).
"""

import csv
import errno
import json
import os
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

import factories
from engine import cli, serialise, training
from engine.config import ModelConfig, RecordsConfig, TrainConfig
from engine.data import records as records_lib
from engine.errors import DamagedState, UserError, exit_status, one_line
from engine.study import estimate, launch, lrfind, plan as plan_lib, sweep as sweep_lib
from engine.training import callbacks, checkpoint, disk as disk_lib
from engine.training import run as run_lib


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return factories.synthetic_records(tmp_path_factory.mktemp("faults"), {"train": 24, "val": 8, "test": 8}, 32)


@pytest.fixture(scope="module")
def trainer():
    """One Trainer for this module's runs, as one process of a sweep has: runs
    of the same graph reuse one compiled classifier."""
    return training.Trainer()


def tiny(records_dir, out, **kwargs):
    values = dict(records=records_dir, out=out, model=ModelConfig(name="TinyCNN", weights="none", image_size=32),
                  lr=1e-3, batch_size=8, epochs=2, precision="float32", xla="off", bootstrap=20, augment="none")
    values.update(kwargs)
    return TrainConfig(**values)


class StopAtEpoch(keras.callbacks.Callback):
    """Ends training as a kill would, once ``epoch`` epochs are checkpointed."""

    def __init__(self, epoch, error=KeyboardInterrupt):
        super().__init__()
        self.epoch, self.error = epoch, error

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise self.error()


def epochs_of(run):
    with open(run / "history.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def engine_main(monkeypatch, capsys, *args):
    """``engine ARGS`` in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["engine", *map(str, args)])
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main()
    finally:
        signal.signal(signal.SIGTERM, previous)
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


# --- 1. paths compared as absolute paths ------------------------------------------------------

def test_paths_compare_by_absolute_form_and_same_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "base").mkdir(parents=True)
    os.symlink(tmp_path / "runs", tmp_path / "link")
    stored = serialise.to_json(TrainConfig(out=Path("runs/base"), records=Path("./rec/../rec")))
    assert stored["out"] == str(tmp_path / "runs" / "base")  # written absolute
    for out in (tmp_path / "runs" / "base", Path("runs/./base"), tmp_path / "link" / "base"):
        assert serialise.differences(stored, TrainConfig(out=out, records=tmp_path / "rec")) == []
    assert serialise.differences(stored, TrainConfig(out=Path("runs/other"), records=Path("rec"))) == ["out"]


def test_run_resumes_with_out_spelled_absolute_and_refusal_says_what_force_discards(records, tmp_path,
                                                                                       monkeypatch, trainer):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        training.train(tiny(records, Path("runs/base"), epochs=3), trainer=trainer, quiet=True,
                       callbacks=[StopAtEpoch(1)])
    with pytest.raises(UserError, match=r"differs in: lr\).*--force to start over \(discarding finished epochs: "
                                        r"1 of 3\)"):
        training.train(tiny(records, tmp_path / "runs" / "base", epochs=3, lr=1e-2), trainer=trainer, quiet=True)
    result = training.train(tiny(records, tmp_path / "runs" / "base", epochs=3), trainer=trainer, quiet=True)
    assert result["status"] == "done" and epochs_of(tmp_path / "runs" / "base") == [1, 2, 3]


# --- 2. damaged state ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpointed(records, tmp_path_factory, trainer):
    """A run interrupted after its first epoch of two: its folder holds a checkpoint."""
    run = tmp_path_factory.mktemp("checkpointed") / "run"
    with pytest.raises(KeyboardInterrupt):
        training.train(tiny(records, run), trainer=trainer, quiet=True, callbacks=[StopAtEpoch(1)])
    assert (run / "ckpt" / "state-0000.npz").is_file()
    return run


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated checkpoint": ("ckpt/state-0000.npz", truncate),
    "random checkpoint": ("ckpt/state-0000.npz", lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000))),
    "empty checkpoint": ("ckpt/state-0000.npz", lambda p: p.write_bytes(b"")),
    "truncated state.json": ("ckpt/state.json", truncate),
    "truncated config.json": ("config.json", truncate),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_state_restarts_from_epoch_0_with_one_line(checkpointed, records, tmp_path, capsys, kind, trainer):
    run = tmp_path / "run"
    shutil.copytree(checkpointed, run)
    name, damage = DAMAGE[kind]
    damage(run / name)
    result = training.train(tiny(records, run), trainer=trainer, quiet=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "is damaged" in lines[0] and "starting again from epoch 0" in lines[0], lines
    assert Path(name).name in lines[0]
    assert result["status"] == "done" and epochs_of(run) == [1, 2]  # the old epoch is not mixed in
    assert list(run.glob("*.damaged")), sorted(p.name for p in run.iterdir())
    assert not (run / "ckpt").exists()  # finished: its checkpoint is removed


def test_damaged_checkpoint_leaves_the_model_untouched(checkpointed, records, tmp_path, trainer):
    run = tmp_path / "run"
    shutil.copytree(checkpointed, run)
    truncate(run / "ckpt" / "state-0000.npz")
    prepared = training.prepare(tiny(records, None), trainer=trainer, quiet=True)
    before = [w.copy() for w in prepared.classifier.net.get_weights()]
    with pytest.raises(DamagedState, match=r"state-0000\.npz is damaged"):
        checkpoint.load_checkpoint(run, prepared.classifier)
    assert all(np.array_equal(a, b) for a, b in zip(before, prepared.classifier.net.get_weights()))


def test_force_starts_clean_when_the_state_cannot_be_read(checkpointed, records, tmp_path, trainer):
    run = tmp_path / "run"
    shutil.copytree(checkpointed, run)
    (run / "config.json").write_text("{")
    (run / "ckpt" / "state-0000.npz").write_bytes(b"")
    result = training.train(tiny(records, run), trainer=trainer, quiet=True, force=True)
    assert result["status"] == "done" and epochs_of(run) == [1, 2] and not list(run.glob("*.damaged"))


def test_temp_files_of_a_killed_write_are_removed_at_the_next_start(checkpointed, records, tmp_path, trainer):
    run = tmp_path / "run"
    shutil.copytree(checkpointed, run)
    leftovers = [run / "ckpt" / ".state-0001.npz.4242-1.tmp", run / ".history.csv.4242-1.tmp",
                 run / "last.tmp.keras"]
    for path in leftovers:
        path.write_bytes(b"x" * 1000)
    training.train(tiny(records, run), trainer=trainer, quiet=True)
    assert not any(p.exists() for p in leftovers)


@pytest.fixture(scope="module")
def finished_sweep(records, tmp_path_factory, trainer):
    out = tmp_path_factory.mktemp("sweep") / "cmp"
    cfg = sweep_lib_config(records, out)
    assert [r["status"] for r in sweep_lib.run(cfg, trainer=trainer)] == ["done", "done"]
    return out


def sweep_lib_config(records, out, **values):
    from engine import options

    values = {**dict(axis="lr", lrs=(1e-3, 1e-2), epochs=1, repeats=1, model="TinyCNN", weights="none",
                     image_size=32, precision="float32", xla="off", batch_sizes=(8,), augment="none", bootstrap=20),
              **values}
    return options.sweep_config(values, {}, records, out)


def test_sweep_fails_a_damaged_trial_with_its_way_out_and_force_resets_it(finished_sweep, records, tmp_path, trainer):
    out = tmp_path / "cmp"
    shutil.copytree(finished_sweep, out)
    trial = out / "trials" / "lr0.01_seed0"
    truncate(trial / "config.json")
    (trial / "metrics.json").write_text("")
    cfg = sweep_lib_config(records, out)
    results = sweep_lib.run(cfg, trainer=trainer)
    assert results[0]["status"] == "done"  # the intact trial is skipped, not trained again
    assert results[1]["status"] == "failed"
    assert "config.json is damaged" in results[1]["reason"]
    assert f"engine resume {out.resolve()} --trial lr0.01_seed0 --force" in results[1]["reason"]
    reset = sweep_lib.run(replace(cfg, trial="lr0.01_seed0"), force=True, trainer=trainer)
    assert [r["status"] for r in reset] == ["done"] and epochs_of(trial) == [1]


def test_damaged_metrics_of_a_finished_trial_are_rebuilt(finished_sweep, records, tmp_path, trainer):
    out = tmp_path / "cmp"
    shutil.copytree(finished_sweep, out)
    trial = out / "trials" / "lr0.001_seed0"
    before = json.loads((trial / "metrics.json").read_text())
    truncate(trial / "metrics.json")
    results = sweep_lib.run(sweep_lib_config(records, out), trainer=trainer)
    assert results[0]["status"] == "done" and (trial / "metrics.json.damaged").is_file()
    assert results[0]["val"]["metrics"]["auc"] == pytest.approx(before["val"]["metrics"]["auc"])
    assert json.loads((trial / "metrics.json").read_text())["model_file"] == before["model_file"]


def test_damaged_sweep_json_is_one_line_and_force_writes_it_anew(finished_sweep, records, tmp_path, trainer):
    out = tmp_path / "cmp"
    shutil.copytree(finished_sweep, out)
    (out / "sweep.json").write_text('{"config": ')
    cfg = sweep_lib_config(records, out)
    with pytest.raises(DamagedState, match=r"sweep\.json is damaged \(not valid JSON.*rerun with --force"):
        sweep_lib.run(cfg, trainer=trainer)
    # The finished trials are kept.
    assert [r["status"] for r in sweep_lib.run(cfg, force=True, trainer=trainer)] == ["done", "done"]
    assert json.loads((out / "sweep.json").read_text())["config"]["lrs"] == [1e-3, 1e-2]


def test_a_sweep_resumes_with_out_spelled_another_way(finished_sweep, records, tmp_path, monkeypatch, trainer):
    out = tmp_path / "cmp"
    shutil.copytree(finished_sweep, out)
    monkeypatch.chdir(tmp_path)
    events = []
    sweep_lib.run(sweep_lib_config(records, Path("cmp")), on_event=lambda kind, t, info: events.append(kind),
                  trainer=trainer)
    assert "start" not in events
    with pytest.raises(UserError, match=r"discarding finished trials: 2 of 2"):
        sweep_lib.run(sweep_lib_config(records, Path("./cmp"), epochs=2), trainer=trainer)


def test_parallel_children_failing_by_trials_leave_exit_1_to_the_parent():
    launch.check_children([0, 1], {1: "1 trial failed (MemoryError: oom); rerun the same command to retry"})
    with pytest.raises(UserError, match=r"shard process 1 of 2 failed: tmp/cmp/sweep\.json is damaged"):
        launch.check_children([0, 2], {1: "tmp/cmp/sweep.json is damaged (empty)"})
    with pytest.raises(Exception, match=r"shard process 0 of 2 failed: exit status 137; rerun") as raised:
        launch.check_children([137, 0], {})
    assert exit_status(raised.value) == 1


# --- 3. links followed once, never into a loop ---------------------------------------------------

def test_symlink_loop_labels_every_image_by_its_class(tmp_path):
    src = factories.split_folder(tmp_path / "src", {"train": {"covid": 8, "normal": 8},
                                                    "val": {"covid": 2, "normal": 2},
                                                    "test": {"covid": 2, "normal": 2}})
    os.symlink("..", src / "train" / "normal" / "loop")
    elsewhere = factories.class_folder(tmp_path / "elsewhere", {"more": 3}, seed=7) / "more"
    os.symlink(elsewhere, src / "train" / "covid" / "more")  # another disk, say: followed
    manifest = records_lib.build(RecordsConfig(src=src, out=tmp_path / "out", image_size=32, workers=0,
                                               dedupe=True), quiet=True)
    assert {s: v["per_class"] for s, v in manifest["splits"].items()} == {
        "train": {"covid": 11, "normal": 8}, "val": {"covid": 2, "normal": 2}, "test": {"covid": 2, "normal": 2}}
    for example in manifest["examples"]:
        assert example["class"] == example["id"].split("/")[1], example["id"]
    with open(tmp_path / "out" / "rejects.csv") as f:
        rejects = list(csv.DictReader(f))
    assert [(r["path"], r["class"]) for r in rejects] == [("train/normal/loop", "normal")]
    assert "loop" in rejects[0]["reason"]


def test_long_duplicate_refusal_is_bounded_with_the_list_in_a_file(tmp_path):
    src = factories.split_folder(tmp_path / "src", {"train": {"covid": 3, "normal": 3},
                                                    "val": {"covid": 2, "normal": 2}})
    image = src / "val" / "covid" / "covid-0.png"
    for i in range(40):
        shutil.copy(image, src / "train" / "covid" / f"{'long-name-' * 8}{i}.png")
    with pytest.raises(UserError) as raised:
        records_lib.build(RecordsConfig(src=src, out=tmp_path / "out", image_size=32, workers=0), quiet=True)
    message = str(raised.value)
    assert len(message) < 600 and "and 38 more copies" in message, message
    listing = tmp_path / "out.duplicates.txt"
    assert listing.read_text().count(".png") == 41  # every copy, the original in val included


# --- 4. one line for every OS error -----------------------------------------------------------

@pytest.mark.parametrize("code,status,words", [(errno.ENOSPC, 1, "No space left on device (needs about"),
                                               (errno.EROFS, 2, "Read-only file system (choose a writable"),
                                               (errno.EMFILE, 1, "Too many open files (raise the limit")])
def test_os_errors_at_the_write_are_one_line_with_the_readme_status(tmp_path, monkeypatch, capsys, code, status,
                                                                     words):
    src = factories.class_folder(tmp_path / "src", {"covid": 5, "normal": 5})

    def fail(folder, *args):
        raise OSError(code, os.strerror(code), str(folder / "x.tfrecord"))
    monkeypatch.setattr(records_lib, "write_shards", fail)
    status_, out, err = engine_main(monkeypatch, capsys, "build-records", src, tmp_path / "out", "--workers", "0",
                                    "--image-size", "32", "--split", "0.6,0.2,0.2", "--quiet")
    lines = err.strip().splitlines()
    assert status_ == status and len(lines) == 1 and lines[0].startswith("error: cannot write "), err
    assert words in lines[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_disk_full_during_training_is_one_line(records, tmp_path, monkeypatch, capsys):
    def full(run, arrays, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "ckpt" / "state-0000.npz"))
    monkeypatch.setattr(checkpoint, "write_checkpoint", full)
    status, out, err = engine_main(monkeypatch, capsys, "train", records, "--out", tmp_path / "run", "--model",
                                   "TinyCNN", "--weights", "none", "--epochs", "1", "--batch-size", "8",
                                   "--precision", "float32", "--xla", "off", "--augment", "none", "--quiet")
    assert status == 1 and err.strip().splitlines() == [err.strip()], err
    assert err.startswith(f"error: cannot write {tmp_path / 'run' / 'ckpt' / 'state-0000.npz'}: No space left")


def test_one_line_of_an_os_error():
    err = OSError(errno.ENOSPC, "No space left on device", "/nonexistent/deep/file")
    err.needs_mb = 250
    assert one_line(err).startswith("cannot write /nonexistent/deep/file: No space left on device (needs about "
                                    "250 MB, ")
    assert exit_status(OSError(errno.EACCES, "Permission denied", "x")) == 2


# --- 5. no silent surprises -----------------------------------------------------------------------

def test_image_size_given_that_differs_from_the_records_is_an_error(records, tmp_path, capsys):
    with pytest.raises(UserError, match=r"--image-size 128 differs from the 32-px records"):
        training.train(tiny(records, tmp_path / "run", model=ModelConfig(name="TinyCNN", weights="none",
                                                                          image_size=128)),
                       quiet=True, size_given=True)
    run_lib.check_image_size(75, {"image_size": [32, 32]}, records, given=False, quiet=False)
    assert "image size: 32 px, the records' (not 75)" in capsys.readouterr().out


def test_divergence_bound_and_reduced_precision_reason(records, tmp_path, trainer):
    assert callbacks.divergence(2e3, None) == "training loss 2e+03 above the bound 1e+03"
    assert callbacks.divergence(None, None) == "non-finite training loss"
    assert run_lib.divergence_reason("non-finite weights", 2, "float32") == "non-finite weights at epoch 2"

    class Blowup(keras.callbacks.Callback):  # the weights blow up in the first epoch, as a bad kernel might
        def on_train_batch_end(self, batch, logs=None):
            kernel = self.model.net.get_layer("hidden").kernel
            kernel.assign(np.full(kernel.shape, np.inf, np.float32))
    result = training.train(tiny(records, tmp_path / "bf16", precision="mixed_bfloat16", epochs=1), trainer=trainer,
                            quiet=True, callbacks=[Blowup()])
    assert result["status"] == "diverged"
    assert "diverged in mixed_bfloat16; float32 not tried" in result["reason"]
    assert json.loads((tmp_path / "bf16" / "metrics.json").read_text())["reason"] == result["reason"]


def test_lr_find_says_inconclusive_at_either_end():
    lrs = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert lrfind.suggest(lrs, [0.9, 0.5, 0.45, 0.44, 0.43])["inconclusive"]  # steepest at the first rate
    assert lrfind.suggest(lrs, [0.70, 0.69, 0.50, 0.30, 0.90])["verdict"] == ""
    assert "inconclusive" in lrfind.suggest(lrs, [0.9, 0.89, 0.88, 0.87, 0.2])["verdict"]


@pytest.fixture(scope="module")
def trained(records, tmp_path_factory, trainer):
    run = tmp_path_factory.mktemp("trained") / "run"
    training.train(tiny(records, run, epochs=1), trainer=trainer, quiet=True)
    return run


def test_predict_scores_the_readable_and_lists_the_rest(trained, records, tmp_path, monkeypatch, capsys):
    good = sorted((records.parent / "images" / "test").rglob("*.png"))[:2]
    bad = factories.damage(shutil.copy(good[0], tmp_path / "bad.png"), 4000)
    bad.write_bytes(bad.read_bytes()[:100])
    status, out, err = engine_main(monkeypatch, capsys, "predict", trained, good[0], bad, good[1])
    assert status == 1
    assert [line.split(":")[0] for line in out.strip().splitlines()] == [str(good[0]), str(good[1])]
    assert f"{bad}: unreadable" in err and err.strip().splitlines()[-1] == \
        "error: 1 of 3 images could not be read (listed above)"


def test_evaluate_split_is_a_choice_and_damaged_files_are_named(trained, tmp_path, monkeypatch, capsys):
    status, out, err = engine_main(monkeypatch, capsys, "evaluate", trained, "--split", "foo")
    assert status == 2 and err.strip() == f"error: --split must be one of train, val, test (the splits of " \
                                          f"{json.loads((trained / 'data.json').read_text())['records']}), not 'foo'"
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    truncate(run / "config.json")
    status, out, err = engine_main(monkeypatch, capsys, "evaluate", run)
    assert status == 1 and err.startswith(f"error: {run / 'config.json'} is damaged (not valid JSON") and \
        len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("signum,status,word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_signals_say_how_to_resume(records, tmp_path, monkeypatch, capsys, signum, status, word):
    class Signal(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                os.kill(os.getpid(), signum)
    real = training.train
    monkeypatch.setattr(training, "train", lambda cfg, **kw: real(cfg, **kw, callbacks=[Signal()]))
    # Python's own Ctrl-C handler, whatever this process inherited (a shell
    # starts background jobs with SIGINT ignored, and Python then keeps it so).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, out, err = engine_main(monkeypatch, capsys, "train", records, "--out", tmp_path / "run", "--model",
                                     "TinyCNN", "--weights", "none", "--epochs", "2", "--batch-size", "8",
                                     "--precision", "float32", "--xla", "off", "--augment", "none", "--quiet")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == status and err.strip().splitlines()[-1] == f"{word}: rerun the same command to resume", err
    assert epochs_of(tmp_path / "run") == [1] and (tmp_path / "run" / "ckpt" / "state.json").is_file()


# --- 6. disk ------------------------------------------------------------------------------------------

def test_finished_run_keeps_models_not_its_checkpoint(records, tmp_path, trainer):
    training.train(tiny(records, tmp_path / "last", epochs=1, select="last"), trainer=trainer, quiet=True)
    kept = {p.name for p in (tmp_path / "last").iterdir()}
    assert {"config.json", "data.json", "history.csv", "last.keras", "metrics.json", "tb"} <= kept
    assert not kept & {"ckpt", "best.keras"}, kept
    again = training.train(tiny(records, tmp_path / "last", epochs=1, select="last"), trainer=trainer, quiet=True)
    assert again["status"] == "done"  # finished: nothing to resume and nothing redone
    training.train(tiny(records, tmp_path / "kept", epochs=1, keep_checkpoints=True), trainer=trainer, quiet=True)
    assert (tmp_path / "kept" / "ckpt" / "state.json").is_file() and (tmp_path / "kept" / "best.keras").is_file()


def test_dry_run_states_the_disk(records, tmp_path, trainer):
    cfg = sweep_lib_config(records, tmp_path / "cmp", select="best")  # last and best kept
    plan = estimate.plan_summary(cfg, plan_lib.trials(cfg), estimate.split_counts(cfg))
    disk = plan["disk"]
    net = training.prepare(tiny(records, None), trainer=trainer, quiet=True).classifier.net
    weights_mb = net.count_params() * 4 / 2 ** 20
    assert disk["trial_mb"] == round(2 * weights_mb + disk_lib.LOGS_MB)
    assert disk["total_mb"] == round(2 * (2 * weights_mb + disk_lib.LOGS_MB))
    assert disk["text"].startswith("about ") and "2 trials x" in disk["text"]
