"""The training layer: one run of the study, behind one door.

``prepare(cfg) -> Run`` resolves and compiles a run; ``Run.fit()`` trains it
into its folder, ``Run.step()`` takes one compiled step (lr-find, the bench),
``Run.batches()`` and ``Run.evaluate()`` read and score a split. Sweeps,
lr-find, the bench and the command line use only the names below.

Inside: ``run`` (the door), ``classifier`` (the compiled step and its reuse
across runs), ``optim`` (optimizers and schedules), ``numerics`` (precision,
XLA and BatchNorm momentum), ``pace`` (measured rates and the one time
estimator), ``distribute`` (strategies, multi-worker),
``checkpoint``, ``callbacks`` (per-epoch recording), ``evaluation`` (scoring
runs and saved models) and ``metrics`` (clinical metrics with intervals).
Imports the model and data layers and the base modules.
"""

from engine.training.classifier import step_augment_fn
from engine.training.evaluation import evaluate_saved, predict_images
from engine.training.numerics import Numerics, auto_candidates, likely as likely_numerics, remember_rates
from engine.training.pace import Pace, Shape as PaceShape, estimate as estimate_pace, record as record_pace, run_seconds
from engine.training.run import STATUS_DIVERGED, STATUS_DONE, Run, choose_numerics, input_batches, prepare, train

__all__ = ["Numerics", "Pace", "PaceShape", "Run", "STATUS_DIVERGED", "STATUS_DONE", "auto_candidates",
           "choose_numerics", "estimate_pace", "evaluate_saved", "input_batches", "likely_numerics", "predict_images",
           "prepare",
           "record_pace", "remember_rates", "run_seconds", "step_augment_fn", "train"]
