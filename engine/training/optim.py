"""The optimizer, its learning-rate schedule, and the one way a rate is set.

``schedule.constant_schedule`` is the one answer to "does the rate stay constant?":
a constant rate is a variable of the optimizer, which ``set_rate`` assigns
(a reused compiled step reads it, no retrace); any other schedule is built
into the traced step, so the trial's graph key carries its parameters.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import keras

from engine.config import TrainConfig
from engine.training.schedule import constant_schedule

# The one lookup from the config's optimizer names (config.OPTIMIZERS) to Keras.
OPTIMIZERS = MappingProxyType({
    "adam": lambda lr: keras.optimizers.Adam(lr),
    "adamw": lambda lr: keras.optimizers.AdamW(lr),
    "nadam": lambda lr: keras.optimizers.Nadam(lr),
    "rmsprop": lambda lr: keras.optimizers.RMSprop(lr),
    "sgd": lambda lr: keras.optimizers.SGD(lr, momentum=0.9),
    "nesterov": lambda lr: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
})


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then constant, cosine to 0, or step (x0.1 at 50 % and 75 %).

    The warm-up is the engine's own: step s < warmup gets peak * (s + 1) /
    warmup, so the first step already learns (Keras' ``CosineDecay`` warm-up
    starts at 0). After it, Keras' ``CosineDecay`` and
    ``PiecewiseConstantDecay`` run over the remaining steps.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int, kind: str):
        self.peak, self.total, self.warmup, self.kind = peak, total_steps, warmup_steps, kind
        decay_steps = max(total_steps - warmup_steps, 1)
        if kind == "cosine":
            self.after = keras.optimizers.schedules.CosineDecay(peak, decay_steps)
        elif kind == "step":
            # x0.1 from the first step at >= 50 % of the decay, x0.01 from >= 75 %:
            # Piecewise keeps a value up to and including its boundary.
            boundaries = [math.ceil(0.5 * decay_steps) - 1, math.ceil(0.75 * decay_steps) - 1]
            self.after = keras.optimizers.schedules.PiecewiseConstantDecay(
                boundaries, [peak, 0.1 * peak, 0.01 * peak])
        else:
            self.after = None

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / max(self.warmup, 1)
        after = keras.ops.convert_to_tensor(self.peak, "float32") if self.after is None else \
            keras.ops.cast(self.after(keras.ops.maximum(step - self.warmup, 0.0)), "float32")
        return keras.ops.where(step < self.warmup, warm, after)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total, "warmup_steps": self.warmup, "kind": self.kind}


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer; a plain float learning rate (a variable) when the
    schedule is constant, so that a reused compiled step can be given another
    rate (``set_rate``) without a retrace."""
    lr = cfg.lr
    if not constant_schedule(cfg):
        lr = WarmupSchedule(cfg.lr, steps_per_epoch * cfg.epochs, int(cfg.warmup_epochs * steps_per_epoch),
                            cfg.schedule)
    return OPTIMIZERS[cfg.optimizer](lr)


def set_rate(optimizer: keras.optimizers.Optimizer, lr: float) -> None:
    """Sets a constant learning rate: the one way the engine sets a rate
    (each trial on its optimizer, lr-find and the bench on each step).
    Assigns the optimizer's rate variable (a LossScaleOptimizer passes it to
    the optimizer it wraps); an optimizer built with a schedule has no rate
    to set, and that is a ValueError."""
    try:
        optimizer.learning_rate = lr
    except TypeError:
        raise ValueError("the learning rate follows a schedule here (--schedule or --warmup-epochs): "
                         "it cannot be set per step; use a constant schedule") from None
