"""A sweep killed at any moment resumes at once when its command is run again,
and a run of a whole sweep never ends as a success with trials untrained.

The chaos test kills the whole sweep (the parent and its two trial processes,
``kill -9`` on their process group) during start-up, while a checkpoint is
being written, mid-epoch and while the report is being written, reruns the
same command at once each time, and checks that the final histories and
metrics equal those of an uninterrupted run of the same layout.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import factories
from engine.errors import exit_status, one_line
from engine.io import FolderLock
from engine.study.worker import EVENT_PREFIX
from engine.training.pace import PACE_FILE

# Slows every durable write (the checkpoints': fsync) in the processes it is
# loaded into, so that a kill can land inside one: a slow disk, simulated.
SLOW_DISK = """
import os, time
seconds = float(os.environ.get("CHAOS_FSYNC_SECONDS", "0"))
if seconds:
    _fsync = os.fsync
    def fsync(fd):
        time.sleep(seconds)
        _fsync(fd)
    os.fsync = fsync
"""


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return factories.synthetic_records(tmp_path_factory.mktemp("chaos"), {"train": 32, "val": 16, "test": 16}, 48,
                                       image_size=32)


def compare_args(records: Path, out: Path, lrs: str = "1e-3,1e-2", epochs: int = 3, repeats: int = 2,
                 parallel: int = 2) -> list[str]:
    return ["compare", str(records), "--out", str(out), "--axis", "lr", "--lrs", lrs, "--batch-sizes", "8",
            "--epochs", str(epochs), "--repeats", str(repeats), "--model", "TinyCNN", "--weights", "none",
            "--image-size", "32", "--precision", "float32", "--xla", "off", "--bn-stats", "moving",
            f"--parallel={parallel}"]  # with "=": the trial processes must not see it and spawn again


def command(records: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *compare_args(records, out)]


def start(records: Path, out: Path, hooks: Path, fsync_seconds: float = 0.0) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        [str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]), CHAOS_FSYNC_SECONDS=str(fsync_seconds))
    # Its own process group: the trial processes it starts belong to it, and die with it.
    return subprocess.Popen(command(records, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def kill_when(proc: subprocess.Popen, moment, timeout: float = 240) -> None:
    """kill -9 the whole sweep as soon as ``moment()`` is true; fails when the
    sweep ends or the time runs out first."""
    deadline = time.time() + timeout
    while not moment():
        assert proc.poll() is None, f"the sweep ended before the moment: {proc.communicate()[0][-2000:]}"
        assert time.time() < deadline, "the moment never came"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def trial_names(out: Path) -> list[str]:
    return [t["name"] for t in json.loads((out / "sweep.json").read_text())["trials"]]


def histories(out: Path) -> dict[str, list[dict]]:
    """Each trial's history without the columns that time the run."""
    timing = {"seconds", "train_seconds", "val_seconds", "save_seconds", "first_step_seconds",
              "images_per_second"}
    return {name: [{k: v for k, v in row.items() if k not in timing} for row in rows(out / "trials" / name /
                                                                                      "history.csv")]
            for name in trial_names(out)}


def results(out: Path) -> dict[str, dict]:
    """Each trial's validation and test metrics."""
    found = {}
    for name in trial_names(out):
        metrics = json.loads((out / "trials" / name / "metrics.json").read_text())
        found[name] = {"status": metrics["status"], "val": metrics.get("val", {}).get("metrics"),
                       "test": metrics.get("test", {}).get("metrics")}
    return found


def any_file(out: Path, pattern: str) -> bool:
    return any(out.glob(pattern))


