"""Where a sweep's runners come from: several shard processes at once
(``engine compare --parallel N``), or one trial per task of a job array
(``--trial auto``: Slurm arrays, Kubernetes Indexed Jobs)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from engine import machine
from engine.errors import UserError

# Options the parent sets for each child itself.
OWN_OPTIONS = ("--parallel", "--shard")
# Start-up chatter of TensorFlow in a child's output, not worth relaying.
NOISE = ("I0000", "W0000", "E0000", "WARNING: All", "To enable")


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


def resolve_trial(sweep):
    """The sweep with ``--trial auto`` turned into this task's index; None when
    the index is past the last trial (an array sized larger than the sweep)."""
    from dataclasses import replace

    from engine.study.sweep import trials

    if sweep.trial != "auto":
        return sweep
    index, count = array_index(), len(trials(sweep, every_shard=True))
    if index >= count:
        print(f"array index {index}: the sweep has {count} trials (0-{count - 1}); nothing to run here", flush=True)
        return None
    return replace(sweep, trial=str(index))


def rerun_args(records: Path | None, out: Path, config: Path | None, given: dict) -> list[str]:
    """The ``engine`` arguments that run this sweep again from anywhere (paths
    made absolute), without the options that pick a part of it."""
    args = ["compare", *([str(records.resolve())] if records else []), "--out", str(out.resolve())]
    if config:
        args += ["--config", str(config.resolve())]
    for name, value in given.items():
        flag = "--" + name.replace("_", "-")
        if value is None or name in ("trial", "shard"):
            continue
        args += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return args


def child_args(argv: list[str], records: Path | None) -> list[str]:
    """The parent's ``compare`` arguments for a child: without ``--parallel``
    and ``--shard`` (as ``--flag value`` or ``--flag=value``), and with the
    records folder the parent resolved when it was not given."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in OWN_OPTIONS:
            skip = True
            continue
        if arg.startswith(tuple(f"{flag}=" for flag in OWN_OPTIONS)):
            continue
        args.append(arg)
    if "compare" in args and records is not None and str(records) not in args:
        args.insert(args.index("compare") + 1, str(records))
    return args


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


def run_parallel(count: int, argv: list[str], records: Path | None, quiet: bool) -> None:
    """Runs the sweep as ``count`` shard processes into the same folder.

    Each process gets one GPU (CUDA_VISIBLE_DEVICES) when there are GPUs; their
    plain per-epoch lines are relayed with a ``[i]`` prefix. The report is
    written once all have finished.
    """
    gpus = len(machine.gpus())
    args = child_args(argv, records)
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    procs = []
    for i in range(count):
        env = dict(os.environ)
        device = visible_gpu(i, inherited, gpus)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        procs.append(subprocess.Popen([sys.executable, "-m", "engine.cli", *args, "--shard", f"{i}/{count}"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))

    def relay(i, proc):
        for line in proc.stdout:
            if not quiet and not line.startswith(NOISE):
                print(f"[{i}] {line}", end="", flush=True)

    threads = [threading.Thread(target=relay, args=(i, p)) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [i for i, p in enumerate(procs) if p.wait() != 0]
    if failed:
        raise UserError(f"shard process{'es' if len(failed) > 1 else ''} {', '.join(map(str, failed))} of "
                        f"{count} failed (see their lines above); rerun the same command to resume")
