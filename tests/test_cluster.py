"""Sweeps across machines: one trial per job-array task with the commands of the
shipped Slurm and Kubernetes examples, trial locks, a killed task rerun by the
command `engine report` names (`engine resume`, from sweep.json), and training
through the tf.data service."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import factories
from engine.config import ModelConfig, PipelineConfig, TrainConfig
from engine.io import FolderLock

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# A tiny study for the examples' commands (the command line wins over their preset).
TINY = ["--preset", "quick", "--model", "TinyCNN", "--weights", "none", "--image-size", "32", "--lrs",
        "1e-3,1e-2,3e-3", "--batch-sizes", "8", "--epochs", "6", "--repeats", "1", "--precision", "float32",
        "--xla", "off"]


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    return factories.synthetic_records(tmp_path_factory.mktemp("cluster"), {"train": 16, "val": 8, "test": 8}, 32)


def slurm_command(records_dir: Path, out: Path) -> list[str]:
    """The engine command of examples/slurm/compare.sbatch, its variables filled in."""
    line = next(line for line in (EXAMPLES / "slurm" / "compare.sbatch").read_text().splitlines()
                if line.startswith("srun engine "))
    line = line.replace('"$RECORDS"', str(records_dir)).replace('"$OUT"', str(out))
    return shlex.split(line.replace("${ENGINE_ARGS:-}", shlex.join(TINY)))[1:]


def indexed_job_command(records_dir: Path, out: Path) -> list[str]:
    """The container command of examples/kubernetes/compare-indexed-job.yaml, on a local folder."""
    job = yaml.safe_load((EXAMPLES / "kubernetes" / "compare-indexed-job.yaml").read_text())
    assert job["spec"]["completionMode"] == "Indexed" and "backoffLimitPerIndex" in job["spec"]
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    return [c.replace("/data/records", str(records_dir)).replace("/data/sweep", str(out)) for c in command] + TINY


def report_command(out: Path) -> list[str]:
    """The `engine report` job that examples/slurm/submit.sh queues after the array."""
    line = next(line for line in (EXAMPLES / "slurm" / "submit.sh").read_text().splitlines() if "--wrap" in line)
    wrapped = shlex.split(line.split("--wrap", 1)[1])[0]
    return shlex.split(wrapped.replace("$OUT", str(out)))


def engine(command: list[str], env: dict) -> subprocess.Popen:
    assert command[0] == "engine"
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *command[1:]], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def engine_here(command: list[str], env: dict) -> tuple[int, str, str]:
    """A command that trains nothing, run in this process with ``env`` as its
    environment: (exit status, stdout, stdout and stderr). Each process the
    test spares saves TensorFlow's start-up (8-10 s on a 2-core CPU)."""
    from typer.testing import CliRunner

    from engine.cli import app

    assert command[0] == "engine"
    unset = {k: None for k in os.environ if k not in env}
    # (The lock timings are read from the environment when a lock is made: CliRunner's env holds them.)
    done = CliRunner().invoke(app, command[1:], env={**unset, **env}, catch_exceptions=False)
    return done.exit_code, done.stdout, done.output


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=timeout)
    return proc.returncode, output


