"""The records a command trains on, found (or made) once, above training.

``records_folder`` is the one place "RECORDS, or none given" becomes a
records folder: the user's folder as given, or the embedded synthetic set
(``engine.data.embedded`` generates it and builds its records on first use,
cached per image size and subset). ``engine train``, ``engine lr-find``,
``engine compare`` (its parent process: trial processes read the folder
from sweep.json) and the bench call it before any training; training takes
a config whose records are set.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine.config import TrainConfig
from engine.data.embedded import records_or_embedded


def records_folder(records: Path | None, image_size: int, subset: tuple[int, int, int] | None = None,
                   quiet: bool = False) -> Path:
    """``records``, or the embedded set's records at ``image_size`` (of its
    ``subset``: train, val, test images) when none are given, built on first
    use (several processes starting at once build it once)."""
    return records_or_embedded(records, image_size, quiet, subset)


def with_records(cfg: TrainConfig, quiet: bool = False) -> TrainConfig:
    """``cfg``, checked first (a bad option fails before any images are
    generated), on its records folder (``records_folder``)."""
    cfg.validate()
    return replace(cfg, records=records_folder(cfg.records, cfg.model.image_size, cfg.subset, quiet))
