"""Where a sweep's runners come from: several trial processes at once
(``engine compare --parallel N``), or one trial per task of a job array
(``--trial auto``: Slurm arrays, Kubernetes Indexed Jobs).

``run_parallel`` starts N trial processes (``engine.study.worker``) on a
sweep whose sweep.json its caller has written: each is told the sweep
folder, its shard and the process count, nothing else, and sends its sweep
events back as JSON lines (``worker.EventWriter``, ``read_event``). Each gets one
GPU, or on a CPU its own slice of the cores (``child_env``, ``cpu_slices``);
``auto_parallel`` decides how many.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from engine import machine, training
from engine.data.manifest import load_manifest
from engine.errors import RuntimeFailure, UserError
from engine.study.worker import first_trial, read_event

# A trial process' line for failed trials (``sweep.check_failed``): the parent reports them itself.
TRIALS_FAILED = re.compile(r"\d+ trials? failed ")

# Start-up chatter of TensorFlow in a child's output, not worth relaying.
NOISE = ("I0000", "W0000", "E0000", "WARNING: All", "To enable")
# The module a trial process runs.
WORKER = "engine.study.worker"


def array_index(environ=os.environ) -> int:
    """This task's index in its job array: ``SLURM_ARRAY_TASK_ID`` (less
    ``SLURM_ARRAY_TASK_MIN``, divided by ``SLURM_ARRAY_TASK_STEP`` when set),
    else ``JOB_COMPLETION_INDEX`` (Kubernetes Indexed Jobs)."""
    try:
        if environ.get("SLURM_ARRAY_TASK_ID"):
            first = int(environ.get("SLURM_ARRAY_TASK_MIN") or 0)
            return (int(environ["SLURM_ARRAY_TASK_ID"]) - first) // int(environ.get("SLURM_ARRAY_TASK_STEP") or 1)
        if environ.get("JOB_COMPLETION_INDEX"):
            return int(environ["JOB_COMPLETION_INDEX"])
    except ValueError:
        raise UserError("--trial auto: SLURM_ARRAY_TASK_ID / JOB_COMPLETION_INDEX is not a whole number") from None
    raise UserError("--trial auto needs SLURM_ARRAY_TASK_ID (a Slurm job array) or JOB_COMPLETION_INDEX "
                    "(a Kubernetes Indexed Job), and neither is set; give --trial INDEX or NAME instead")


def resolve_trial(sweep, plan: list):
    """The sweep with ``--trial auto`` turned into this task's index of the
    sweep's ``plan``; None when the index is past the last trial (an array
    sized larger than the sweep)."""
    if sweep.trial != "auto":
        return sweep
    index, count = array_index(), len(plan)
    if index >= count:
        print(f"array index {index}: the sweep has {count} trials (0-{count - 1}); nothing to run here", flush=True)
        return None
    return replace(sweep, trial=str(index))


def worker_args(folder: Path, index: int, count: int, restart: bool = False) -> list[str]:
    """The command line of trial process ``index`` of ``count``: the sweep
    folder, its shard and the process count (and ``--restart`` when its
    trials start over); the rest it reads from the folder's sweep.json."""
    return [sys.executable, "-m", WORKER, str(folder.resolve()), "--shard", f"{index}/{count}",
            "--processes", str(count), *(["--restart"] if restart else [])]


