"""The private Keras and TensorFlow APIs the engine relies on, in one place.

Keras and TensorFlow change their private names without notice, even in
patch releases. Every use the engine makes of one goes through a function
here, so an upgrade is checked in one file, against one test
(``tests/test_keras_internals.py``, which names each private API and says
which function here needs updating when one is missing or has changed).

Each use was checked on Keras 3.15.1 and TensorFlow 2.21.0 (the minor
versions ``pyproject.toml`` pins):

==============================  ===============================================================
function                        private API
==============================  ===============================================================
``is_functional``               ``keras.src.models.functional.Functional``
``model_strategy``              ``Model._distribute_strategy``
``first_batch``                 the ``(step, step, iterator)`` items of Keras' TF epoch iterator
``symbolic_build``              ``Model._symbolic_build(data_batch=...)``
``keras_build_before_fit``      ``Model._maybe_symbolic_build(iterator=..., data_batch=...)``
``replace_build_before_fit``    ``Model._maybe_symbolic_build`` (overridden)
``wrap_reduce_per_replica``     ``keras.src.backend.tensorflow.trainer.reduce_per_replica``
``multi_worker_collective``     ``keras.src.backend.tensorflow.trainer._collective_all_reduce_multi_worker``
``disable_op_determinism``      ``tensorflow.python.framework.config.disable_op_determinism``
``nodes_by_depth``              ``Sequential._functional``, ``Function._nodes_by_depth``
``called``                      ``Operation._inbound_nodes``
==============================  ===============================================================

The private modules are imported inside the functions: a Keras that moved
one breaks only the feature that needs it, not ``import engine``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import keras
import tensorflow as tf

# Marks Keras' reduce_per_replica once replaced, so a second call keeps the first replacement.
_WRAPPED = "engine_wrapped"


def is_functional(model: keras.Layer) -> bool:
    """Whether ``model`` is a Functional model (made as ``keras.Model(inputs, outputs)``).

    Keras exports no name for this class: ``keras.Model`` is also the base
    of subclassed models, whose graph ``clone_model`` cannot rebuild.
    """
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def model_strategy(model: keras.Model) -> tf.distribute.Strategy | None:
    """The strategy ``model`` was built under; None when built under none.

    The public ``model.distribute_strategy`` falls back to the strategy in
    scope, so it cannot tell "built under none", the case in which Keras
    leaves the build to the first traced step.
    """
    return model._distribute_strategy


def first_batch(iterator: Iterable) -> Any:
    """The first batch of Keras' TF epoch iterator (None when it has none).

    ``fit`` passes its epoch iterator to the build hook; its items are
    ``(first step, last step, iterator of distributed batches)``, a shape
    no public API describes.
    """
    for _, _, batches in iterator:
        return next(batches)
    return None


def symbolic_build(model: keras.Model, data_batch: Any) -> None:
    """Builds ``model``'s variables, compiled loss and metrics from the shapes of ``data_batch``.

    ``model.build(input_shape)`` builds the layers only: the compiled
    metrics and loss, which ``fit`` needs built before it traces a step
    under a strategy, are built by this private method alone.
    """
    model._symbolic_build(data_batch=data_batch)


def keras_build_before_fit(model: keras.Model, iterator: Iterable | None = None, data_batch: Any = None) -> None:
    """Keras' own build of ``model`` before ``fit`` / ``evaluate`` trace a step,
    for a build hook (``replace_build_before_fit``) that defers to it."""
    # The TensorFlow trainer's method, whatever the model's class overrides.
    keras.Model._maybe_symbolic_build(model, iterator=iterator, data_batch=data_batch)


def replace_build_before_fit(model_class: type[keras.Model], build: Callable) -> None:
    """Makes ``fit``, ``evaluate`` and their ``*_on_batch`` forms build
    ``model_class``'s models with ``build(model, iterator=None, data_batch=None)``.

    Keras builds a model under a strategy from a first batch in a private
    hook, before it traces a step; no public method runs there (``build``
    is not called when the model was built already, and ``train_step`` runs
    inside the traced step, too late).
    """
    model_class._maybe_symbolic_build = build


def wrap_reduce_per_replica(wrap: Callable[[Callable], Callable]) -> None:
    """Replaces ``reduce_per_replica(values, strategy, reduction)`` of Keras'
    TensorFlow trainer, which reduces each step's results over the replicas,
    by ``wrap(original)``; once per process (later calls keep the first).

    Keras calls it by its module-level name from inside the traced step, with
    no public option to change how the results are reduced.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, _WRAPPED, False):
        return
    wrapped = wrap(original)
    setattr(wrapped, _WRAPPED, True)
    tf_trainer.reduce_per_replica = wrapped


def multi_worker_collective(strategy: tf.distribute.Strategy) -> bool:
    """Whether Keras reduces step results as for several workers under ``strategy``.

    Keras' own test, so a fix to its multi-worker path applies exactly where
    Keras takes that path; the public strategy API has no "in multi-worker
    mode" property.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    return bool(tf_trainer._collective_all_reduce_multi_worker(strategy))


def disable_op_determinism() -> None:
    """Turns TensorFlow's deterministic kernels off again.

    The public API (``tf.config.experimental.enable_op_determinism``) only
    turns them on, and a sweep in one process must not inherit one run's
    setting.
    """
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()


def nodes_by_depth(model: keras.Model) -> dict | None:
    """``{depth: [node, ...]}`` of a Functional or Sequential model's graph
    (each node one layer call: ``operation``, ``input_tensors``,
    ``output_tensors``, ``is_input``); None for a subclassed model, which
    keeps no graph.

    Keras' public API lists a model's layers, not its calls: a layer shared
    or called twice appears once in ``model.layers``.
    """
    graph = model._functional if isinstance(model, keras.Sequential) else model
    return getattr(graph, "_nodes_by_depth", None)


def called(layer: keras.Layer) -> bool:
    """Whether ``layer`` was ever called on symbolic inputs (has a recorded call).

    The public ``layer.input`` tells only by raising a ValueError for a
    layer never called.
    """
    return bool(layer._inbound_nodes)
