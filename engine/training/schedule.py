"""The learning-rate schedule's rules that need no framework: whether a
run's rate stays constant, and what of its schedule shapes a traced step
(the part of the trainer's graph key a sweep's trials vary, which the
sweep's time estimate needs before TensorFlow is started)."""

from __future__ import annotations

from engine.config import TrainConfig


def constant_schedule(cfg: TrainConfig) -> bool:
    """Whether ``cfg``'s learning rate stays ``cfg.lr`` at every step (no
    warm-up, no decay): then it is a variable that ``optim.set_rate``
    assigns, otherwise a schedule traced into the step."""
    return cfg.schedule == "constant" and cfg.warmup_epochs == 0


def schedule_key(cfg: TrainConfig, steps: int) -> str | tuple:
    """What of the learning-rate schedule shapes the traced step: nothing for
    a constant rate (a variable of the optimizer), else the schedule and the
    values it is built from (``steps`` an epoch among them)."""
    return "constant" if constant_schedule(cfg) else (cfg.schedule, cfg.warmup_epochs, cfg.epochs, cfg.lr, steps)
