"""The sweep's live view: a rich table on a terminal, one line per event elsewhere.

It must never look stuck. A trial process spends most of a minute importing
TensorFlow and compiling the step before its first batch, so a trial says
``starting, compiling the step`` with the seconds it has spent so far from
the moment its process starts (``launch.run_parallel`` and the worker's first
event), not ``queued``. After a resume the overall bar counts the steps of
the trials already finished and of the epochs a resumed trial had done, and
each sparkline has one bar per finished epoch (read from the trial's
history.csv): the bar ends at its total and the curves are whole.
"""

from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.errors import DamagedState, UserError
from engine.results import runs

log = logging.getLogger(__name__)

BLOCKS = "▁▂▃▄▅▆▇█"
# A trial whose process is starting, or whose first step traces and compiles the model.
STARTING = "starting, compiling the step"
# A later trial of a process that reuses the compiled step.
REUSING = "starting"
COLOURS = {"done": "green", "diverged": "red", "failed": "red", "running": "cyan", STARTING: "yellow",
           REUSING: "yellow", "running elsewhere": "blue"}


def sparkline(values: list[float]) -> str:
    """Unicode blocks scaled between the smallest and largest value."""
    values = [v for v in values if v is not None]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low or 1.0
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int((v - low) / span * (len(BLOCKS) - 1)))] for v in values)


def number(value, digits=3) -> str:
    return "" if value is None else f"{float(value):.{digits}f}"


def clock(seconds: float | None) -> str:
    return "-:--:--" if seconds is None else str(datetime.timedelta(seconds=round(seconds)))


def history(folder: Path) -> list[dict]:
    """The finished epochs in a trial folder's history.csv (none when it has
    none, or when it cannot be read: a warning says why, and the view goes
    on without those epochs' curve)."""
    path = runs.history_path(folder)
    if not path.exists():  # no epoch finished yet
        return []
    try:
        return runs.read_history(folder)
    except (DamagedState, OSError) as err:
        log.warning("%s: not read for the dashboard's curve (%s: %s)", path, type(err).__name__, err)
        return []


