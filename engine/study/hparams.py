"""The sweep's TensorBoard HParams experiment: its config (the axes and
metrics) written once, and each trial's session (its setting's values), so
TensorBoard's HParams dashboard compares the trials side by side."""

from __future__ import annotations

from pathlib import Path

from engine.config import SweepConfig
from engine.study.plan import Trial


def write_config(folder: Path, sweep: SweepConfig) -> None:
    """The sweep's experiment for TensorBoard's HParams dashboard (``--logdir DIR/trials``)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    params = [hp.HParam("lr", hp.Discrete(sorted(set(sweep.lrs)))),
              hp.HParam("batch_size", hp.Discrete(sorted(set(sweep.batch_sizes)))),
              hp.HParam("optimizer", hp.Discrete(sorted(set(sweep.optimizers)))),
              hp.HParam("seed", hp.IntInterval(sweep.seed, sweep.seed + sweep.repeats - 1))]
    if sweep.splits > 1:
        params.append(hp.HParam("split", hp.IntInterval(1, sweep.splits)))
    metrics = [hp.Metric("epoch_loss", group="validation", display_name="val loss"),
               hp.Metric("epoch_accuracy", group="validation", display_name="val accuracy"),
               hp.Metric("epoch_auc", group="validation", display_name="val AUC"),
               hp.Metric("epoch_loss", group="train", display_name="train loss")]
    folder.mkdir(parents=True, exist_ok=True)
    with tf.summary.create_file_writer(str(folder)).as_default():
        hp.hparams_config(hparams=params, metrics=metrics)


def write_session(trial: Trial) -> None:
    """The trial's settings as an HParams session, beside its Keras TensorBoard logs."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    values = {"lr": trial.config.lr, "batch_size": trial.config.batch_size,
              "optimizer": trial.config.optimizer, "seed": trial.config.seed}
    if trial.split:
        values["split"] = trial.split
    with tf.summary.create_file_writer(str(trial.config.out / "tb")).as_default():
        hp.hparams(values, trial_id=trial.name)
