"""A sweep's trial plan: its trials (setting x split x seed), their names,
settings and configs, from the sweep's config alone.

Imports no TensorFlow: the report, the dry run and the trial processes'
first message read it without starting a framework.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from engine.config import SweepConfig, TrainConfig
from engine.errors import UserError
from engine.study import replicates

LOCK = ".lock"  # a trial folder's lock: held while a runner trains it


@dataclass(frozen=True)
class Trial:
    """One trial: its name, its setting, which repeat (seed) and split it is,
    and the training config it runs (its lr after ``--lr-scaling``);
    ``sweep_lr`` is the setting's own learning rate, before any scaling."""

    name: str
    setting: str
    repeat: int
    config: TrainConfig
    split: int = 0  # 1..K with --splits K >= 2; 0: the records' own split
    sweep_lr: float | None = None


def setting_name(lr: float, batch: int, optimizer: str, axis: str) -> str:
    parts = {"lr": f"lr={lr:g}", "batch": f"batch={batch}", "optimizer": optimizer}
    shown = {"lr": ["lr"], "batch": ["batch"], "grid": ["lr", "batch"], "optimizer": ["optimizer"]}[axis]
    return " ".join(parts[k] for k in shown)


def lr_scale(sweep: SweepConfig, batch: int) -> float:
    """The factor ``--lr-scaling`` multiplies a setting's learning rate by at ``batch``."""
    ratio = batch / min(sweep.batch_sizes)
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[sweep.lr_scaling]


def trials(sweep: SweepConfig, every_shard: bool = False) -> list[Trial]:
    """Every trial of the sweep in a fixed order (of its shard or its one
    ``trial``, unless ``every_shard``): setting x split x seed. Repeats of a
    setting share the seeds of every other setting (paired comparison: same
    data order and augmentations per seed), and with ``--splits K`` every
    setting trains on the same K splits (``replicates``: each split's own
    records folder), so settings are paired by split too. With one split the
    trial names carry no split (sweeps from before resume)."""
    smallest = min(sweep.batch_sizes)
    out = []
    for lr in sweep.lrs:
        for batch in sweep.batch_sizes:
            for optimizer in sweep.optimizers:
                ratio = batch / smallest
                scaled = lr * lr_scale(sweep, batch)
                epochs = sweep.base.epochs
                if sweep.budget == "steps":
                    # Same number of optimizer updates as the smallest batch.
                    epochs = max(1, round(sweep.base.epochs * ratio))
                setting = setting_name(lr, batch, optimizer, sweep.axis)
                for split in (range(1, sweep.splits + 1) if sweep.splits > 1 else (0,)):
                    # A split's trials train on its records; the embedded set's
                    # --subset was drawn once, for the pool.
                    data = {"records": replicates.folder(sweep.base.out, split), "subset": None} if split else {}
                    for repeat in range(sweep.repeats):
                        name = (f"{setting.replace('=', '').replace(' ', '_')}"
                                f"{f'_split{split}' if split else ''}_seed{sweep.seed + repeat}")
                        cfg = replace(sweep.base, lr=scaled, batch_size=batch, optimizer=optimizer, epochs=epochs,
                                      seed=sweep.seed + repeat, out=sweep.base.out / "trials" / name, **data)
                        out.append(Trial(name, setting, repeat, cfg, split, sweep_lr=lr))
    if every_shard:
        return out
    if sweep.trial:
        return [pick_trial(out, sweep.trial)]
    index, count = sweep.shard
    return out[index::count]


def pick_trial(plan: list[Trial], wanted: str) -> Trial:
    """The trial named ``wanted`` or at index ``wanted`` of the full list."""
    for i, trial in enumerate(plan):
        if wanted in (trial.name, str(i)):
            return trial
    raise UserError(f"--trial {wanted!r} is neither a trial name nor an index 0-{len(plan) - 1} of this sweep "
                    f"(engine compare ... --dry-run lists them)")
