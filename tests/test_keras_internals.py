"""The private Keras and TensorFlow APIs behind engine/model/keras_internals.py.

Each one is named, checked for its presence and shape on the installed
versions, and each wrapper is run on a tiny model: after an upgrade, a
failure says which private API changed and which function to update.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.model import keras_internals

VERSIONS = {"Keras": keras.__version__, "TensorFlow": tf.__version__}


@contextlib.contextmanager
def checking(name: str, function: str, library: str = "Keras"):
    """Turns any failure inside the block into one message naming the private
    API and the keras_internals function that relies on it."""
    try:
        yield
    except Exception as err:  # AssertionError included: a changed shape fails like a missing name
        version = ".".join(VERSIONS[library].split(".")[:2])
        pytest.fail(f"{library} {version} changed {name.replace(':', '.')}: "
                    f"engine/model/keras_internals.py {function} "
                    f"needs updating ({type(err).__name__}: {err})", pytrace=False)


def private(path: str):
    """The object at ``module.path:attribute.attribute``."""
    module, _, attributes = path.partition(":")
    found = importlib.import_module(module)
    for attribute in filter(None, attributes.split(".")):
        found = getattr(found, attribute)
    return found


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def tiny_functional() -> keras.Model:
    inputs = keras.Input((3,), name="x")
    return keras.Model(inputs, keras.layers.Dense(1, name="dense")(inputs))


def tiny_sequential() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])


class TinySubclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)


def data(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype("float32"), rng.integers(0, 2, (n, 1)).astype("float32")


def cpu() -> tf.distribute.Strategy:
    return tf.distribute.OneDeviceStrategy("/cpu:0")


# (library, private API, the keras_internals function that relies on it, what must hold).
PRIVATE_APIS = [
    ("Keras", "keras.src.models.functional:Functional", "is_functional",
     lambda: issubclass(private("keras.src.models.functional:Functional"), keras.Model)
     and isinstance(tiny_functional(), private("keras.src.models.functional:Functional"))),
    ("Keras", "keras:Model._distribute_strategy", "model_strategy",
     lambda: tiny_functional()._distribute_strategy is None),
    ("Keras", "keras:Model._symbolic_build", "symbolic_build",
     lambda: "data_batch" in parameters(keras.Model._symbolic_build)),
    ("Keras", "keras:Model._maybe_symbolic_build", "keras_build_before_fit, replace_build_before_fit",
     lambda: parameters(keras.Model._maybe_symbolic_build) == ["self", "iterator", "data_batch"]),
    ("Keras", "keras.src.backend.tensorflow.trainer:reduce_per_replica", "wrap_reduce_per_replica",
     lambda: parameters(private("keras.src.backend.tensorflow.trainer:reduce_per_replica"))
     == ["values", "strategy", "reduction"]),
    ("Keras", "keras.src.backend.tensorflow.trainer:_collective_all_reduce_multi_worker", "multi_worker_collective",
     lambda: parameters(private("keras.src.backend.tensorflow.trainer:_collective_all_reduce_multi_worker"))
     == ["strategy"]),
    ("TensorFlow", "tensorflow.python.framework.config:disable_op_determinism", "disable_op_determinism",
     lambda: parameters(private("tensorflow.python.framework.config:disable_op_determinism")) == []),
    ("Keras", "keras:Sequential._functional", "nodes_by_depth",
     lambda: tiny_sequential()._functional is not None),
    ("Keras", "keras.src.ops.function:Function._nodes_by_depth", "nodes_by_depth",
     lambda: isinstance(tiny_functional()._nodes_by_depth, dict)),
    ("Keras", "keras.src.ops.operation:Operation._inbound_nodes", "called",
     lambda: keras.layers.Dense(1)._inbound_nodes == []),
]


@pytest.mark.parametrize("library,name,function,holds", PRIVATE_APIS, ids=[a[1] for a in PRIVATE_APIS])
def test_each_private_api_is_there_with_its_shape(library, name, function, holds):
    with checking(name, function, library):
        assert holds(), "not the expected shape"


def test_is_functional_tells_functional_models_apart():
    with checking("keras.src.models.functional:Functional", "is_functional"):
        assert keras_internals.is_functional(tiny_functional())
        assert not keras_internals.is_functional(tiny_sequential())
        assert not keras_internals.is_functional(TinySubclassed())
        assert not keras_internals.is_functional(keras.layers.Dense(1))


def test_model_strategy_is_the_strategy_the_model_was_built_under():
    with checking("keras:Model._distribute_strategy", "model_strategy"):
        assert keras_internals.model_strategy(tiny_functional()) is None
        strategy = cpu()
        with strategy.scope():
            model = tiny_functional()
        assert keras_internals.model_strategy(model) is strategy


@pytest.mark.parametrize("own", [True, False], ids=["own build", "keras build"])
def test_the_build_before_fit_hook_runs_and_builds(own: bool):
    """The hook gets fit's epoch iterator; building from its first batch (or
    deferring to Keras) leaves the layers, the compiled metrics and the
    optimizer built before the first step."""
    seen = []

    class Tiny(keras.Model):
        pass

    def build(model, iterator=None, data_batch=None):
        with checking("the items of Keras' TF epoch iterator", "first_batch"):
            assert iterator is not None, "fit passed no iterator"
            if own:
                batch = keras_internals.first_batch(iterator)
                x, y = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], batch)
                assert (tuple(x.shape), tuple(y.shape)) == ((4, 3), (4, 1))
        if own:
            with checking("keras:Model._symbolic_build", "symbolic_build"), strategy.scope():
                keras_internals.symbolic_build(model, (x, y))
        else:
            with checking("keras:Model._maybe_symbolic_build", "keras_build_before_fit"):
                keras_internals.keras_build_before_fit(model, iterator=iterator, data_batch=data_batch)
        seen.append(model.built and model.optimizer.built)

    keras_internals.replace_build_before_fit(Tiny, build)
    strategy = cpu()
    with strategy.scope():
        inputs = keras.Input((3,))
        model = Tiny(inputs, keras.layers.Dense(1)(inputs))
        model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    x, y = data()
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    with checking("keras:Model._maybe_symbolic_build", "replace_build_before_fit"):
        assert seen == [True], "fit did not call the build hook, or the hook left the model unbuilt"
    assert np.isfinite(history.history["loss"][0])


def test_wrap_reduce_per_replica_wraps_what_fit_calls_once(monkeypatch):
    from keras.src.backend.tensorflow import trainer as tf_trainer

    current = tf_trainer.reduce_per_replica
    # An unwrapped stand-in (restored after the test), whatever another test left there.
    monkeypatch.setattr(tf_trainer, "reduce_per_replica", lambda *args, **kwargs: current(*args, **kwargs))
    wraps, calls = [], []

    def wrap(original):
        wraps.append(original)

        def reduce_per_replica(values, strategy, reduction):
            calls.append(reduction)
            return original(values, strategy, reduction)
        return reduce_per_replica

    name = "keras.src.backend.tensorflow.trainer:reduce_per_replica"
    with checking(name, "wrap_reduce_per_replica"):
        keras_internals.wrap_reduce_per_replica(wrap)
        keras_internals.wrap_reduce_per_replica(wrap)
        assert len(wraps) == 1, "wrapped twice"
        model = tiny_functional()
        model.compile(optimizer="sgd", loss="mse")
        model.fit(*data(), batch_size=4, epochs=1, verbose=0)
        assert calls, "fit no longer reduces its step results through reduce_per_replica"


def test_multi_worker_collective_is_false_off_a_multi_worker_cluster():
    # A MultiWorkerMirroredStrategy joins its cluster once per process: the True
    # side is test_train.py's test_multi_worker_two_local_processes, two worker processes.
    with checking("keras.src.backend.tensorflow.trainer:_collective_all_reduce_multi_worker",
                  "multi_worker_collective"):
        assert keras_internals.multi_worker_collective(tf.distribute.get_strategy()) is False
        assert keras_internals.multi_worker_collective(cpu()) is False


def test_disable_op_determinism_turns_what_the_public_api_turned_on_off():
    from tensorflow.python.framework import config as tf_config

    was = tf_config.is_op_determinism_enabled()
    try:
        with checking("tensorflow.python.framework.config:disable_op_determinism", "disable_op_determinism",
                      "TensorFlow"):
            tf.config.experimental.enable_op_determinism()
            keras_internals.disable_op_determinism()
            assert not tf_config.is_op_determinism_enabled()
    finally:
        (tf.config.experimental.enable_op_determinism if was else tf_config.disable_op_determinism)()


def test_nodes_by_depth_lists_every_call_of_a_graph():
    inputs = keras.Input((3,))
    shared = keras.layers.Dense(3, name="shared")
    functional = keras.Model(inputs, shared(shared(inputs)))

    def calls(model):
        return sorted(node.operation.name for nodes in keras_internals.nodes_by_depth(model).values()
                      for node in nodes if not node.is_input)

    with checking("keras.src.ops.function:Function._nodes_by_depth", "nodes_by_depth"):
        assert calls(functional) == ["shared", "shared"]
    with checking("keras:Sequential._functional", "nodes_by_depth"):
        sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="only")])
        assert calls(sequential) == ["only"]
        assert keras_internals.nodes_by_depth(TinySubclassed()) is None


def test_called_is_true_once_a_layer_was_called_on_symbolic_inputs():
    with checking("keras.src.ops.operation:Operation._inbound_nodes", "called"):
        dense = keras.layers.Dense(1)
        assert not keras_internals.called(dense)
        dense(keras.Input((3,)))
        assert keras_internals.called(dense)
