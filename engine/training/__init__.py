"""The training layer: one run of the study, behind one door.

``prepare(cfg) -> Run`` resolves and compiles a run; ``Run.fit()`` trains it
into its folder, ``Run.step()`` takes one compiled step (lr-find, the bench),
``Run.batches()`` and ``Run.evaluate()`` read and score a split. Sweeps,
lr-find, the bench and the command line use only the names below.

Inside: ``run`` (the door), ``classifier`` (the compiled step and its reuse
across runs), ``optim`` (optimizers and schedules), ``numerics`` (precision,
XLA and BatchNorm momentum), ``distribute`` (strategies, multi-worker),
``checkpoint``, ``callbacks`` (per-epoch recording), ``evaluation`` (scoring
runs and saved models) and ``metrics`` (clinical metrics with intervals).
Imports the model and data layers and the base modules.
"""

from engine.training.classifier import step_augment_fn
from engine.training.evaluation import evaluate_saved, predict_images
from engine.training.numerics import Numerics, auto_candidates, remember_rates
from engine.training.run import STATUS_DIVERGED, STATUS_DONE, Run, choose_numerics, input_batches, prepare, train

__all__ = ["Numerics", "Run", "STATUS_DIVERGED", "STATUS_DONE", "auto_candidates", "choose_numerics",
           "evaluate_saved", "input_batches", "predict_images", "prepare", "remember_rates", "step_augment_fn",
           "train"]
