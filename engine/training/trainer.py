"""The owner of everything training keeps from one trial to the next in a
process: ``Trainer``. A caller makes one per process (a sweep's trial
process, the bench) and passes it to every ``prepare`` / ``train`` of that
process; ``trainer=None`` there means a fresh one for that call only.

``Trainer.set_up`` is the one place a trial's quantities reach the compiled
classifier; ``graph_key`` says when a trial can reuse it.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, replace

import keras
import numpy as np
import tensorflow as tf

from engine.config import ModelConfig, TrainConfig
from engine.data import augment
from engine.model import build
from engine.training import distribute, evaluation, precise_bn
from engine.training.classifier import Classifier, augment_placement, dtype_policy, make_classifier
from engine.training.numerics import Numerics
from engine.training.optim import set_rate
from engine.training.schedule import constant_schedule, schedule_key
from engine.training.seeding import seed_run


def trial_model(cfg: TrainConfig, manifest: dict, momentum: float | None) -> ModelConfig:
    """The network a trial builds: ``cfg.model`` with the records' channels
    and the resolved BatchNorm momentum (``Numerics.bn_momentum``; None, as
    older choices had it, leaves each backbone's own), the one place that
    momentum is put into a model config: the graph key and every build of
    the trial read it from here."""
    return replace(cfg.model, channels=manifest["channels"], bn_momentum=momentum)


def graph_key(cfg: TrainConfig, model: ModelConfig, steps: int, precision: str, xla: str,
              distribution: tf.distribute.Strategy) -> str:
    """Everything that shapes the traced step; a trial whose key equals the
    compiled one's reuses it. Weights, seed, a constant learning rate and the
    batch size do not shape it (training batches leave tf.data with an
    unknown batch dimension, the run seed and the steps per epoch are
    variables of the classifier), except where a schedule is built from the
    steps. The BatchNorm momentum does: Keras reads it as a Python number
    when the step is traced. So do deterministic kernels (a kernel may read
    the setting when it is created, as a traced function first runs) and
    the strategy object itself: variables made in one strategy's scope
    belong to it, and the compiled classifier keeps its strategy alive, so
    its ``id`` stays unique while the key is held."""
    return json.dumps([replace(model, weights="-").__dict__, cfg.optimizer, schedule_key(cfg, steps), cfg.augment,
                       augment_placement(cfg.augment_placement), precision, xla, cfg.deterministic,
                       distribute.describe(distribution), id(distribution)], default=str)


@dataclass
class _Compiled:
    key: str
    classifier: Classifier
    optimizer_start: list[np.ndarray]  # the optimizer's variables as compiled: iterations 0, slots empty


class Trainer:
    """Everything a process keeps from one trial to the next: the compiled
    classifier and its optimizer, the augmentation functions, the initial
    weights of the networks built, the traced forward passes of evaluation
    and of precise BatchNorm statistics, and the MirroredStrategy it made.

    Why keep them: TensorFlow 2.21 keeps every traced function of every
    model alive in its runtime (tensorflow#61791, keras#17458), so building
    and compiling a classifier per trial would grow memory by the size of its
    graphs each time, and cost the compile time again. A trial whose
    ``graph_key`` equals the compiled classifier's reuses it; ``set_up`` then
    gives it the trial's own values, so that a trial after others in the same
    process trains exactly as it would alone.

    ``compiles`` counts the classifiers this Trainer compiled; ``reused``
    says whether the last ``set_up`` reused one.
    """

    # Initial weights kept, by (graph, seed, weights): a sweep's repeats share
    # their seeds across settings, and building InceptionV3 (twice, with the
    # fused BatchNorm swap) costs seconds per trial that these copies save;
    # ~90 MB each for InceptionV3.
    INITIAL_KEPT = 4

    def __init__(self) -> None:
        self.compiles = 0
        self.reused = False
        self._compiled: _Compiled | None = None
        self._initial: OrderedDict[str, list[np.ndarray]] = OrderedDict()
        self._augment_fns: dict[tuple, object] = {}
        self._forward: tuple[keras.Model, object] | None = None
        self._moments: tuple[keras.Model, object] | None = None
        self._mirrored: tuple[tuple[str, ...], tf.distribute.Strategy] | None = None

    @property
    def classifier(self) -> Classifier | None:
        """The compiled classifier (None before the first ``set_up``)."""
        return None if self._compiled is None else self._compiled.classifier

    @property
    def optimizer(self) -> keras.optimizers.Optimizer | None:
        """The compiled classifier's optimizer."""
        return None if self._compiled is None else self._compiled.classifier.optimizer

    def strategy(self) -> tf.distribute.Strategy:
        """Several hosts from ``TF_CONFIG``, all local GPUs, or the default device.

        The batch size given by the user is the global batch: each of R
        replicas gets batch / R examples, so the optimizer sees the same
        batch statistics (and the same learning rate is right) whatever R.
        The engine does not rescale the learning rate with R.

        This Trainer hands out one MirroredStrategy per device list, so its
        trials reuse the classifier compiled in that strategy's scope; the
        multi-worker strategy is the process' (``distribute.PROCESS_WIDE``).
        """
        if "TF_CONFIG" in os.environ:
            return distribute.multi_worker_strategy()
        gpus = distribute.local_gpus()
        if len(gpus) > 1:
            if self._mirrored is None or self._mirrored[0] != gpus:
                self._mirrored = (gpus, tf.distribute.MirroredStrategy(list(gpus)))
            return self._mirrored[1]
        return tf.distribute.get_strategy()

    def augment_fn(self, policy: str, manifest: dict):
        """One augmentation function per (policy, image shape): its traces and
        XLA compilations are kept, not redone per trial. Its own seed is
        fixed: the run seed enters through its key. (RandAugment and AugMix
        draw from their own state, which is not reset per trial: their runs
        do not repeat anyway, see ``augment.make_augment_fn``.)"""
        key = (policy, manifest["image_size"][0], manifest["channels"])
        if key not in self._augment_fns:
            self._augment_fns[key] = augment.make_augment_fn(policy, image_size=key[1], channels=key[2], seed=0)
        return self._augment_fns[key]

    def pipeline_augment_fn(self, cfg: TrainConfig, manifest: dict):
        """The augmentation tf.data applies (see ``augment_placement``), or None
        when it runs in the training step or there is none."""
        if augment_placement(cfg.augment_placement) == "data" and cfg.augment != "none":
            return self.augment_fn(cfg.augment, manifest)
        return None

    def step_augment_fn(self, cfg: TrainConfig, manifest: dict):
        """The augmentation the compiled training step applies, or None when tf.data does."""
        if augment_placement(cfg.augment_placement) == "step" and cfg.augment != "none":
            return self.augment_fn(cfg.augment, manifest)
        return None

    def forward(self, net: keras.Model):
        """The traced inference pass of ``net`` (``evaluation.forward_pass``),
        kept for the network the trials share."""
        if self._forward is None or self._forward[0] is not net:
            self._forward = (net, evaluation.forward_pass(net))
        return self._forward[1]

    def moments(self, net: keras.Model):
        """The traced precise-BatchNorm pass of ``net`` (``precise_bn.moments_fn``),
        kept for the network the trials share."""
        if self._moments is None or self._moments[0] is not net:
            self._moments = (net, precise_bn.moments_fn(net))
        return self._moments[1]

    def set_up(self, cfg: TrainConfig, manifest: dict, steps: int, numerics: Numerics,
               distribution: tf.distribute.Strategy) -> Classifier:
        """The compiled classifier for a trial of ``cfg`` (resolved) at
        ``steps`` per epoch in ``numerics``' precision, XLA and BatchNorm
        momentum, with every per-trial quantity of the classifier set here
        and nowhere else: the seed (Python's and NumPy's generators, the
        step's augmentation key), the network's weights and BatchNorm
        statistics (the seed's initial values), the optimizer's state
        (iterations 0, slots empty), the learning rate (a constant one; a
        schedule is part of the graph key) and the steps per epoch (the batch
        size's part in the step). The BatchNorm momentum is part of the graph
        key (``trial_model``), so a reused classifier has the trial's
        already. (The data's order and tf.data augmentation follow
        ``cfg.seed`` and the batch size where the batches are made:
        ``run.input_batches``.) Compiles a new classifier, in
        ``distribution``'s scope, when the trial's graph key differs from
        the compiled one's.
        """
        precision, xla = numerics.precision.value, numerics.xla.value
        model = trial_model(cfg, manifest, numerics.bn_momentum)
        key = graph_key(cfg, model, steps, precision, xla, distribution)
        self.reused = self._compiled is not None and self._compiled.key == key
        if not self.reused:
            # Drop the old classifier and everything traced for it before
            # building: Keras' session state (layer names, its seed
            # generator) starts afresh, as in a new process, and its
            # garbage collection frees the old classifier's memory.
            self._compiled = None
            self._initial.clear()
            self._forward = self._moments = None
            keras.backend.clear_session()
        # Once per set-up, after the numerics probe (which draws numbers of
        # its own) and before any network is built: the initial weights and
        # dropout seeds follow the trial's seed.
        seed_run(cfg.seed)
        wanted = json.dumps([key, cfg.seed, cfg.model.weights])
        synchronized = distribution.num_replicas_in_sync > 1
        with dtype_policy(precision), distribution.scope():
            if self._compiled is None:
                net = build(model, synchronized_bn=synchronized)
                self._remember(wanted, net)
                classifier = make_classifier(cfg, manifest, net, steps, xla, self.step_augment_fn(cfg, manifest))
                self._compiled = _Compiled(key, classifier, [np.array(v) for v in classifier.optimizer.variables])
                self.compiles += 1
            elif wanted not in self._initial:
                self._remember(wanted, build(model, synchronized_bn=synchronized))
            classifier = self._compiled.classifier
            for target, value in zip(classifier.net.variables, self._initial[wanted]):
                target.assign(value)
            # The optimizer's variables include a constant rate's variable:
            # the trial's rate is set after them.
            for target, value in zip(classifier.optimizer.variables, self._compiled.optimizer_start):
                target.assign(value)
            if constant_schedule(cfg):
                set_rate(classifier.optimizer, cfg.lr)
            classifier.run_seed.assign(cfg.seed)
            classifier.steps_per_epoch.assign(steps)
        return classifier

    def _remember(self, wanted: str, net: keras.Model) -> None:
        """Keeps the initial values of every variable of ``net`` (weights,
        BatchNorm statistics, dropout seed states), the oldest dropped."""
        while len(self._initial) >= self.INITIAL_KEPT:
            self._initial.popitem(last=False)
        self._initial[wanted] = [np.array(v) for v in net.variables]


def step_augment_fn(cfg: TrainConfig, manifest: dict, trainer: Trainer | None = None):
    """``trainer.step_augment_fn`` (default: a new Trainer's): the augmentation
    the compiled step applies for ``cfg``, or None when tf.data does."""
    return (trainer or Trainer()).step_augment_fn(cfg, manifest)
