"""engine compare: trials, resume, refusal, shards, failures, ranking statistic, report files."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

import factories
from engine import options
from engine.config import SweepConfig
from engine.errors import UserError
from engine.study import collect, estimate, plan as plan_lib, ranking as ranking_lib, report, sweep


def resolve(axis, preset, records_dir, out, **values):
    """A study as `engine compare` resolves it, with these options on its command line."""
    return options.sweep_config({"axis": axis, "preset": preset, **values}, {}, records_dir, out)


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    return factories.synthetic_records(tmp_path_factory.mktemp("sweep"), {"train": 48, "val": 16, "test": 16}, 64)


def tiny_sweep(records_dir, out, **kwargs):
    options = dict(lrs=(1e-3, 1e-2), epochs=2, repeats=1, model="TinyCNN", weights="none", image_size=64,
                   precision="float32", xla="off", batch_sizes=(16,))
    options.update(kwargs)
    return resolve(kwargs.pop("axis", "lr"), "quick", records_dir, out, **options)


def test_trial_list_paper_preset():
    lr = plan_lib.trials(resolve("lr", "paper", None, Path("/x")))
    assert [t.setting for t in lr] == [f"lr={v:g}" for v in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)]
    assert {t.config.batch_size for t in lr} == {5} and {t.config.epochs for t in lr} == {20}
    batch = plan_lib.trials(resolve("batch", "paper", None, Path("/x")))
    assert [(t.config.batch_size, t.config.lr) for t in batch] == [(5, 1e-4), (10, 1e-4), (15, 1e-4)]
    assert batch[0].config.model.weights == "imagenet" and batch[0].config.model.image_size == 299


def test_budget_steps_and_lr_scaling():
    plan = plan_lib.trials(resolve("batch", "paper", None, Path("/x"), budget="steps", lr_scaling="linear"))
    assert [(t.config.batch_size, t.config.epochs) for t in plan] == [(5, 20), (10, 40), (15, 60)]
    assert [t.config.lr for t in plan] == pytest.approx([1e-4, 2e-4, 3e-4])
    sqrt = plan_lib.trials(resolve("batch", "paper", None, Path("/x"), lr_scaling="sqrt"))
    assert sqrt[2].config.lr == pytest.approx(1e-4 * 3 ** 0.5)


def test_shards_cover_every_trial_once():
    full = [t.name for t in plan_lib.trials(resolve("grid", "paper", None, Path("/x"), repeats=2))]
    everything = plan_lib.trials(resolve("grid", "paper", None, Path("/x"), repeats=2))
    parts = [t.name for i in range(4)
             for t in plan_lib.select(everything, resolve("grid", "paper", None, Path("/x"), repeats=2, shard=(i, 4)))]
    assert sorted(parts) == sorted(full) and len(full) == 6 * 3 * 2


@pytest.mark.parametrize("kwargs,message", [
    ({"axis": "momentum"}, "--axis must be one of"),
    ({"lrs": (0.0,)}, "every learning rate must be > 0"),
    ({"repeats": 0}, "--repeats must be >= 1"),
    ({"epochs": 0}, "--epochs must be >= 1"),
    ({"shard": (2, 2)}, "--shard must be i/n"),
])
def test_bad_arguments(kwargs, message):
    axis = kwargs.pop("axis", "lr")
    with pytest.raises(UserError, match=message):
        resolve(axis, "quick", None, Path("/x"), **kwargs)


def test_ranking_on_hand_made_rows():
    def row(setting, by_seed, flags=""):
        values = [v for v in by_seed.values() if v is not None]
        return {"setting": setting, "statistic_by_unit": by_seed, "repeats_done": len(values), "flags": flags,
                "statistic": sum(values) / len(values) if values else None, "final_val_loss": 0.3}
    rows = [row("a", {0: 0.19, 1: 0.21, 2: 0.20}), row("b", {0: 0.50, 1: 0.51, 2: 0.52}),
            row("c", {0: 0.05, 1: 0.45, 2: 0.25}), row("d", {}, "2 of 2 diverged"),
            row("e", {9: 0.3}, "1 of 2 failed (MemoryError)")]
    ranking = ranking_lib.rank(rows)
    # a beats b, nothing beats c (too spread) or e (one run): a set of three, no single best.
    assert ranking["best"] is None and ranking["best_set"] == ["a", "c", "e"] and ranking["leader"] == "a"
    verdicts = {c["setting"]: c for c in ranking["comparisons"]}
    assert verdicts["b"]["verdict"] == "worse (than a)" and verdicts["b"]["method"] == "paired t over 3 shared seeds"
    assert verdicts["c"]["verdict"].startswith("in the set of best settings")
    assert verdicts["e"]["verdict"] == "no noise verdict possible (fewer than 2 finished runs)"
    # Holm over the three tested pairs (a-b, a-c, b-c): a-b's p is the smallest, so it is tripled.
    assert verdicts["b"]["p_holm"] == pytest.approx(3 * verdicts["b"]["p"])
    assert verdicts["c"]["p_holm"] >= max(verdicts["c"]["p"], 3 * verdicts["b"]["p"])
    assert "- d: 2 of 2 diverged: not ranked (no finished run)." in ranking["text"]
    assert "[1 of 2 failed (MemoryError)]" in ranking["text"] and "simultaneous 95 % interval" in ranking["text"]
    empty = ranking_lib.rank([row("x", {}, "1 of 1 diverged")])
    assert empty["best"] is None and "x: 1 of 1 diverged: not ranked" in empty["text"]


def test_the_answer_says_what_the_tests_found_and_only_that():
    """The report's plain-words answer on planted cases: one setting clearly
    best; the worst one planted apart (the others tied); all equal; one run each."""
    def row(setting, by_seed):
        return {"setting": setting, "statistic_by_unit": by_seed, "repeats_done": len(by_seed), "flags": "",
                "statistic": sum(by_seed.values()) / len(by_seed) if by_seed else None}
    shift = {0: 0.0, 1: 0.01, 2: -0.01, 3: 0.005}
    best = ranking_lib.rank([row(n, {s: level + d + 0.001 * (s % 2) * (n == "b") for s, d in shift.items()})
                             for n, level in (("a", 0.2), ("b", 0.5), ("c", 0.6))])
    assert ranking_lib.answer(best).startswith("**a** is best: every other setting has a significantly higher val")
    worst = ranking_lib.rank([row(n, {s: level + d + 0.002 * s * (n == "b") for s, d in shift.items()})
                              for n, level in (("a", 0.2), ("b", 0.2), ("c", 0.6))])
    text = ranking_lib.answer(worst)
    assert text.startswith("The set of best settings is **a, b**") and "significantly worse: c" in text
    noise = {"a": [0.2, 0.5, 0.3, 0.4], "b": [0.45, 0.25, 0.35, 0.3], "c": [0.3, 0.4, 0.45, 0.2]}
    tied = ranking_lib.rank([row(n, dict(enumerate(v))) for n, v in noise.items()])
    assert ranking_lib.answer(tied).startswith("No setting distinguishable: none has a significantly higher val loss")
    assert "only val-loss differences of about" in ranking_lib.answer(tied)
    single = ranking_lib.rank([row(n, {0: v}) for n, v in (("a", 0.2), ("b", 0.9))])
    assert ranking_lib.answer(single).startswith("Cannot tell: one run per setting")
    assert "**" not in ranking_lib.answer(single)  # the lowest value is named, not made a winner


def test_non_finite_val_loss_counts_as_the_worst_run():
    def run(seed, val_losses, status="done"):
        return {"name": f"s{seed}", "seed": seed, "config": None, "metrics": {"status": status, "bn_momentum": 0.99},
                "history": [{"epoch": i + 1, "val_loss": v, "loss": 0.5, "accuracy": 0.5, "val_accuracy": 0.5,
                             "seconds": 1.0, "images_per_second": 1.0} for i, v in enumerate(val_losses)]}
    from engine.config import TrainConfig
    data = {"settings": {"lr=0.1": [run(0, [0.7, None]), run(1, [0.6, 0.5], "diverged")],
                         "lr=0.01": [run(0, [0.6, 0.4]), run(1, [0.5, 0.45])]}}
    for runs in data["settings"].values():
        for r in runs:
            r["config"] = TrainConfig(lr=0.1 if r in data["settings"]["lr=0.1"] else 0.01, select="last")
    rows = collect.summarise(data)
    # Both runs of lr=0.1 diverged (one with a non-finite val loss): each counts as the sweep's worst, 0.5.
    assert rows[0]["statistic_by_unit"] == {0: 0.5, 1: 0.5} and rows[0]["repeats_done"] == 0
    assert rows[0]["flags"] == "1 of 2 diverged, 1 of 2 ended with a non-finite val loss"
    assert rows[1]["statistic"] == pytest.approx((0.5 + 0.475) / 2)
    ranking = ranking_lib.rank(rows)
    assert ranking["leader"] == "lr=0.01" and "[1 of 2 diverged" in ranking["text"]


def test_two_trial_sweep_end_to_end_resume_and_refusal(tiny_records, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    events = []
    cfg = tiny_sweep(tiny_records, out)
    results = sweep.run(cfg, on_event=lambda kind, trial, info: events.append((kind, trial.name)))
    assert [r["status"] for r in results] == ["done", "done"]
    assert ("start", "lr0.001_seed0") in events and ("epoch", "lr0.01_seed0") in events
    written = report.write(out)
    for name in ("sweep.json", "summary.csv", "summary.json", "curves.png", "compare.png", "report.md",
                 "report.html"):
        assert (out / name).is_file(), name
    page = (out / "report.html").read_text()
    assert "<table>" in page and 'alt="curves"' in page and '<img src="data:image/png;base64,' in page
    assert "lr=0.001" in page
    assert list((out / "trials" / "lr0.001_seed0" / "tb").glob("events.out.tfevents*"))  # HParams session
    assert list((out / "trials").glob("events.out.tfevents*"))  # HParams experiment
    assert [r["setting"] for r in written["rows"]] == ["lr=0.001", "lr=0.01"]
    assert all(r["repeats_done"] == 1 and r["val_loss"] is not None for r in written["rows"])
    assert "Comparisons: none possible with one run per setting" in (out / "report.md").read_text()
    recorded = json.loads((out / "sweep.json").read_text())
    assert [(t["name"], t["lr"], t["batch_size"], t["epochs"], t["seed"]) for t in recorded["trials"]] == \
        [("lr0.001_seed0", 1e-3, 16, 2, 0), ("lr0.01_seed0", 1e-2, 16, 2, 0)]
    assert recorded["choice"]["precision"] == "float32"
    # Rerun: finished trials are skipped, not trained again.
    events.clear()
    sweep.run(cfg, on_event=lambda kind, trial, info: events.append((kind, trial.name)))
    assert not [e for e in events if e[0] == "start"]
    with pytest.raises(UserError, match=r"another config \(differs in: lrs\)"):
        sweep.run(tiny_sweep(tiny_records, out, lrs=(1e-4, 1e-2)))


def test_failed_trial_is_recorded_with_its_traceback_and_sweep_goes_on(tiny_records, tmp_path, monkeypatch):
    from engine import training

    real = training.train

    def flaky(cfg, **kwargs):
        if cfg.lr == 1e-2:
            raise MemoryError("out of memory (simulated)")
        return real(cfg, **kwargs)
    monkeypatch.setattr(training, "train", flaky)
    cfg = tiny_sweep(tiny_records, tmp_path / "cmp")
    results = sweep.run(cfg)
    assert results[0]["status"] == "done"
    why = "MemoryError: out of memory (simulated); traceback in trials/lr0.01_seed0/failure.txt"
    assert results[1] == {"status": "failed", "reason": why}
    failure = tmp_path / "cmp" / "trials" / "lr0.01_seed0" / "failure.txt"
    kept = failure.read_text()
    assert kept.startswith("Traceback (most recent call last):") and ", in flaky\n" in kept
    assert kept.endswith("MemoryError: out of memory (simulated)\n")
    assert not (tmp_path / "cmp" / "trials" / "lr0.001_seed0" / "failure.txt").exists()
    summary = report.write(tmp_path / "cmp")
    assert summary["rows"][1]["statuses"] == ["failed"] and summary["ranking"]["best"] == "lr=0.001"
    assert f"- lr=0.01: 1 of 1 failed ({why}): not ranked" in summary["ranking"]["text"]
    text = (tmp_path / "cmp" / "report.md").read_text()
    assert f"| lr=0.01 | 0/1 | 1 of 1 failed ({why}) |" in text
    # Retried and finished: the earlier attempt's traceback goes with its failure.
    monkeypatch.setattr(training, "train", real)
    assert [r["status"] for r in sweep.run(cfg)] == ["done", "done"] and not failure.exists()


def test_a_programming_error_stops_the_sweep_with_its_traceback_kept(tiny_records, tmp_path, monkeypatch):
    from engine import training

    def broken(cfg, **kwargs):
        return cfg.no_such_field  # a bug: every trial would fail the same way
    monkeypatch.setattr(training, "train", broken)
    cfg = tiny_sweep(tiny_records, tmp_path / "cmp")
    first = plan_lib.trials(cfg)[0]
    started = []
    with pytest.raises(AttributeError, match="no_such_field"):
        sweep.run(cfg, on_event=lambda kind, trial, info: started.append(trial.name) if kind == "start" else None)
    assert started == [first.name]  # the next trial did not start
    assert ", in broken\n" in (first.config.out / "failure.txt").read_text()
    # Not recorded as failed (a rerun once it is fixed trains it), and its lock is released.
    assert not (first.config.out / "metrics.json").exists() and not (first.config.out / sweep.LOCK).exists()


def test_cli_dry_run_and_plain_output(tiny_records, tmp_path):
    from typer.testing import CliRunner

    from engine.cli import app

    args = ["compare", str(tiny_records), "--out", str(tmp_path / "c"), "--model", "TinyCNN", "--weights", "none",
            "--image-size", "64", "--lrs", "1e-3,1e-2", "--batch-sizes", "16", "--epochs", "1", "--repeats", "1",
            "--precision", "float32", "--xla", "off"]
    dry = CliRunner().invoke(app, args + ["--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "2 trials; roughly" in dry.output and not (tmp_path / "c").exists()
    bad = CliRunner().invoke(app, args + ["--axis", "nope"])
    assert str(bad.exception).startswith("--axis must be one of")
    # The real run in a process of its own, its output not a terminal: plain lines.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "lr0.001_seed0 epoch 1/1" in done.stdout and "lr0.01_seed0: done" in done.stdout
    assert "lr0.001_seed0: compiling" in done.stdout  # the first step's minute does not look stuck
    assert "lr0.01_seed0: starting (reusing the compiled step)" in done.stdout
    assert "\x1b[" not in done.stdout and "Answer: " in done.stdout
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert len(summary["rows"]) == 2


def test_shards_then_report_merges(tiny_records, tmp_path):
    out = tmp_path / "sharded"
    for index in range(2):
        sweep.run(tiny_sweep(tiny_records, out, epochs=1, shard=(index, 2)))
    merged = report.write(out)
    assert [r["setting"] for r in merged["rows"]] == ["lr=0.001", "lr=0.01"]
    assert all(r["repeats_done"] == 1 for r in merged["rows"])


def test_dashboard_on_a_terminal():
    from io import StringIO

    from rich.console import Console

    from engine.study.dashboard import Dashboard, sparkline

    assert sparkline([1.0, 0.5, 0.0]) == "█▄▁"
    console = Console(file=StringIO(), force_terminal=True, width=160, record=True)
    trial = plan_lib.trials(resolve("lr", "quick", None, Path("/x")))[0]
    with Dashboard(total_steps=10, console=console) as dash:
        dash("queued", trial, {})
        dash("start", trial, {})
        for _ in range(3):
            dash("batch", trial, {})
        dash("epoch", trial, {"epoch": 1, "loss": 0.7, "accuracy": 0.5, "val_loss": 0.69, "val_accuracy": 0.55,
                              "images_per_second": 80.0})
        dash("epoch", trial, {"epoch": 2, "loss": 0.6, "accuracy": 0.6, "val_loss": 0.60, "val_accuracy": 0.65,
                              "images_per_second": 82.0})
        dash("end", trial, {"status": "done"})
    text = console.export_text()
    row = next(line for line in text.splitlines() if "lr=0.01" in line)
    for cell in ("done", "3/3", "0.600", "0.650", "82.0", "█▁"):
        assert cell in row, (cell, row)
    assert "3/10" in text  # overall progress in steps


def test_lr_find_suggestion_rule_exact():
    from engine.study.lrfind import suggest

    lrs = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    smoothed = [0.70, 0.69, 0.50, 0.30, 0.90]
    # Slopes per decade (numpy.gradient): -0.01, -0.10, -0.195, +0.20, +0.60; steepest before the minimum: 1e-3.
    result = suggest(lrs, smoothed)
    assert result["suggested"] == 1e-3 and result["min_over_10"] == pytest.approx(1e-3)
    assert suggest(lrs[:2], smoothed[:2])["suggested"] is None


def test_lr_find_runs_and_stops_on_divergence(tiny_records, tmp_path):
    from engine.config import ModelConfig, TrainConfig
    from engine.study import lrfind

    cfg = TrainConfig(records=tiny_records, batch_size=8, precision="float32", xla="off",
                      model=ModelConfig(name="TinyCNN", weights="none", image_size=64))
    result = lrfind.run(cfg, tmp_path / "lr", start=1e-6, end=1e3, steps=30, quiet=True)
    assert 3 <= result["steps_run"] <= 30
    assert result["lrs"][0] == pytest.approx(1e-6) and all(b > a for a, b in zip(result["lrs"], result["lrs"][1:]))
    assert (tmp_path / "lr" / "lr_find.png").is_file() and (tmp_path / "lr" / "lr_find.json").is_file()
    with pytest.raises(UserError, match="0 < --start < --end"):
        lrfind.run(cfg, tmp_path / "lr", start=1.0, end=1e-3)


def test_stopping_the_parent_stops_its_trial_processes(tmp_path, monkeypatch):
    """SIGTERM or Ctrl-C reaching `engine compare --parallel N` is passed on to
    its trial processes: none is left training orphaned (nor holds the parent,
    whose relay threads wait for their output to end)."""
    import signal
    import threading
    import time

    from engine.study import launch

    started, real = [], subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real(*args, **kwargs))
        return started[-1]
    monkeypatch.setattr(launch, "worker_args", lambda *_: [sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(launch, "first_trial", lambda *_: None)
    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    # A real signal to this process while the trials train: Ctrl-C's SIGINT
    # (SIGTERM raises Terminated the same way, from engine.cli's handler).
    # Python's own Ctrl-C handler, whatever this process inherited (a shell
    # starts background jobs with SIGINT ignored, and Python then keeps it so).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        begun = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            launch.run_parallel(2, tmp_path, quiet=True)
        assert time.monotonic() - begun < 30  # not the children's 60 s
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(started) == 2 and [p.returncode for p in started] == [-15, -15]  # stopped by SIGTERM


def test_trial_processes_start_after_sweep_json_and_are_told_only_folder_shard_and_count(tiny_records, tmp_path,
                                                                                         monkeypatch):
    from engine.study import compare, launch

    out = tmp_path / "p"
    started = []

    class Recorded:  # a trial process that runs nothing: what it was given is the point
        def __init__(self, args, **kwargs):
            stored = json.loads((out / "sweep.json").read_text())  # written before any process starts
            started.append((args, kwargs["env"], stored))
            self.stdout = iter(())

        def wait(self):
            return 0
    monkeypatch.setattr(launch, "subprocess", SimpleNamespace(Popen=Recorded, PIPE=subprocess.PIPE,
                                                             STDOUT=subprocess.STDOUT))
    monkeypatch.setattr(sys, "argv", ["engine", "compare", "--parallel", "2", "--lrs", "9"])  # never read
    cfg = tiny_sweep(tiny_records, out)
    outcome = compare.run(cfg, parallel="2", quiet=True)
    folder = str(out.resolve())
    assert [args for args, _, _ in started] == [
        [sys.executable, "-m", "engine.study.worker", folder, "--shard", f"{i}/2", "--processes", "2"] for i in (0, 1)]
    assert not any("ENGINE_PARALLEL_PROCESSES" in env for _, env, _ in started)
    stored = started[0][2]
    assert stored["config"]["lrs"] == [1e-3, 1e-2] and stored["choice"]["precision"] == "float32"
    assert stored["config"]["base"]["records"] == str(tiny_records.resolve())  # resolved once, by the parent
    assert stored["command"] == ["resume", folder] and len(stored["trials"]) == 2
    assert outcome["results"] == [] and outcome["report"] is not None
    # What a trial process reads: the sweep as the parent resolved it, its shard chosen by the process.
    loaded, numerics, stored_plan = sweep.load(Path(folder))
    assert sweep.changed_fields(stored, loaded) == [] and numerics.precision.value == "float32"
    assert [t.name for t in plan_lib.select(stored_plan, replace(loaded, shard=(1, 2)))] == ["lr0.01_seed0"]
    # --force on a changed sweep: sweep.json written anew first, and the processes told to start over.
    started.clear()
    compare.run(tiny_sweep(tiny_records, out, lrs=(1e-3,)), parallel="2", force=True, quiet=True)
    assert [args[-1] for args, _, stored in started] == ["--restart", "--restart"]
    assert all(stored["config"]["lrs"] == [1e-3] for _, _, stored in started)
    # Its command line alone: a bad one is refused before anything is read.
    from engine.study import worker
    with pytest.raises(SystemExit):
        worker.parse([folder, "--shard", "two", "--processes", "2"])
    assert worker.parse([folder, "--shard", "1/2", "--processes", "2"]).shard == (1, 2)


def test_each_child_gets_one_of_the_inherited_gpus():
    from engine.study.launch import visible_gpu

    assert [visible_gpu(i, None, 2) for i in range(3)] == ["0", "1", "0"]
    # Slurm (or the user) gave this process GPUs 3 and 5: the children share exactly those.
    assert [visible_gpu(i, "3,5", 2) for i in range(3)] == ["3", "5", "3"]
    assert visible_gpu(0, "GPU-8a3f", 1) == "GPU-8a3f"
    assert visible_gpu(0, None, 0) is None and visible_gpu(1, "", 0) is None


def test_interrupted_sweep_resumes_where_it_stopped(tiny_records, tmp_path):
    out = tmp_path / "killed"
    cfg = tiny_sweep(tiny_records, out, epochs=2)

    def interrupt(kind, trial, info):
        if kind == "epoch" and trial.name == "lr0.01_seed0" and info["epoch"] == 1:
            raise KeyboardInterrupt  # as Ctrl-C, or a kill after this epoch's checkpoint
    with pytest.raises(KeyboardInterrupt):
        sweep.run(cfg, on_event=interrupt)
    state = json.loads((out / "trials" / "lr0.01_seed0" / "ckpt" / "state.json").read_text())
    assert state["epoch"] == 0  # the first epoch was checkpointed
    events = []
    results = sweep.run(cfg, on_event=lambda kind, trial, info: events.append((kind, trial.name, info.get("epoch"))))
    assert [r["status"] for r in results] == ["done", "done"]
    assert ("start", "lr0.001_seed0", None) not in events  # finished trial skipped
    assert [e[2] for e in events if e[0] == "epoch"] == [2]  # the other resumed at its second epoch


def test_config_file_fields(tiny_records, tmp_path):
    from typer.testing import CliRunner

    from engine.cli import app

    (tmp_path / "sweep.toml").write_text('axis = "batch"\nbatch_sizes = [8, 16]\nepochs = 1\nrepeats = 3\n'
                                         'model = "TinyCNN"\nweights = "none"\nimage_size = 64\n')
    args = ["compare", str(tiny_records), "--out", str(tmp_path / "c"), "--dry-run"]
    done = CliRunner().invoke(app, args + ["--config", str(tmp_path / "sweep.toml")])
    assert done.exit_code == 0, done.output
    # --repeats 3 without --splits: 3 splits of the pool, one seed each.
    assert "6 trials" in done.stdout and "3 splits x 1 seed" in done.stdout
    (tmp_path / "bad.toml").write_text('axes = "lr"\n')
    bad = CliRunner().invoke(app, args + ["--config", str(tmp_path / "bad.toml")])
    assert isinstance(bad.exception, UserError) and "unknown fields axes" in str(bad.exception)


def test_cpu_children_get_their_own_cores_and_thread_pools():
    from engine.study.launch import child_env, cpu_slices

    assert cpu_slices(2, [4, 5]) == [[4], [5]]
    assert cpu_slices(2, [0, 1, 2, 3, 4]) == [[0, 1], [2, 3]]
    assert cpu_slices(3, [0, 1]) == [[0], [1], [0]]
    env = child_env(1, 2, None, 0, [0, 1, 2, 3])
    assert env == {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}
    assert child_env(1, 2, None, 2, [0, 1]) == {"CUDA_VISIBLE_DEVICES": "1"}


def test_child_events_reach_the_parent_dashboard_with_batches_summed():
    import io

    import numpy as np

    from engine.study.dashboard import Dashboard
    from engine.study.worker import EventWriter, read_event
    from engine.study.plan import trials

    plan = trials(resolve("lr", "quick", None, Path("out"), lrs=(1e-3, 1e-2), epochs=2))
    stream = io.StringIO()
    writer = EventWriter(stream, every=3600.0)  # no time-based flush: only before other events
    writer("start", plan[1], {})
    for _ in range(3):
        writer("batch", plan[1], {"batch": 1})
    writer("epoch", plan[1], {"epoch": 1, "loss": np.float32(0.5), "val_loss": np.float64(0.25)})
    lines = stream.getvalue().splitlines()
    events = [read_event(line) for line in lines]
    assert [e[0] for e in events] == ["start", "batch", "epoch"]
    assert events[1] == ("batch", plan[1].name, {"steps": 3})  # the first batch line is sent at once, then summed
    assert events[2][2] == {"epoch": 1, "loss": 0.5, "val_loss": 0.25}
    assert read_event("lr0.01_seed0 epoch 1/2 ...") is None and read_event("@engine-event {broken") is None
    board = Dashboard(total_steps=10, quiet=True)
    for kind, name, info in events:
        board(kind, next(t for t in plan if t.name == name), info)
    row = board.rows[plan[1].name]
    assert row["steps"] == 3 and row["steps_per_epoch"] == 3 and row["val_losses"] == [0.25]
    assert board.progress.tasks[0].completed == 3


def test_parallel_auto_follows_measured_rates_and_memory(monkeypatch, tmp_path):
    from engine import machine
    from engine.study import launch
    from engine.training import pace

    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path))  # no rates other tests recorded

    monkeypatch.setattr(machine, "gpu_capabilities", lambda: [])
    monkeypatch.setattr(machine, "cpu_cores", lambda: 2)
    monkeypatch.setattr(machine, "available_memory_mb", lambda: 20000.0)
    shape = pace.Shape("InceptionV3", 77, 1, 5, "float32", "off")
    count, why = launch.auto_parallel(6, shape)  # nothing measured: the cores split evenly
    assert count == 2 and "fewer than two process counts measured" in why
    monkeypatch.setattr(machine, "cpu_cores", lambda: 8)
    assert launch.auto_parallel(6, shape)[0] == 4  # 6 would leave 2 cores idle
    assert launch.auto_parallel(3, shape)[0] == 2
    monkeypatch.setattr(machine, "cpu_cores", lambda: 2)
    pace.record(shape, train_img_s=2.0)
    assert launch.auto_parallel(6, shape)[0] == 2  # one count measured: still the even split
    pace.record(pace.Shape("InceptionV3", 77, 1, 5, "float32", "off", processes=2), train_img_s=1.2)
    assert launch.auto_parallel(6, shape)[0] == 2  # 2 x 1.2 img/s beats 1 x 2.0
    pace.record(pace.Shape("InceptionV3", 77, 1, 5, "float32", "off", processes=2), train_img_s=0.9)
    assert launch.auto_parallel(6, shape)[0] == 1
    pace.record(pace.Shape("InceptionV3", 77, 1, 5, "float32", "off", processes=2), train_img_s=1.2)
    monkeypatch.setattr(machine, "available_memory_mb", lambda: 4000.0)  # room for one process
    assert launch.auto_parallel(6, shape)[0] == 1
    assert launch.auto_parallel(1, shape)[0] == 1  # one trial: nothing to share
    with pytest.raises(UserError, match="--parallel must be"):
        launch.parallel_count("two", None, [])
    # A runner of one shard or one trial is one process: auto says so, a count is refused.
    assert launch.parallel_count("auto", SweepConfig(shard=(0, 4)), [])[0] == 1
    assert launch.parallel_count("auto", SweepConfig(trial="3"), [])[0] == 1
    assert launch.parallel_count("1", SweepConfig(shard=(0, 4)), [])[0] == 1
    with pytest.raises(UserError, match="leave out --shard"):
        launch.parallel_count("2", SweepConfig(shard=(1, 4)), [])


def test_estimate_deals_trials_to_processes_and_compiles_once_per_process(monkeypatch, tmp_path):
    from engine import training
    from engine.training import pace

    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path))
    plan = plan_lib.trials(resolve("batch", "quick", None, Path("out")))  # batch 8, 16, 32 x seeds 0, 1
    counts = {"train": 160, "val": 40, "test": 40, "channels": 1, "built": True}

    def shape(trial, processes):
        cfg = trial.config
        precision, xla = training.likely_numerics(cfg)
        return pace.Shape(cfg.model.name, cfg.model.image_size, 1, cfg.batch_size, precision, xla,
                          processes=processes)

    for processes in (1, 2):
        for trial in plan:
            pace.record(shape(trial, processes), train_img_s=10.0 * processes, eval_img_s=30.0, first_step_s=20.0,
                        save_s=0.5, reuse_step_s=2.0)

    def run(trial, processes, compiles):
        return pace.run_seconds(shape(trial, processes), epochs=3, train_images=160, val_images=40,
                                test_images=40, compile_first=compiles)

    alone, _ = estimate.estimate_seconds(SweepConfig(), plan, counts)
    # One compile in all; the process' start-up once.
    assert alone == pytest.approx(estimate.START_UP_SECONDS + sum(run(t, 1, i == 0) for i, t in enumerate(plan)))
    two, basis = estimate.estimate_seconds(SweepConfig(), plan, counts, processes=2)
    lanes = [sum(run(t, 2, i == 0) for i, t in enumerate(plan[lane::2])) for lane in (0, 1)]
    assert two == pytest.approx(estimate.START_UP_SECONDS + max(lanes)) and basis.startswith("measured here")
    assert estimate.step_key(plan[0].config) == estimate.step_key(plan[-1].config)  # one step for every batch size
