"""Per-trial state: a trial trained after another in the same process (one
``Trainer``) equals the same trial alone, bit for bit; and nothing in
``engine.training`` keeps state at module level except what
``training.PROCESS_WIDE`` names.

Only public names (``engine.training.__all__``); TinyCNN on 32-px images,
one epoch of 2-4 steps per trial.
"""

import importlib
import pkgutil
import types
import weakref
from dataclasses import replace

import numpy as np
import pytest

import factories
from engine import training
from engine.config import ModelConfig, TrainConfig
from engine.data import synthetic

# The columns of history.csv that are times, not results.
TIMING = {"seconds", "images_per_second", "train_seconds", "val_seconds", "first_step_seconds", "save_seconds",
          "bn_seconds"}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """32 training images at 32 px: 2 steps of 16 (4 of 8) an epoch."""
    return factories.synthetic_records(tmp_path_factory.mktemp("trial-state"), {"train": 32, "val": 8, "test": 8},
                                       32, patient_pattern=synthetic.FILENAME_PATTERN)


def base(records_dir, **changes) -> TrainConfig:
    # Deterministic kernels; Keras' momentum (explicit: auto would give 0.9
    # at 2 and at 4 steps alike); no augmentation but where its placement is
    # the difference (a new Trainer compiles it again: ~7 s on 2 cores).
    values = dict(records=records_dir, model=ModelConfig(name="TinyCNN", weights="none", image_size=32),
                  lr=3e-3, batch_size=16, epochs=1, precision="float32", xla="off", deterministic=True,
                  augment="none", bn_momentum="keras", select="last", bootstrap=10)
    values.update(changes)
    return TrainConfig(**values)


def outcome(trainer, cfg: TrainConfig) -> dict:
    """Trains ``cfg`` with ``trainer``: its history without the times, its
    final weights and validation metrics."""
    result = training.train(cfg, trainer=trainer, quiet=True)
    rows = [{k: v for k, v in row.items() if k not in TIMING} for row in training.read_history(cfg.out / "history.csv")]
    return {"history": rows, "weights": trainer.classifier.net.get_weights(), "val": result["val"]["metrics"]}


# (what A changes, what B changes, whether B reuses A's compiled classifier):
# each pair differs in one per-trial quantity. B is mostly the base config,
# trained alone once for all of them: a B that compiles anew after A costs a
# compile more per pair (~3 s on 2 cores). Either order catches a quantity
# the graph key or the set-up misses.
PAIRS = {
    "lr": (dict(lr=1e-2), {}, True),
    "batch_size": (dict(batch_size=8, seed=1), {}, True),
    "schedule": (dict(schedule="cosine", warmup_epochs=0.5), {}, False),
    "bn_momentum": (dict(bn_momentum="0.9", seed=1), {}, False),
    "optimizer": (dict(optimizer="sgd"), {}, False),
    # bf16 is emulated on a CPU: one epoch of 2 steps.
    "precision": (dict(precision="mixed_bfloat16", seed=1), {}, False),
    "augment_placement": (dict(augment="paper", augment_placement="step", seed=1),
                          dict(augment="paper", augment_placement="data"), False),
}


@pytest.fixture(scope="module")
def alone(records, tmp_path_factory):
    """B trained alone (a fresh Trainer), once per distinct B."""
    done = {}

    def get(changes: dict) -> dict:
        key = repr(sorted(changes.items()))
        if key not in done:
            out = tmp_path_factory.mktemp("alone") / "b"
            done[key] = outcome(training.Trainer(), base(records, out=out, **changes))
        return done[key]
    return get


@pytest.mark.parametrize("pair", list(PAIRS))
def test_a_trial_after_another_equals_it_alone(records, tmp_path, alone, pair):
    a_changes, b_changes, reuses = PAIRS[pair]
    trainer = training.Trainer()
    outcome(trainer, base(records, out=tmp_path / "a", **a_changes))
    after = outcome(trainer, base(records, out=tmp_path / "b", **b_changes))
    assert trainer.reused == reuses and trainer.compiles == (1 if reuses else 2)
    expected = alone(b_changes)
    assert after["history"] == expected["history"]
    assert after["val"] == expected["val"]
    assert len(after["weights"]) == len(expected["weights"])
    for got, want in zip(after["weights"], expected["weights"]):
        np.testing.assert_array_equal(got, want)


def test_one_trainer_hands_out_one_strategy_and_the_process_count_reaches_the_estimates(records):
    trainer = training.Trainer()
    assert trainer.strategy() is trainer.strategy()
    run = training.prepare(base(records), trainer=trainer, processes=3, quiet=True)
    assert run.pace_shape().processes == 3 and run.classifier is trainer.classifier
    # The rate a step is given is the optimizer's: the same one way a trial's is set.
    run.step(*next(iter(run.batches("train"))), lr=1e-4)
    assert float(trainer.optimizer.learning_rate) == pytest.approx(1e-4)
    assert training.constant_schedule(run.cfg)
    assert not training.constant_schedule(replace(run.cfg, warmup_epochs=0.5))
    assert not training.constant_schedule(replace(run.cfg, schedule="step"))


def mutable(value) -> bool:
    return isinstance(value, (dict, list, set, weakref.WeakKeyDictionary, weakref.WeakValueDictionary)) or \
        hasattr(value, "cache_info")


def test_no_module_level_mutable_state_but_the_process_wide():
    allowed = {}
    for name, reason in training.PROCESS_WIDE.items():
        module, attribute = name.rsplit(".", 1)
        allowed[id(getattr(importlib.import_module(module), attribute))] = name
        assert reason, name  # each named with its reason
    found = []
    for info in pkgutil.iter_modules(training.__path__):
        module = importlib.import_module(f"{training.__name__}.{info.name}")
        for name, value in vars(module).items():
            if name.startswith("__") or isinstance(value, (types.ModuleType, type)):
                continue
            if mutable(value) and id(value) not in allowed:
                found.append(f"{module.__name__}.{name} ({type(value).__name__})")
    assert not found, found
