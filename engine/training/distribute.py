"""Where a run computes: the tf.distribute strategies (which one a process
uses is the ``Trainer``'s choice, ``Trainer.strategy``), the folder each
worker of a multi-worker run writes to, the Keras fix multi-worker ``fit``
needs, TensorFlow's deterministic kernels, and ``PROCESS_WIDE``: the one
list of state in ``engine.training`` that outlives a ``Trainer``."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from types import MappingProxyType

import tensorflow as tf

from engine.model import keras_internals

# The state of engine.training that belongs to the process rather than to a
# Trainer, each "module.name" with why TensorFlow requires it. Nothing else in
# engine.training is a module-level dict, list, set or cache
# (tests/test_trial_state.py holds every module to this list).
PROCESS_WIDE = MappingProxyType({
    "engine.training.distribute.multi_worker_strategy": (
        "TensorFlow sets up collective communication once per process: a second "
        "MultiWorkerMirroredStrategy in the same process cannot join the cluster again, so every "
        "Trainer of the process gets the one made first"),
})


@functools.cache
def multi_worker_strategy() -> tf.distribute.Strategy:
    """The process' one MultiWorkerMirroredStrategy, from ``TF_CONFIG`` (see ``PROCESS_WIDE``)."""
    return tf.distribute.MultiWorkerMirroredStrategy()


def local_gpus() -> tuple[str, ...]:
    """The names of this process' logical GPUs."""
    return tuple(d.name for d in tf.config.list_logical_devices("GPU"))


def describe(distribution: tf.distribute.Strategy) -> str:
    """What of a strategy shapes a traced step: its kind and its replicas."""
    try:
        devices = ",".join(distribution.extended.worker_devices)
    except RuntimeError:  # the default strategy: one device, wherever TensorFlow places ops
        devices = "default"
    return f"{type(distribution).__name__}:{distribution.num_replicas_in_sync}:{devices}"


def output_folder(run: Path) -> Path:
    """Where this process writes: the run folder on the chief; a scratch folder
    inside it on the other workers of a multi-worker run, which compute the
    same things and must not race the chief's files."""
    spec = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = spec.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0))
    has_chief = "chief" in spec.get("cluster", {})
    if not task or kind == "chief" or (kind == "worker" and index == 0 and not has_chief):
        return run
    return run / f".{kind}-{index}"


def op_determinism(on: bool) -> None:
    """Deterministic kernels for this run only (a sweep in one process must
    not inherit one run's setting, so they are turned off again too)."""
    if on:
        tf.config.experimental.enable_op_determinism()
    else:
        keras_internals.disable_op_determinism()


def multi_worker_fixes() -> None:
    """Makes Keras 3.15's ``fit`` work under MultiWorkerMirroredStrategy.

    Keras reduces each step's metric results with ``strategy.reduce("MEAN",
    v, axis=0)`` in multi-worker mode, which fails on the scalar results every
    step returns (keras-team/keras#20585). Scalars are reduced without an
    axis instead; everything else goes through Keras' own function. The tests
    run two local workers, so a Keras upgrade that changes this fails there
    (``pyproject.toml`` pins Keras to the minor version this was written for).
    """
    def wrap(original):
        def reduce_per_replica(values, strategy_, reduction):
            if reduction in ("auto", "mean") and keras_internals.multi_worker_collective(strategy_):
                def reduce(v):
                    if len(v.shape) == 0:
                        return strategy_.reduce("MEAN", v, axis=None)
                    return original(v, strategy_, reduction)
                return tf.nest.map_structure(reduce, values)
            return original(values, strategy_, reduction)
        return reduce_per_replica

    keras_internals.wrap_reduce_per_replica(wrap)