def test_a_whole_sweep_killed_at_any_moment_resumes_at_once_to_the_same_results(records, tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_DISK)
    out = tmp_path / "chaos"
    # During start-up: trials have begun (their config written), no epoch has ended.
    kill_when(start(records, out, hooks), lambda: any_file(out, "trials/*/config.json"))
    assert not any_file(out, "trials/*/metrics.json")
    # While a checkpoint is being written: its temporary file exists, the rename has not happened.
    kill_when(start(records, out, hooks, fsync_seconds=1.0), lambda: any_file(out, "trials/*/ckpt/.*.tmp"))
    # Mid-epoch: one epoch more than before has ended, and the next one is under way.
    before = sum(len(rows(p)) for p in out.glob("trials/*/history.csv"))
    kill_when(start(records, out, hooks),
              lambda: sum(len(rows(p)) for p in out.glob("trials/*/history.csv") if p.stat().st_size) > before)
    # While the report is being written: every trial finished, its first file written, report.md not yet.
    kill_when(start(records, out, hooks), lambda: (out / "summary.csv").is_file())
    assert not (out / "report.md").is_file()
    # The last rerun (the report left to write) and the uninterrupted run go side by side: they share nothing.
    reference = tmp_path / "reference"
    final, whole = start(records, out, hooks), start(records, reference, hooks)
    output, _ = final.communicate(timeout=300)
    assert final.returncode == 0, output
    assert (out / "report.md").is_file() and not any_file(out, "trials/*/.lock")
    output, _ = whole.communicate(timeout=300)
    assert whole.returncode == 0, output
    # The uninterrupted run: the trial processes' events reach the parent's dashboard (plain lines off a
    # terminal), not raw: no event line and no [i] relay of them; one report, by the parent.
    assert all(f"{name}: done" in output for name in trial_names(reference)), output
    assert "lr0.01_split2_seed0 epoch 3/3" in output and EVENT_PREFIX not in output
    assert "[0]" not in output and output.count("Report: ") == 1
    # Each trial process measured its rate as one of two: what --parallel auto compares.
    entries = json.loads((Path(os.environ["ENGINE_CACHE_DIR"]) / PACE_FILE).read_text()).values()
    assert any(e["shape"]["processes"] == 2 and e["shape"]["model"] == "TinyCNN" for e in entries)
    # 2 learning rates x 2 splits of the pool (--repeats 2), the splits written during the first start-up.
    assert len(trial_names(out)) == 4 and trial_names(out) == trial_names(reference)
    assert histories(out) == histories(reference)
    assert results(out) == results(reference)
    assert {r["status"] for r in results(out).values()} == {"done"}


def test_a_whole_sweep_left_to_a_live_runner_is_not_a_success(records, tmp_path):
    from typer.testing import CliRunner

    from engine.cli import app

    out = tmp_path / "held"
    args = compare_args(records, out, lrs="1e-2", epochs=1, repeats=1, parallel=1)
    # Another runner, alive on this host, holds the one trial: this run trains nothing and says so.
    lock = FolderLock(out / "trials" / "lr0.01_seed0" / ".lock")
    assert lock.acquire()
    try:
        done = CliRunner().invoke(app, args)
    finally:
        lock.release()
    # (engine.cli.main prints the error's one line and exits with its status.)
    assert exit_status(done.exception) == 3, done.output
    line = one_line(done.exception)
    assert line.startswith("1 trial of this sweep is held unfinished by other live runners: lr0.01_seed0 "
                           f"(pid {os.getpid()} on "), line
    report = (out / "report.md").read_text()
    assert "1 of 1 running" in report  # the "not finished" column counts it
    # A runner of its share only (one --trial) leaves a held trial to its holder and exits 0.
    assert lock.acquire()
    try:
        done = CliRunner().invoke(app, [*args, "--trial", "lr0.01_seed0"], catch_exceptions=False)
    finally:
        lock.release()
    assert done.exit_code == 0 and "running elsewhere" in done.output, done.output
    # The holder gone, the same command trains it.
    done = CliRunner().invoke(app, args, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert json.loads((out / "trials" / "lr0.01_seed0" / "metrics.json").read_text())["status"] == "done"
