"""The training layer: one run of the study, behind one door.

``prepare(cfg, trainer=...) -> Run`` resolves and compiles a run;
``Run.fit()`` trains it into its folder, ``Run.step()`` takes one compiled
step (lr-find, the bench), ``Run.batches()`` and ``Run.evaluate()`` read and
score a split. A ``Trainer``, made once per process by the caller and passed
to each ``prepare`` / ``train``, owns what the runs of that process share
(the compiled classifier, its traced functions, the strategy). Sweeps,
lr-find, the bench and the command line use only the names below.

Inside: ``run`` (the door), ``trainer`` (the per-process owner of compiled
state, and the one place a trial's quantities are set), ``classifier`` (the
compiled step), ``optim`` (optimizers, schedules, the one way a rate is set),
``numerics`` (precision, XLA and BatchNorm momentum), ``pace`` (measured
rates and the one time estimator), ``distribute`` (strategies, multi-worker,
the process-wide state), ``seeding`` (a run's random state),
``checkpoint``, ``callbacks`` (per-epoch recording), ``precise_bn``
(BatchNorm statistics estimated again), ``evaluation`` (scoring runs and
saved models) and ``inference`` (``engine evaluate`` and ``engine predict``
on a saved run folder). A run folder is written through ``engine.results`` (its
format, and the clinical metrics with their intervals), which every reader
above uses directly. Imports the model, data and results layers and the
base modules.
"""

import importlib

# Each public name and the module it lives in. Imported when first asked
# for (PEP 562), so that the modules that need no framework (``pace``,
# ``numerics``' rules, ``disk``, ``schedule``) serve a dry run or an
# estimate without starting TensorFlow (10-15 s on a CPU), and ``import
# engine.training`` costs nothing until a run is made.
_PUBLIC = {
    "Numerics": ("numerics", "Numerics"), "auto_candidates": ("numerics", "auto_candidates"),
    "bn_residual": ("numerics", "bn_residual"), "likely_numerics": ("numerics", "likely"),
    "remember_rates": ("numerics", "remember_rates"),
    "Pace": ("pace", "Pace"), "PaceShape": ("pace", "Shape"), "estimate_pace": ("pace", "estimate"),
    "record_pace": ("pace", "record"), "run_seconds": ("pace", "run_seconds"),
    "run_disk_mb": ("disk", "run_disk_mb"),
    "constant_schedule": ("schedule", "constant_schedule"), "schedule_key": ("schedule", "schedule_key"),
    "evaluate_saved": ("evaluation", "evaluate_saved"), "predict_images": ("evaluation", "predict_images"),
    "evaluate_folder": ("inference", "evaluate_folder"), "predict_files": ("inference", "predict_files"),
    "PROCESS_WIDE": ("distribute", "PROCESS_WIDE"),
    "STATUS_DIVERGED": ("run", "STATUS_DIVERGED"), "STATUS_DONE": ("run", "STATUS_DONE"), "Run": ("run", "Run"),
    "check_image_size": ("run", "check_image_size"), "choose_numerics": ("run", "choose_numerics"),
    "input_batches": ("run", "input_batches"), "prepare": ("run", "prepare"), "read_history": ("run", "read_history"),
    "train": ("run", "train"),
    "Progress": ("callbacks", "Progress"), "Trainer": ("trainer", "Trainer"),
    "step_augment_fn": ("trainer", "step_augment_fn"),
}
# Literal, so tests/test_layers.py reads it without importing; it equals _PUBLIC's keys (tested).
__all__ = ["Numerics", "PROCESS_WIDE", "Pace", "PaceShape", "Progress", "Run", "STATUS_DIVERGED", "STATUS_DONE",
           "Trainer", "auto_candidates", "bn_residual", "check_image_size", "choose_numerics", "constant_schedule",
           "estimate_pace", "evaluate_folder", "evaluate_saved", "input_batches", "likely_numerics", "predict_files",
           "predict_images", "prepare", "read_history", "record_pace", "remember_rates", "run_disk_mb",
           "run_seconds", "schedule_key", "step_augment_fn", "train"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _PUBLIC[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return __all__