def wait_for(path: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_job_array_from_the_shipped_examples(tiny_records, tmp_path):
    out = tmp_path / "sweep"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", ENGINE_LOCK_HEARTBEAT_SECONDS="0.5",
               ENGINE_LOCK_STALE_SECONDS="3", ENGINE_CACHE_DIR=str(tmp_path / "cache"))
    slurm = slurm_command(tiny_records, out)
    assert slurm[:2] == ["engine", "compare"] and "--trial" in slurm and "auto" in slurm
    task = lambda index: dict(env, SLURM_ARRAY_TASK_ID=str(index + 4), SLURM_ARRAY_TASK_MIN="4")  # noqa: E731
    # Task 0 starts first (its process' start-up overlaps the listing).
    holder = engine(slurm, task(0))
    code, listed, output = engine_here([*slurm, "--dry-run", "--json"], env)
    assert code == 0, output
    plan = json.loads(listed)
    assert plan["count"] == 3 and [t["index"] for t in plan["trials"]] == [0, 1, 2]
    first = out / "trials" / plan["trials"][0]["name"]

    # Task 0 holds its trial's lock; a second runner of the same task starts then and skips it.
    # (The holder is paused meanwhile, so it cannot finish first, whatever the machine's speed;
    # the second runner allows a minute of missed heartbeats.)
    wait_for(first / ".lock" / "heartbeat")
    holder.send_signal(signal.SIGSTOP)
    duplicate = engine(slurm, dict(task(0), ENGINE_LOCK_STALE_SECONDS="60"))
    other = engine(indexed_job_command(tiny_records, out), dict(env, JOB_COMPLETION_INDEX="1"))
    code, output = finish(duplicate)
    assert code == 0 and f"{first.name}: running elsewhere" in output, output
    holder.send_signal(signal.SIGCONT)
    # The holder is killed after its first checkpoint: its lock stays, without heartbeat.
    wait_for(first / "ckpt" / "state.json")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (first / ".lock").exists() and not (first / "metrics.json").exists()
    code, output = finish(other)
    assert code == 0 and "lr0.01_seed0: done" in output, output
    # The dead holder ran on this host: its lock is stale at once, with no wait for its heartbeat.

    code, _, output = engine_here(report_command(out), env)
    assert code == 0, output
    assert "3 trials: 1 finished, 2 missing." in output, output
    rerun = next(line for line in output.splitlines() if line.startswith(f"- {first.name}: missing"))
    assert "interrupted after" in rerun
    command = shlex.split(rerun.split("rerun: `", 1)[1].rstrip("`"))
    assert command[-2:] == ["--trial", first.name] and str(out) in command
    resumed = engine(command, env)
    last = engine(slurm, task(2))
    code, past, output = engine_here(slurm, task(3))
    assert code == 0 and "array index 3: the sweep has 3 trials (0-2); nothing to run here" in past, output
    code, output = finish(resumed)
    assert code == 0 and f"took over its lock (pid {holder.pid} on " in output, output
    assert f"{first.name}: done" in output, output
    history = (first / "history.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in history] == list(range(1, 7))  # resumed, not restarted
    assert finish(last)[0] == 0
    code, _, output = engine_here(report_command(out), env)
    assert code == 0 and "3 trials: 3 finished." in output, output
    sweep = json.loads((out / "sweep.json").read_text())
    # The rerun commands come from sweep.json alone: `engine resume DIR` reads the rest from it.
    assert command[:3] == ["engine", "resume", str(out.resolve())] and sweep["command"] == command[1:3]
    assert sweep["config"]["base"]["records"] == str(tiny_records.resolve())
    assert sweep["choice"]["precision"] == "float32" and len(sweep["trials"]) == 3
    for name in ("summary.json", "report.md", "curves.png"):
        assert (out / name).is_file()


def test_trial_auto_without_an_array_is_one_line(tiny_records, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")}
    done = subprocess.run([sys.executable, "-m", "engine.cli", *slurm_command(tiny_records, tmp_path / "s")[1:]],
                          env=dict(env, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: --trial auto needs SLURM_ARRAY_TASK_ID")


def test_array_index_from_the_schedulers_variables():
    from engine.study.launch import array_index

    assert array_index({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "3"}) == 4
    assert array_index({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_STEP": "2"}) == 4
    assert array_index({"JOB_COMPLETION_INDEX": "5"}) == 5


def test_lock_is_exclusive_and_a_stale_one_is_taken_over_once(tmp_path):
    path = tmp_path / "trial" / ".lock"
    first = FolderLock(path, stale=60, heartbeat=0.05)
    assert first.acquire() and not FolderLock(path, stale=60).acquire()
    first.release()
    assert not path.exists()
    # A holder that stalled: its first heartbeat is an hour away, so a heartbeat
    # file backdated beyond `stale` stays that way while the takers look.
    stalled = FolderLock(path, stale=60, heartbeat=3600)
    assert stalled.acquire()
    old = time.time() - 10
    os.utime(path / "heartbeat", (old, old))
    takers = [FolderLock(path, stale=5, heartbeat=0.05) for _ in range(4)]
    won = []
    threads = [threading.Thread(target=lambda t=t: won.append(t.acquire())) for t in takers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False, False, False, True]
    winner = next(t for t in takers if t.holder().get("token") == t.token)
    # The winner took the stale lock over, or (rarely) came to the folder in the instant between the
    # stale lock's rename and its replacement's: either way one holder.
    why = f"pid {os.getpid()} on {socket.gethostname()} sent no heartbeat for 10 s"
    assert winner.taken_over in (None, why)
    stalled.release()  # the stalled holder's late release must not remove the new holder's lock
    assert path.exists() and not FolderLock(path, stale=5).acquire()
    winner.release()


HOLD_AND_WAIT = """
import sys, time
from engine.io import FolderLock
lock = FolderLock(sys.argv[1], stale=600, heartbeat=600)
assert lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_dead_holder_on_this_host_is_stale_at_once(tmp_path):
    path = tmp_path / "trial" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    taker = FolderLock(path, stale=600)
    state, why = taker.state()
    assert state == "held" and f"pid {holder.pid} on " in why and taker.held_elsewhere()
    assert not taker.acquire()
    holder.kill()
    holder.stdout.close()
    # Not reaped yet: a zombie has exited all the same (the kill takes effect within moments).
    deadline = time.time() + 10
    while taker.state()[0] == "held" and time.time() < deadline:
        time.sleep(0.01)
    state, why = taker.state()
    assert state == "stale" and why.endswith("has exited"), why
    if sys.platform.startswith("linux"):  # a zombie: exited, not yet reaped
        assert Path(f"/proc/{holder.pid}/stat").read_text().split(") ")[1].startswith("Z")
    holder.wait()
    assert taker.acquire() and taker.taken_over.endswith("has exited")  # at once, with a heartbeat 0 s old
    taker.release()
    assert not path.exists()


def test_a_reused_pid_or_another_host_keeps_the_heartbeat_rule(tmp_path):
    from engine import io

    me = io.this_holder()
    assert io.holder_alive(me) is True
    # The same pid, started at another time: a later process that reuses a dead holder's pid.
    assert io.holder_alive(dict(me, pid=os.getppid(), start="1")) is False
    assert io.holder_alive(dict(me, pid=os.getppid(), start=io._process_start(os.getppid()))) is True
    # Another host (or another boot, or another pid namespace) cannot be asked: None, the heartbeat decides.
    for key in ("host", "boot", "pidns"):
        assert io.holder_alive(dict(me, **{key: "elsewhere"})) is None
    path = tmp_path / ".lock"
    path.mkdir()
    (path / "owner").write_text(json.dumps(dict(me, host="elsewhere", pid=1)) + "\n")
    (path / "heartbeat").touch()
    lock = FolderLock(path, stale=5)
    assert lock.state()[0] == "held" and "stale in" in lock.state()[1] and not lock.acquire()
    old = time.time() - 10
    os.utime(path / "heartbeat", (old, old))
    assert lock.state() == ("stale", "pid 1 on elsewhere sent no heartbeat for 10 s")
    assert lock.acquire()
    lock.release()


def test_a_lock_is_never_seen_without_its_owner(tmp_path):
    # A lock is renamed into place whole: any runner that sees the folder can read who holds it.
    path = tmp_path / ".lock"
    seen, stop = [], threading.Event()

    def look():
        while not stop.is_set():
            try:  # an open folder keeps its inode: it is not reused while we look
                folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue
            try:
                owned = os.path.exists(f"/proc/self/fd/{folder}/owner") if sys.platform.startswith("linux") \
                    else (path / "owner").exists()
                try:  # missing owner counts only if this folder still is the lock (not released meanwhile)
                    if owned or os.stat(path).st_ino == os.fstat(folder).st_ino:
                        seen.append(owned)
                except FileNotFoundError:
                    pass
            finally:
                os.close(folder)
    watcher = threading.Thread(target=look)
    watcher.start()
    for _ in range(200):
        lock = FolderLock(path, stale=60, heartbeat=60)
        assert lock.acquire()
        lock.release()
    stop.set()
    watcher.join()
    assert seen and all(seen)


def test_array_tasks_without_records_build_the_embedded_set_once(tmp_path, monkeypatch):
    from engine.data import embedded

    built, inside = [], []

    def slow_build(root, out, image_size, seed, quiet, workers, subset=None):
        inside.append(1)
        assert len(inside) == 1, "two builders at once"
        time.sleep(0.5)
        out.mkdir(parents=True)
        (out / "manifest.json").write_text("{}")
        built.append(out)
        inside.pop()
    monkeypatch.setattr(embedded, "build", slow_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(embedded.synthetic_records(32, quiet=True)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1 and sorted(flag for _, flag in results) == [False, False, True]


def test_training_through_the_tf_data_service(tiny_records, tmp_path):
    import tensorflow as tf

    from engine import training

    dispatcher = tf.data.experimental.service.DispatchServer()
    worker = tf.data.experimental.service.WorkerServer(tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher.target.split("://")[1]))
    cfg = TrainConfig(records=tiny_records, out=tmp_path / "run", epochs=2, batch_size=8, precision="float32",
                      xla="off", bootstrap=10, data=PipelineConfig(data_service=dispatcher.target),
                      model=ModelConfig(name="TinyCNN", weights="none", image_size=32))
    result = training.train(cfg, quiet=True)
    assert result["status"] == "done" and result["epochs_done"] == 2
    assert result["val"]["n"] == 8 and result["test"]["n"] == 8  # every example scored once
    del worker