def value(row: dict, key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def planned_steps_per_epoch(trial) -> int | None:
    """Steps an epoch of ``trial`` trains, as the sweep's total counts them
    (``estimate.total_steps``): its records' training images // its batch size;
    None when its records cannot be read."""
    from engine.data.manifest import load_manifest

    try:
        return load_manifest(trial.config.records)["splits"]["train"]["count"] // trial.config.batch_size
    except UserError as err:  # no records (yet): the trial says so itself if it cannot train
        log.debug("%s: no planned steps per epoch (%s)", trial.name, err)
        return None
    except Exception as err:  # noqa: BLE001 - no plan: the bar counts the batches it sees
        log.warning("%s: no planned steps per epoch from %s (%s: %s)", trial.name, trial.config.records,
                    type(err).__name__, err)
        return None


class Dashboard:
    """Receives sweep events (``engine.study.sweep.run``'s ``on_event``) and shows them.

    One row per trial: setting, seed, status, epoch x/y, train loss/acc, val
    loss/acc, img/s, ETA and a val-loss sparkline, under an overall progress
    bar counted in training steps. When the console is not a terminal, a plain
    line is printed per starting trial, per finished epoch and per finished
    trial instead; with ``quiet`` nothing is printed.

    Kinds of event: ``queued``; ``starting`` (its process is starting);
    ``start`` (``compiles``: its first step traces and compiles the model);
    ``batch`` (``steps``, default 1); ``epoch``; ``note``; ``end`` (the
    result: ``status``, ``steps_per_epoch``, ``epochs_done``).
    ``steps_per_epoch(trial)`` gives a trial's planned steps per epoch (by
    default from its records), with which the steps of epochs trained before
    this run are counted on the bar.
    """

    def __init__(self, total_steps: int, quiet: bool = False, console: Console | None = None,
                 steps_per_epoch=planned_steps_per_epoch):
        self.console = console or Console()
        self.quiet = quiet
        self.live_mode = self.console.is_terminal and not quiet
        self.rows: dict[str, dict] = {}
        self.planned = {}  # trial name -> steps per epoch (None: unknown), read once
        self.steps_per_epoch = steps_per_epoch
        # The ETA is this run's own: the steps trained here per second so far, over
        # the steps left. (rich's would count the finished trials' steps as speed.)
        self.progress = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                                 TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"), console=self.console)
        self.task = self.progress.add_task("sweep", total=total_steps, eta=clock(None))
        self.trained, self.first_batch = 0, None
        # Rendered at every refresh, so the seconds of a starting trial count up.
        self.live = Live(console=self.console, refresh_per_second=2, get_renderable=self.render) \
            if self.live_mode else None

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.refresh()
            self.live.__exit__(*exc)

    def say(self, text: str) -> None:
        """A plain line, off a terminal (a live table shows it instead)."""
        if not self.live_mode and not self.quiet:
            self.console.print(text, highlight=False, soft_wrap=True)

    def __call__(self, kind: str, trial, info: dict) -> None:
        row = self.rows.setdefault(trial.name, {"setting": trial.setting, "seed": trial.config.seed,
                                                "status": "queued", "epoch": 0, "epochs": trial.config.epochs,
                                                "val_losses": [], "started": None, "since": None, "steps": 0,
                                                "counted": 0, "steps_per_epoch": None, "first_epoch": 0,
                                                "resumed": False})
        now = time.perf_counter()
        if kind == "starting" and row["status"] == "queued":
            row["status"], row["since"] = STARTING, now
            self.say(f"{trial.name}: starting (its process imports TensorFlow and compiles the step)")
        elif kind == "start":
            compiles = info.get("compiles", True)
            row["status"], row["started"] = STARTING if compiles else REUSING, now
            row["since"] = row["since"] or now
            self.say(f"{trial.name}: compiling (the first step traces and compiles the model)" if compiles
                     else f"{trial.name}: starting (reusing the compiled step)")
        elif kind == "batch":  # one step, or "steps" of them (a child process sums them)
            if not row["resumed"]:
                self.resume(trial, row)
            steps = info.get("steps", 1)
            row["status"] = "running"
            row["steps"] += steps
            self.trained += steps
            self.first_batch = self.first_batch or now
            self.count(row, steps)
        elif kind == "epoch":
            row["epoch"] = info["epoch"]
            row["steps_per_epoch"] = row["steps_per_epoch"] or row["steps"]
            if row["first_epoch"] and row["counted"] < info["epoch"] * row["steps_per_epoch"]:
                # The epochs done before this resume, now that an epoch's steps are known.
                self.count(row, row["first_epoch"] * row["steps_per_epoch"] - (row["counted"] - row["steps"]))
            for key in ("loss", "accuracy", "val_loss", "val_accuracy", "images_per_second"):
                row[key] = info.get(key)
            # One bar per finished epoch, whatever an earlier session left.
            row["val_losses"] = row["val_losses"][:info["epoch"] - 1] + [info.get("val_loss")]
            self.say(f"{trial.name} epoch {info['epoch']}/{row['epochs']}  loss {number(info.get('loss'))}"
                     f"  acc {number(info.get('accuracy'))}  val_loss {number(info.get('val_loss'))}"
                     f"  val_acc {number(info.get('val_accuracy'))}"
                     f"  {number(info.get('images_per_second'), 1)} img/s")
        elif kind == "note":
            self.console.print(info["text"], highlight=False, soft_wrap=True)
        elif kind == "end":
            self.end(trial, row, info)

    def resume(self, trial, row: dict) -> None:
        """At a trial's first batch here: the epochs an earlier session
        finished (its history.csv, rewritten by then if the trial started
        over), shown and counted on the bar."""
        row["resumed"] = True
        done = history(trial.config.out)
        if not done:
            return
        self.fill(row, done)
        row["first_epoch"] = len(done)
        per_epoch = self.planned_per_epoch(trial)
        if per_epoch:
            row["steps_per_epoch"] = per_epoch
            self.count(row, len(done) * per_epoch)

    def end(self, trial, row: dict, info: dict) -> None:
        """A trial finished (or skipped as finished, failed, running elsewhere):
        its status, its curve, and every step it will not train counted."""
        row["status"] = info.get("status", "done")
        if row["status"] == "done" and row["epoch"] < row["epochs"]:
            row["epoch"] = info.get("epochs_done", row["epochs"])
        if not row["val_losses"] and row["status"] in ("done", "diverged"):  # finished before this run
            self.fill(row, history(trial.config.out))
        per_epoch = info.get("steps_per_epoch") or self.planned_per_epoch(trial)
        if per_epoch:
            self.count(row, row["epochs"] * per_epoch - row["counted"])
        reason = f" ({info['reason']})" if info.get("reason") else ""
        self.say(f"{trial.name}: {row['status']}{reason}")

    def fill(self, row: dict, done: list[dict]) -> None:
        """The row's epoch, numbers and curve from the rows of a history.csv."""
        if not done:
            return
        row["epoch"] = max(row["epoch"], len(done))
        row["val_losses"] = [value(epoch, "val_loss") for epoch in done]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "images_per_second"):
            row[key] = value(done[-1], key)

    def planned_per_epoch(self, trial) -> int | None:
        if trial.name not in self.planned:
            self.planned[trial.name] = self.steps_per_epoch(trial) if self.steps_per_epoch else None
        return self.planned[trial.name]

    def count(self, row: dict, steps: int) -> None:
        """``steps`` more of the row's trial on the overall bar."""
        if steps > 0:
            row["counted"] += steps
            self.progress.advance(self.task, steps)

    def eta(self, row: dict) -> str:
        session = row["epoch"] - row["first_epoch"]
        if row["status"] != "running" or session <= 0 or row["started"] is None:
            return ""
        per_epoch = (time.perf_counter() - row["started"]) / session
        return f"{per_epoch * (row['epochs'] - row['epoch']):.0f} s"

    def status(self, row: dict) -> str:
        text = row["status"]
        if text in (STARTING, REUSING) and row["since"] is not None:
            text += f" {time.perf_counter() - row['since']:.0f} s"
        return f"[{COLOURS.get(row['status'], 'white')}]{text}[/]"

    def render(self):
        task = self.progress.tasks[0]
        seconds = None
        if self.first_batch is not None and self.trained:
            rate = self.trained / max(time.perf_counter() - self.first_batch, 1e-9)
            seconds = max(task.total - task.completed, 0) / rate
        self.progress.update(self.task, eta=clock(seconds))
        table = Table(expand=False)
        for column in ("setting", "seed", "status", "epoch", "loss", "acc", "val loss", "val acc", "img/s", "ETA",
                       "val loss curve"):
            table.add_column(column, justify="left" if column in ("setting", "status", "val loss curve") else "right")
        for row in list(self.rows.values()):  # a copy: relay threads add rows while this renders
            table.add_row(row["setting"], str(row["seed"]), self.status(row), f"{row['epoch']}/{row['epochs']}",
                          number(row.get("loss")), number(row.get("accuracy")), number(row.get("val_loss")),
                          number(row.get("val_accuracy")), number(row.get("images_per_second"), 1), self.eta(row),
                          sparkline(row["val_losses"]))
        return Group(table, self.progress)
