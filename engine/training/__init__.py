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
(BatchNorm statistics estimated again) and ``evaluation`` (scoring runs and
saved models). A run folder is written through ``engine.results`` (its
format, and the clinical metrics with their intervals), which every reader
above uses directly. Imports the model, data and results layers and the
base modules.
"""

from engine.training.evaluation import evaluate_saved, predict_images
from engine.training.numerics import (Numerics, auto_candidates, bn_residual, likely as likely_numerics,
                                      remember_rates)
from engine.training.pace import Pace, Shape as PaceShape, estimate as estimate_pace, record as record_pace, run_seconds
from engine.training.checkpoint import run_disk_mb
from engine.training.distribute import PROCESS_WIDE
from engine.training.optim import constant_schedule
from engine.training.run import (STATUS_DIVERGED, STATUS_DONE, Run, check_image_size, choose_numerics, evaluate_folder,
                                 input_batches, predict_files, prepare, read_history, train)
from engine.training.trainer import Trainer, schedule_key, step_augment_fn

__all__ = ["Numerics", "PROCESS_WIDE", "Pace", "PaceShape", "Run", "STATUS_DIVERGED", "STATUS_DONE", "Trainer",
           "auto_candidates", "bn_residual", "check_image_size", "choose_numerics", "constant_schedule",
           "estimate_pace", "evaluate_folder", "evaluate_saved", "input_batches", "likely_numerics", "predict_files",
           "predict_images", "prepare", "read_history", "record_pace", "remember_rates", "run_disk_mb", "run_seconds",
           "schedule_key", "step_augment_fn", "train"]
