"""A run's random state: its seed drives Python's and NumPy's generators (and
through them every Keras initializer and dropout seed drawn while the network
is built), while TensorFlow's global seed stays one value for the process.

Why not ``keras.utils.set_random_seed`` per run: it also sets TensorFlow's
global seed, and TensorFlow clears its cache of instantiated functions
whenever that seed is set (``context._set_global_seed``), so the next call of
an already compiled training step instantiates it again and grappler
optimizes the whole InceptionV3 graph again: 14-17 s per trial of the quick
preset on the 2-core AVX2 CPU (measured, benchmarks/RESULTS.md). Nothing in a
run draws from TensorFlow's global seed except tf.data's shuffles, whose op
seeds already derive from the run seed and the epoch (``pipeline.epoch_seed``).
"""

from __future__ import annotations

import random

import numpy as np
import tensorflow as tf

# TensorFlow's global seed in every process that trains: set once, never changed.
PROCESS_TF_SEED = 0


def seed_run(seed: int) -> None:
    """Seeds Python and NumPy with ``seed`` (initial weights follow it) and sets
    TensorFlow's global seed to ``PROCESS_TF_SEED`` only if it is not already.
    Training calls it once per trial, in ``Trainer.set_up`` just before any
    network is built; the numerics probe seeds its own builds."""
    random.seed(seed)
    np.random.seed(seed)
    # get_seed(op_seed) returns (global seed, op seed) without drawing from the
    # context's generator; the global part is 87654321 while none was set.
    if tf.compat.v1.random.get_seed(1)[0] != PROCESS_TF_SEED:
        tf.random.set_seed(PROCESS_TF_SEED)
