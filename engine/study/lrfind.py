"""``engine lr-find``: a learning-rate range test.

The learning rate grows exponentially from ``start`` to ``end`` over
``steps`` training steps of the real model and pipeline (augmentation
included), the loss smoothed by an exponential moving average with bias
correction; the test stops early once the smoothed loss exceeds 4x its
minimum (divergence) or is not finite.

Suggestion rule (stated in the output): the learning rate where the smoothed
loss falls fastest, i.e. the most negative slope of loss against
log10(learning rate), searched before the minimum of the smoothed loss.
The minimum's learning rate / 10 is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine import training
from engine.config import TrainConfig
from engine.errors import UserError
from engine.io import atomic_json, save_figure
from engine.study import inputs

RULE = ("steepest descent of the smoothed loss against log10(lr), before its minimum "
        "(also reported: the minimum's lr / 10)")


def suggest(lrs: list[float], smoothed: list[float]) -> dict:
    """The suggested learning rate from a range test's curve (see RULE)."""
    if len(lrs) < 3:
        return {"suggested": None, "min_over_10": None, "rule": RULE, "inconclusive": True,
                "verdict": "inconclusive: too few steps; "}
    best = int(np.argmin(smoothed))
    logs = np.log10(lrs)
    slopes = np.gradient(np.asarray(smoothed), logs)
    window = slopes[: max(best, 1) + 1]
    steepest = int(np.argmin(window))
    # At either end of the range the descent may go on beyond it: no rate to trust.
    inconclusive = steepest in (0, len(lrs) - 1)
    verdict = (f"inconclusive: the steepest descent is at the {'first' if steepest == 0 else 'last'} rate of the "
               f"range; widen it (--start / --end) or take more --steps; ") if inconclusive else ""
    return {"suggested": float(lrs[steepest]), "min_over_10": float(lrs[best]) / 10, "rule": RULE,
            "inconclusive": inconclusive, "verdict": verdict}


def run(cfg: TrainConfig, out: Path, start: float = 1e-7, end: float = 1.0, steps: int = 100,
        quiet: bool = False) -> dict:
    """Runs the range test; writes ``lr_find.json`` and ``lr_find.png`` into
    ``out``. ``cfg.records`` None: the embedded set (``inputs``), built on first use."""
    if not 0 < start < end:
        raise UserError(f"lr-find needs 0 < --start < --end, not {start} and {end}")
    if steps < 5:
        raise UserError(f"--steps must be >= 5, not {steps}")
    # The ramp sets each step's rate itself, so the run's own schedule is off.
    cfg = inputs.with_records(replace(cfg, lr=start, out=None, schedule="constant", warmup_epochs=0.0), quiet)
    # The range test's own trainer: the ramp trains its model, which serves nothing after it.
    prepared = training.prepare(cfg, trainer=training.Trainer(), quiet=quiet)
    batches = prepared.batches("train", end_epoch=math.ceil(steps / prepared.steps_per_epoch) + 1)
    lrs, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    for step, (images, labels) in enumerate(batches.take(steps)):
        lr = start * (end / start) ** (step / (steps - 1))
        loss = prepared.step(images, labels, lr=lr)  # a host sync per step: the curve is the point
        if not math.isfinite(loss):
            break
        average = 0.9 * average + 0.1 * loss
        value = average / (1 - 0.9 ** (step + 1))
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if value > 4 * best:
            break
    result = {"start": start, "end": end, "steps_run": len(lrs), "batch_size": prepared.cfg.batch_size,
              "precision": prepared.numerics.precision.value, "lrs": lrs, "losses": losses, "smoothed": smoothed,
              **suggest(lrs, smoothed)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_json(out / "lr_find.json", result)
    plot(result, out / "lr_find.png")
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    from engine.study import plots

    # The report's figure style and colours: red is training loss, as in
    # curves.png; the suggestion takes a setting's colour, never val loss's green.
    with plots.figure_style():
        fig, ax = plt.subplots(figsize=(plots.COLUMN, plots.COLUMN * 0.75))
        ax.plot(result["lrs"], result["losses"], color="0.7", label="loss")
        ax.plot(result["lrs"], result["smoothed"], color=plots.CURVE_COLOURS["loss"], label="smoothed loss")
        if result["suggested"]:
            ax.axvline(result["suggested"], color=plots.SETTING_COLOURS[0], linestyle="--",
                       label=f"suggested {result['suggested']:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title("Learning-rate range test")
        ax.legend()
        fig.tight_layout()
        save_figure(fig, path)
