"""A sweep's trial plan: its trials (setting x split x seed), their names,
settings and configs.

``trials`` is the one generator of the plan: the sweep's ``begin`` calls it
once and stores the list in sweep.json (``entries``); every later reader
(the runners, trial processes, the dashboard, launch, the report, ``engine
resume``) reads it back with ``stored`` instead of generating it again, so a
plan never differs between the processes of one sweep. ``select`` picks a
runner's share (its shard, or its one ``--trial``).

Imports no TensorFlow: the report, the dry run and the trial processes'
first message read it without starting a framework.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from engine.config import SweepConfig, TrainConfig
from engine.errors import UserError

LOCK = ".lock"  # a trial folder's lock: held while a runner trains it
SPLITS_FOLDER = "splits"  # DIR/splits/split<k>: the records of split k (--splits K)


@dataclass(frozen=True)
class Trial:
    """One trial, carrying its setting's own values: ``lr`` is the setting's
    learning rate as the sweep lists it (before ``--lr-scaling``), ``batch``
    its batch size, ``split`` which split replicate it trains on (1..K; 0:
    the records' own split) and ``seed``; ``config`` is the training config
    it runs (its lr after scaling, ``config.lr``; its epochs after
    ``--budget steps``, ``config.epochs``)."""

    name: str
    setting: str
    repeat: int
    config: TrainConfig
    split: int = 0
    lr: float = 0.0
    batch: int = 0
    optimizer: str = "adam"
    seed: int = 0

    @property
    def epochs(self) -> int:
        return self.config.epochs

    def to_json(self, index: int) -> dict:
        """What sweep.json stores of it (``stored`` rebuilds it from this)."""
        return {"index": index, "name": self.name, "setting": self.setting, "sweep_lr": self.lr,
                "lr": self.config.lr, "batch_size": self.batch, "optimizer": self.optimizer,
                "epochs": self.config.epochs, "split": self.split, "seed": self.seed, "repeat": self.repeat}


def setting_name(lr: float, batch: int, optimizer: str, axis: str) -> str:
    parts = {"lr": f"lr={lr:g}", "batch": f"batch={batch}", "optimizer": optimizer}
    shown = {"lr": ["lr"], "batch": ["batch"], "grid": ["lr", "batch"], "optimizer": ["optimizer"]}[axis]
    return " ".join(parts[k] for k in shown)


def lr_scale(sweep: SweepConfig, batch: int) -> float:
    """The factor ``--lr-scaling`` multiplies a setting's learning rate by at ``batch``."""
    ratio = batch / min(sweep.batch_sizes)
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[sweep.lr_scaling]


def split_records(out: Path, split: int) -> Path:
    """The records folder of split ``split`` (1..K) of the sweep in ``out``."""
    return Path(out) / SPLITS_FOLDER / f"split{split}"


def trial_config(sweep: SweepConfig, name: str, lr: float, batch: int, optimizer: str, epochs: int, seed: int,
                 split: int) -> TrainConfig:
    """The training config of one trial: the sweep's base with the trial's
    values, in ``DIR/trials/<name>``; a split's trial trains on that split's
    records (the embedded set's --subset was drawn once, for the pool)."""
    data = {"records": split_records(sweep.base.out, split), "subset": None} if split else {}
    return replace(sweep.base, lr=lr, batch_size=batch, optimizer=optimizer, epochs=epochs, seed=seed,
                   out=sweep.base.out / "trials" / name, **data)


def trials(sweep: SweepConfig) -> list[Trial]:
    """Every trial of the sweep in a fixed order: setting x split x seed.
    Repeats of a setting share the seeds of every other setting (paired
    comparison: same data order and augmentations per seed), and with
    ``--splits K`` every setting trains on the same K splits (each split's
    own records folder), so settings are paired by split too. With one
    split the trial names carry no split (sweeps from before resume).

    Called once per sweep, by its ``begin``: later readers use ``stored``."""
    smallest = min(sweep.batch_sizes)
    out = []
    for lr in sweep.lrs:
        for batch in sweep.batch_sizes:
            for optimizer in sweep.optimizers:
                epochs = sweep.base.epochs
                if sweep.budget == "steps":
                    # Same number of optimizer updates as the smallest batch.
                    epochs = max(1, round(sweep.base.epochs * batch / smallest))
                setting = setting_name(lr, batch, optimizer, sweep.axis)
                for split in (range(1, sweep.splits + 1) if sweep.splits > 1 else (0,)):
                    for repeat in range(sweep.repeats):
                        seed = sweep.seed + repeat
                        name = (f"{setting.replace('=', '').replace(' ', '_')}"
                                f"{f'_split{split}' if split else ''}_seed{seed}")
                        cfg = trial_config(sweep, name, lr * lr_scale(sweep, batch), batch, optimizer, epochs,
                                           seed, split)
                        out.append(Trial(name, setting, repeat, cfg, split, lr, batch, optimizer, seed))
    return out


def entries(plan: list[Trial]) -> list[dict]:
    """The plan as sweep.json stores it."""
    return [trial.to_json(i) for i, trial in enumerate(plan)]


STORED_KEYS = ("name", "setting", "sweep_lr", "lr", "batch_size", "optimizer", "epochs", "split", "seed", "repeat")


def stored(sweep: SweepConfig, listed: list[dict]) -> list[Trial] | None:
    """The plan sweep.json stores (``listed``: its "trials"), each trial's
    config rebuilt on the sweep's base where the sweep's folder is now
    (``sweep.base.out``: a folder may be moved or spelled otherwise). None
    when the list lacks a trial's values (a sweep.json from an older
    engine: its ``begin`` stores them again)."""
    if not listed or any(key not in entry for entry in listed for key in STORED_KEYS):
        return None
    return [Trial(e["name"], e["setting"], e["repeat"],
                  trial_config(sweep, e["name"], e["lr"], e["batch_size"], e["optimizer"], e["epochs"], e["seed"],
                               e["split"]),
                  e["split"], e["sweep_lr"], e["batch_size"], e["optimizer"], e["seed"])
            for e in listed]


def select(plan: list[Trial], sweep: SweepConfig) -> list[Trial]:
    """The runner's share of ``plan``: its one ``--trial`` (a name or an index
    of the whole plan), or its shard (``--shard I/N``: every N-th trial from
    the I-th); the whole plan for a runner of the whole sweep."""
    if sweep.trial:
        return [pick_trial(plan, sweep.trial)]
    index, count = sweep.shard
    return plan[index::count]


def pick_trial(plan: list[Trial], wanted: str) -> Trial:
    """The trial named ``wanted`` or at index ``wanted`` of the full list."""
    for i, trial in enumerate(plan):
        if wanted in (trial.name, str(i)):
            return trial
    raise UserError(f"--trial {wanted!r} is neither a trial name nor an index 0-{len(plan) - 1} of this sweep "
                    f"(engine compare ... --dry-run lists them)")
