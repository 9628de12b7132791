"""The one model snapshot a sweep scores its runs by, declared before any
trial trains (the trials' ``select``, stored in sweep.json).

Every number the report ranks, tabulates or tests with comes from it:

* ``last``: the end of training. The ranking statistic and the validation
  metrics are the mean of the last ``TAIL`` epochs (of all epochs when
  fewer: one spiky final epoch does not decide a ranking); the test metrics
  are those of the last epoch's model, the one model of those epochs kept.
* ``best``: each run's epoch of lowest validation loss (its ``best.keras``).
  The ranking statistic is that lowest loss: the minimum of the run's
  epochs, so optimistic, the more so the more epochs; the validation and
  test metrics are that epoch's and that model's.
"""

from __future__ import annotations

import math

import numpy as np

from engine.study.stats import TAIL, tail_mean


def select_of(run: dict) -> str:
    """The snapshot a run was scored with (its trial config's ``select``)."""
    return getattr(run.get("config"), "select", "last")


def epochs(run: dict) -> list[dict]:
    """The history rows the run's snapshot reads."""
    history = run["history"]
    if select_of(run) == "best":
        finite = [h for h in history if h.get("val_loss") is not None and math.isfinite(h["val_loss"])]
        return [min(finite, key=lambda h: h["val_loss"])] if finite else []
    return history[-TAIL:]


def statistic(run: dict) -> float | None:
    """The run's ranking statistic (validation loss at its snapshot); None
    when it is not finite (a diverging run)."""
    if select_of(run) == "best":
        chosen = epochs(run)
        return float(chosen[0]["val_loss"]) if chosen else None
    return tail_mean([h.get("val_loss") for h in run["history"]])


def value(run: dict, key: str) -> float | None:
    """A history column (e.g. ``val_auc``) at the run's snapshot: the mean over
    its epochs; None when any of them lacks a finite value."""
    values = [h.get(key) for h in epochs(run)]
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None
    return float(np.mean(values))


def describe(select: str, epochs_run: int) -> str:
    """The report's sentence on the snapshot."""
    if select == "best":
        return (f"Snapshot: each run's epoch of lowest validation loss (`--select best`): the ranking statistic is "
                f"that loss, the minimum of {epochs_run} epochs (optimistic), and the validation and test metrics "
                f"are that epoch's model's.")
    tail = min(TAIL, epochs_run)
    return (f"Snapshot: the end of training (`--select last`): the ranking statistic and the validation metrics "
            f"are the mean of the last {tail} epoch{'s' if tail != 1 else ''}, the test metrics the last "
            f"epoch's model's.")
