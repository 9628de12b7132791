"""``engine evaluate`` and ``engine predict`` on a saved run folder: its state
files checked first (a damaged one says how to rebuild it), then its model
scored on a split of its records or run on image files (``evaluation``).
"""

from __future__ import annotations

from pathlib import Path

from engine.data import images as images_lib
from engine.data.manifest import load_manifest
from engine.errors import DamagedState, UserError
from engine.io import read_json
from engine.results import runs
from engine.training.evaluation import evaluate_saved, predict_images


def saved_run_data(run: Path) -> dict:
    """A trained run folder's ``data.json``, its state files checked first
    (``engine evaluate`` and ``engine predict`` read them)."""
    if not (run / runs.CONFIG).is_file():
        raise UserError(f"{run} is not a run folder (no {runs.CONFIG})")
    todo = "rerun the run's `engine train` command: it rebuilds what it can and restarts otherwise"
    for name in (runs.CONFIG, runs.METRICS):
        if (run / name).is_file():
            read_json(run / name, todo)
    data = read_json(run / runs.DATA, todo)
    if not {"records", "label_map", "image_size", "resize"} <= set(data):
        raise DamagedState(run / runs.DATA, "records, label_map, image_size or resize missing", todo)
    return data


def evaluate_folder(run: Path, split: str = "test", records: Path | None = None,
                    threshold: float | None = None) -> dict:
    """``engine evaluate``: a saved run's model on ``split``, one of the splits its records have."""
    data = saved_run_data(run)
    folder = records or Path(data["records"])
    splits = load_manifest(folder)["splits"]
    if split not in splits:
        raise UserError(f"--split must be one of {', '.join(splits)} (the splits of {folder}), not {split!r}")
    return evaluate_saved(run, split, records, threshold)


def predict_files(run: Path, paths: list[Path], gradcam: Path | None = None
                  ) -> tuple[list[tuple[Path, str, float]], list[tuple[Path, str]]]:
    """``engine predict``: (path, class, probability) of every readable image,
    and (path, why) of every unreadable one."""
    data = saved_run_data(run)
    readable, unreadable = [], []
    for path in paths:
        task = images_lib.Task(0, str(path), data["image_size"][0], data["resize"], "raw", 64_000_000)
        reason = images_lib.process(task).reason
        if reason:
            unreadable.append((path, reason))
        else:
            readable.append(path)
    return (predict_images(run, readable, gradcam) if readable else []), unreadable
