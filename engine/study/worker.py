"""A trial process of ``engine compare --parallel N``.

The parent (``launch.run_parallel``) starts each as::

    python -m engine.study.worker DIR --shard i/n --processes N [--restart]

It is told the sweep folder, its shard, how many trial processes share the
machine and whether its trials start over; the sweep itself (records,
precision, XLA, BatchNorm momentum, the trial list) it reads from
``DIR/sweep.json``, which the parent wrote before starting it. It never sees
the parent's command line and resolves nothing again. Its sweep events go
to the parent as JSON lines on stdout (``EventWriter``, read back by
``read_event``); its errors are one line and its exit status the engine's
(``engine.errors``).

Its first event names the trial it is starting, sent before TensorFlow is
imported: importing it and compiling the step take most of a minute on a
CPU, and the parent's dashboard says so from the first second instead of
showing the trial as queued. This module imports nothing heavy at the top
for that reason.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from engine.errors import RuntimeFailure, Terminated, UserError, exit_status, one_line
# The run folder's format, without TensorFlow: the first message goes out before it is imported.
from engine.results import runs

# A trial process reports its sweep events as JSON lines with this prefix on
# its stdout; the parent's dashboard shows them.
EVENT_PREFIX = "@engine-event "


def _plain(value):
    """JSON for what Keras logs and results hold besides JSON types (NumPy scalars, paths)."""
    return value.item() if hasattr(value, "item") else str(value)


class EventWriter:
    """A child process' ``on_event``: each sweep event as one JSON line on
    stdout for the parent (``launch.run_parallel``). Batch events are summed
    and sent at most every ``every`` seconds (and before any other event): a
    line per step would cost the parent a parse per step of every child."""

    def __init__(self, stream=None, every: float = 0.5):
        self.stream, self.every = stream or sys.stdout, every
        self.pending, self.pending_trial, self.sent = 0, None, 0.0

    def __call__(self, kind: str, trial, info: dict) -> None:
        if kind == "batch":
            self.pending, self.pending_trial = self.pending + 1, trial
            if time.monotonic() - self.sent < self.every:
                return
        self.flush()
        if kind != "batch":
            self.write(kind, trial.name, info)

    def flush(self) -> None:
        if self.pending:
            self.write("batch", self.pending_trial.name, {"steps": self.pending})
            self.pending = 0
        self.sent = time.monotonic()

    def write(self, kind: str, name: str, info: dict) -> None:
        line = json.dumps({"kind": kind, "trial": name, "info": info}, default=_plain)
        self.stream.write(EVENT_PREFIX + line + "\n")
        self.stream.flush()


def read_event(line: str) -> tuple[str, str, dict] | None:
    """(kind, trial name, info) of an ``EventWriter`` line; None for any other line."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(line[len(EVENT_PREFIX):])
        return event["kind"], event["trial"], event["info"]
    except (ValueError, KeyError, TypeError):
        return None


def first_trial(folder: Path, shard: tuple[int, int], restart: bool = False) -> str | None:
    """The name of the trial shard ``shard`` of the sweep in ``folder`` trains
    first: its first trial not finished (any, with ``restart``), from
    sweep.json and the trials' metrics.json alone (no TensorFlow). None when
    there is none or the files cannot be read (the shard's own events then
    say what it does)."""
    try:
        names = [t["name"] for t in json.loads((folder / "sweep.json").read_text())["trials"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    index, count = shard
    for name in names[index::count]:
        if restart or not runs.finished(folder / "trials" / name):
            return name
    return None


def run(folder: Path, shard: tuple[int, int], processes: int, restart: bool = False, on_event=None) -> list[dict]:
    """Runs (or resumes) shard ``shard`` of the sweep stored in ``folder``
    with its stored numerics, on one trainer; returns the trials' results."""
    from engine.study import sweep as sweep_lib

    sweep, numerics, plan = sweep_lib.load(folder)
    if plan is None:  # the parent begins the sweep, which stores its plan, before starting any worker
        raise UserError(f"{folder / 'sweep.json'} holds no trial plan (an older engine's): run engine resume {folder}")
    return sweep_lib.run_trials(replace(sweep, shard=shard), numerics, plan, restart=restart, on_event=on_event,
                                processes=processes)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.study.worker",
                                     description="One trial process of engine compare --parallel N.")
    parser.add_argument("folder", type=Path, help="the sweep folder, holding sweep.json")
    parser.add_argument("--shard", required=True, help="i/n: the i-th of n slices of the trials")
    parser.add_argument("--processes", type=int, required=True, help="trial processes sharing this machine")
    parser.add_argument("--restart", action="store_true", help="train this shard's trials from scratch")
    args = parser.parse_args(argv)
    try:
        index, count = (int(part) for part in args.shard.split("/"))
    except ValueError:
        parser.error(f"--shard takes i/n, not {args.shard!r}")
    args.shard = (index, count)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    writer = EventWriter()
    starting = first_trial(args.folder, args.shard, args.restart)
    if starting is not None:  # before TensorFlow: the dashboard shows the trial starting now
        writer.write("starting", starting, {})
    if not os.environ.get("ENGINE_VERBOSE"):
        from engine.progress import quiet_tensorflow
        quiet_tensorflow()
    # Imported here, after TensorFlow's start-up lines are dropped (the sweep imports it).
    from engine.study import sweep as sweep_lib

    signal.signal(signal.SIGTERM, sweep_lib.terminate)
    try:
        results = run(args.folder, args.shard, args.processes, args.restart, on_event=writer)
        writer.flush()
        # Exit status 1 with the line the parent recognises (launch.TRIALS_FAILED):
        # it counts failed trials from their events and says so itself.
        sweep_lib.check_failed(results)
    except (UserError, RuntimeFailure, OSError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        sys.exit(exit_status(err))
    except KeyboardInterrupt:
        sys.exit(130)
    except Terminated:
        sys.exit(143)


if __name__ == "__main__":
    main()