def visible_gpu(index: int, inherited: str | None, gpus: int) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` of child ``index``: the index-th entry (round
    robin) of the list this process inherited (a scheduler such as Slurm sets
    one), else of 0..gpus-1; None without GPUs."""
    if gpus == 0:
        return None
    if inherited is not None and inherited.strip():
        devices = [d.strip() for d in inherited.split(",") if d.strip()]
    else:
        devices = [str(i) for i in range(gpus)]
    return devices[index % len(devices)]


# Host memory one trial process may need (InceptionV3 at 299 px, Adam state,
# the decoded splits and TensorFlow itself: ~2.5 GB measured at batch 15).
PROCESS_MB = 3072.0


def cpu_slices(count: int, cpus: list[int]) -> list[list[int]]:
    """The CPUs (of ``cpus``, this process' own) each of ``count`` processes
    is pinned to: equal, disjoint slices (round robin when there are more
    processes than CPUs)."""
    if count >= len(cpus):
        return [[cpus[i % len(cpus)]] for i in range(count)]
    size = len(cpus) // count
    return [cpus[i * size:(i + 1) * size] for i in range(count)]


def child_env(index: int, count: int, inherited: str | None, gpus: int, cpus: list[int]) -> dict[str, str]:
    """What child ``index`` of ``count`` gets in its environment: one GPU
    (``CUDA_VISIBLE_DEVICES``) where there are GPUs; on a CPU-only machine
    thread pools sized to its slice of the cores (TensorFlow reads
    ``TF_NUM_INTRAOP_THREADS``/``TF_NUM_INTEROP_THREADS`` at start-up):
    left at their default, each process would size its pools to every core
    and the processes would fight over them. (The process count itself is
    on the child's command line: ``worker_args``.)"""
    env = {}
    device = visible_gpu(index, inherited, gpus)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    else:
        env["TF_NUM_INTRAOP_THREADS"] = str(len(cpu_slices(count, cpus)[index]))
        env["TF_NUM_INTEROP_THREADS"] = "1"
    return env


def even_split(cores: int, most: int) -> int:
    """The most processes, up to ``most``, that divide ``cores`` into equal slices."""
    return max(n for n in range(1, max(1, min(cores, most)) + 1) if cores % n == 0)


def auto_parallel(trials: int, shape=None) -> tuple[int, str]:
    """``--parallel auto``: how many trial processes, and why.

    With GPUs, one process per GPU. On a CPU, the count whose measured total
    rate (processes x each one's training img/s, recorded by earlier
    ``--parallel`` runs in ``training.pace``) is highest, among those the
    host memory holds (``PROCESS_MB`` each). Until two counts were measured
    here: the most processes (up to the trials and memory) that split the
    cores evenly, because one trial process scales poorly over cores (2
    one-core processes ran the quick preset 1.36x as fast as one two-core
    process on the 2-core AVX2 CPU; one thread did 0.58x of two at 299 px:
    benchmarks/RESULTS.md).
    """
    gpus = len(machine.gpu_capabilities())
    if gpus:
        return max(1, min(gpus, trials)), f"one process per GPU ({gpus})"
    cores = machine.cpu_cores()
    memory = machine.available_memory_mb()
    fits = int(memory // PROCESS_MB) if memory else cores
    candidates = range(1, max(1, min(cores, trials, fits)) + 1)
    totals = {}
    if shape is not None:
        for n in candidates:
            pace = training.estimate_pace(replace(shape, processes=n))
            if pace.measured:  # at this many processes
                totals[n] = n * pace.train_img_s
    if len(totals) < 2:
        count = even_split(cores, max(candidates))
        if count == 1:
            return 1, f"one process: {cores} core(s), {trials} trial(s), memory for {fits}"
        return count, (f"{count} processes of {cores // count} core(s): fewer than two process counts "
                       "measured here, and one trial process uses several cores poorly")
    best = max(totals, key=totals.get)
    table = ", ".join(f"{n} x {totals[n] / n:.1f}" for n in sorted(totals))
    return best, f"measured img/s per process: {table}"


def parallel_count(setting: str, sweep, plan: list, channels: int | None = None) -> tuple[int, str]:
    """``--parallel`` resolved: a count as given, or ``auto`` (see ``auto_parallel``)
    for the sweep's trials (``plan``: all of them) at its first trial's
    shape; and why. A runner of one shard or one trial (``--shard``,
    ``--trial``) is one process. ``channels``: the records' (read from their
    manifest when not given)."""
    count = check_parallel(setting, sweep)
    if count is not None:
        return count, "set"
    if sweep.trial or sweep.shard[1] > 1:
        return 1, "one shard or trial of the sweep"
    if not plan:
        return 1, "no trials"
    cfg = plan[0].config
    precision, xla = training.likely_numerics(cfg)
    channels = channels or load_manifest(sweep.base.records)["channels"]
    shape = training.PaceShape(cfg.model.name, cfg.model.image_size, channels, cfg.batch_size, precision, xla)
    return auto_parallel(len(plan), shape)


def check_parallel(setting: str, sweep) -> int | None:
    """``--parallel`` checked against the sweep (a count > 1 cannot be given
    with ``--shard``/``--trial``): its count, or None for ``auto``."""
    if setting == "auto":
        return None
    try:
        count = int(setting)
    except ValueError:
        count = 0
    if count < 1:
        raise UserError(f"--parallel must be a whole number >= 1 or auto, not {setting!r}")
    if count > 1 and (sweep.trial or sweep.shard[1] > 1):
        raise UserError("--parallel N runs the trials as shards itself: leave out --shard/--trial, "
                        "or give --parallel 1")
    return count


def run_parallel(count: int, folder: Path, *, restart: bool = False, quiet: bool = False, plan=(), on_event=None,
                 show=None) -> None:
    """Runs the sweep stored in ``folder`` as ``count`` shard processes.

    The caller has written ``folder/sweep.json`` (``sweep.begin``): every
    process reads the sweep from it (``worker_args``); ``restart``: their
    trials start over. Each process gets one GPU (CUDA_VISIBLE_DEVICES)
    when there are GPUs, and on a CPU its own slice of the cores (pinned,
    thread pools sized to it). Their sweep events (``EventWriter``) go to
    ``on_event`` with the trial of ``plan`` they name, so one dashboard
    shows every process' trials; any other line of theirs goes to ``show``
    (default print) with a ``[i]`` prefix. Each process' first trial is
    marked ``starting`` as the process starts. The report is the caller's to
    write once all have finished.
    """
    gpus = len(machine.gpu_capabilities())
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    by_name = {trial.name: trial for trial in plan}
    show = show or (lambda text: print(text, flush=True))
    lock = threading.Lock()  # one relay thread per child; the dashboard is not thread-safe
    errors: dict[int, str] = {}  # each child's last error line, kept under --quiet too
    procs = []
    for i in range(count):
        procs.append(_start_child(i, count, folder, restart, gpus, cpus, inherited))
        # The trial it trains first is starting from now (importing TensorFlow,
        # compiling the step: most of a minute on a CPU), not queued.
        starting = first_trial(folder, (i, count), restart)
        if on_event is not None and starting in by_name:
            on_event("starting", by_name[starting], {})

    def relay(i, proc):
        for line in proc.stdout:
            event = read_event(line)
            with lock:
                if event is not None:
                    kind, name, info = event
                    if on_event is not None and name in by_name:
                        on_event(kind, by_name[name], info)
                else:
                    _relay_text(i, line, errors, quiet, show)

    _join_or_stop([threading.Thread(target=relay, args=(i, p)) for i, p in enumerate(procs)], procs)
    check_children([p.wait() for p in procs], errors)


def _start_child(i: int, count: int, folder: Path, restart: bool, gpus: int, cpus: list[int],
                 inherited: str | None) -> subprocess.Popen:
    """Starts trial process ``i`` of ``count``, its output (stderr too) piped
    to the parent: its GPU or thread pools in its environment (``child_env``),
    and on a CPU pinned to its slice of the cores where the OS allows it."""
    env = {**os.environ, **child_env(i, count, inherited, gpus, cpus)}
    pin = None if gpus or not hasattr(os, "sched_setaffinity") else cpu_slices(count, cpus)[i]
    return subprocess.Popen(worker_args(folder, i, count, restart),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=(lambda cpus=pin: os.sched_setaffinity(0, cpus)) if pin else None)


def _relay_text(i: int, line: str, errors: dict[int, str], quiet: bool, show) -> None:
    """A line of child ``i`` that is no sweep event: an error line is kept in
    ``errors`` (for ``check_children``, under ``quiet`` too); it and any other
    line but TensorFlow's start-up chatter go to ``show`` unless ``quiet``."""
    if line.startswith("error: "):
        errors[i] = line.rstrip()[len("error: "):]
        if not quiet:
            show(f"[{i}] {line.rstrip()}")
    elif not quiet and not line.startswith(NOISE):
        show(f"[{i}] {line.rstrip()}")


def _join_or_stop(threads: list[threading.Thread], procs: list[subprocess.Popen]) -> None:
    """Runs the relay ``threads`` until every child's output has ended; on
    any interruption stops the children (``stop``) and re-raises."""
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:
        # SIGTERM (Terminated) or Ctrl-C reached this process while its trial
        # processes train: each is told to stop the same way (its last
        # finished epoch's checkpoint kept, its lock released), not left
        # training orphaned; their relays then end with their output.
        stop(procs)
        raise


def stop(procs: list[subprocess.Popen], grace: float = 60.0) -> None:
    """Sends SIGTERM to every trial process still running and waits for
    them to finish; one still running after ``grace`` seconds is killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_children(codes: list[int], errors: dict[int, str]) -> None:
    """Raises for the first child that failed other than by failed trials
    (those the parent reports itself, from their events, with exit status 1):
    its own error line, as a user error when it exited 2."""
    for i, code in enumerate(codes):
        line = errors.get(i, "")
        if code == 0 or (code == 1 and TRIALS_FAILED.match(line)):
            continue
        message = f"shard process {i} of {len(codes)} failed: {line or f'exit status {code}'}"
        if code == 2:
            raise UserError(message)
        raise RuntimeFailure(message if "rerun" in message else f"{message}; rerun the same command to resume")
