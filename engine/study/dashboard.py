"""The sweep's live view: a rich table on a terminal, one line per epoch elsewhere."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

BLOCKS = "▁▂▃▄▅▆▇█"


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


class Dashboard:
    """Receives sweep events (``engine.study.sweep.run``'s ``on_event``) and shows them.

    One row per trial: setting, seed, status, epoch x/y, train loss/acc, val
    loss/acc, img/s, ETA and a val-loss sparkline, under an overall progress
    bar counted in training steps. When the console is not a terminal, a plain
    line is printed per finished epoch and per finished trial instead; with
    ``quiet`` nothing is printed.
    """

    def __init__(self, total_steps: int, quiet: bool = False, console: Console | None = None):
        self.console = console or Console()
        self.quiet = quiet
        self.live_mode = self.console.is_terminal and not quiet
        self.rows: dict[str, dict] = {}
        self.progress = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=self.console)
        self.task = self.progress.add_task("sweep", total=total_steps)
        self.live = Live(self.render(), console=self.console, refresh_per_second=2) if self.live_mode else None

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.update(self.render())
            self.live.__exit__(*exc)

    def __call__(self, kind: str, trial, info: dict) -> None:
        row = self.rows.setdefault(trial.name, {"setting": trial.setting, "seed": trial.config.seed,
                                                "status": "queued", "epoch": 0, "epochs": trial.config.epochs,
                                                "val_losses": [], "started": None, "steps": 0,
                                                "steps_per_epoch": None})
        if kind == "start":
            compiles = info.get("compiles", True)
            row["status"], row["started"] = "compiling" if compiles else "starting", time.perf_counter()
            if not self.live_mode and not self.quiet:  # a log must not look stuck for the minute this takes
                self.console.print(f"{trial.name}: compiling (the first step traces and compiles the model)"
                                   if compiles else f"{trial.name}: starting (reusing the compiled step)",
                                   highlight=False, soft_wrap=True)
        elif kind == "batch":  # one step, or "steps" of them (a child process sums them)
            steps = info.get("steps", 1)
            row["status"] = "running"
            row["steps"] += steps
            self.progress.advance(self.task, steps)
        elif kind == "epoch":
            row["epoch"] = info["epoch"]
            row["steps_per_epoch"] = row["steps_per_epoch"] or row["steps"]
            for key in ("loss", "accuracy", "val_loss", "val_accuracy", "images_per_second"):
                row[key] = info.get(key)
            row["val_losses"].append(info.get("val_loss"))
            if not self.live_mode and not self.quiet:
                self.console.print(f"{trial.name} epoch {info['epoch']}/{row['epochs']}"
                                   f"  loss {number(info.get('loss'))}"
                                   f"  acc {number(info.get('accuracy'))}  val_loss {number(info.get('val_loss'))}"
                                   f"  val_acc {number(info.get('val_accuracy'))}"
                                   f"  {number(info.get('images_per_second'), 1)} img/s", highlight=False,
                                   soft_wrap=True)
        elif kind == "note":
            self.console.print(info["text"], highlight=False, soft_wrap=True)
        elif kind == "end":
            row["status"] = info.get("status", "done")
            if row["status"] == "done" and row["epoch"] < row["epochs"]:
                row["epoch"] = info.get("epochs_done", row["epochs"])
            if not self.live_mode and not self.quiet:
                reason = f" ({info['reason']})" if info.get("reason") else ""
                self.console.print(f"{trial.name}: {row['status']}{reason}", highlight=False, soft_wrap=True)
        if self.live:
            self.live.update(self.render())

    def eta(self, row: dict) -> str:
        if row["status"] not in ("running",) or not row["epoch"] or row["started"] is None:
            return ""
        per_epoch = (time.perf_counter() - row["started"]) / row["epoch"]
        return f"{per_epoch * (row['epochs'] - row['epoch']):.0f} s"

    def render(self):
        table = Table(expand=False)
        for column in ("setting", "seed", "status", "epoch", "loss", "acc", "val loss", "val acc", "img/s", "ETA",
                       "val loss curve"):
            table.add_column(column, justify="left" if column in ("setting", "status", "val loss curve") else "right")
        colours = {"done": "green", "diverged": "red", "failed": "red", "running": "cyan", "compiling": "yellow",
                   "starting": "yellow", "running elsewhere": "blue"}
        for row in self.rows.values():
            status = f"[{colours.get(row['status'], 'white')}]{row['status']}[/]"
            table.add_row(row["setting"], str(row["seed"]), status, f"{row['epoch']}/{row['epochs']}",
                          number(row.get("loss")), number(row.get("accuracy")), number(row.get("val_loss")),
                          number(row.get("val_accuracy")), number(row.get("images_per_second"), 1), self.eta(row),
                          sparkline(row["val_losses"]))
        return Group(table, self.progress)
