"""Shared test set-up: the ``slow`` marker is opt-in with ``--run-slow``."""

import os

import pytest

# Quiet TensorFlow's start-up chatter in test logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402 - after the log level

# Two logical CPU devices, so tf.distribute.MirroredStrategy can be tested
# without GPUs; this must happen before TensorFlow initialises its devices.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own engine cache folder, never the user's."""
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "engine-cache"))
    # engine compare runs one process unless a test asks for --parallel (its
    # default, auto, would spawn trial processes on a machine with 2+ cores).
    monkeypatch.setenv("ENGINE_PARALLEL", "1")
