"""A sweep's trial plan (and its split draw) is built once, by the sweep's
``begin``, and every later consumer reads it from sweep.json or receives it.

After ``begin`` the trial generator (``plan.trials``) and the split draw
(``replicates.draw``, ``resample.draw``) are made to raise, here and in the
trial processes (through a ``sitecustomize`` on their PYTHONPATH), and a
``--parallel 2`` sweep with the dashboard, a resume of a lost trial and the
report all still run to completion.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

import factories
from engine import cli, options
from engine.results import runs
from engine.study import collect, compare, plan as plan_lib, sweep as sweep_lib

# Loaded into every trial process before the engine: the generator and the
# split draw raise there too.
RAISING = """
import engine.data.resample, engine.study.plan, engine.study.replicates

def _built_again(*args, **kwargs):
    raise AssertionError("the plan or the splits were built again after begin")

engine.study.plan.trials = _built_again
engine.study.replicates.draw = _built_again
engine.data.resample.draw = _built_again
"""


def built_again(*args, **kwargs):
    raise AssertionError("the plan or the splits were built again after begin")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return factories.synthetic_records(tmp_path_factory.mktemp("once"), {"train": 32, "val": 16, "test": 16}, 48,
                                       image_size=32)


def tiny_sweep(records, out, splits: int):
    """A TinyCNN lr sweep of 2 rates, 1 epoch, one seed on each of ``splits`` splits."""
    return options.sweep_config(
        {"axis": "lr", "preset": "quick"},
        {"lrs": (1e-3, 1e-2), "batch_sizes": (8,), "epochs": 1, "repeats": 1, "splits": splits, "model": "TinyCNN",
         "weights": "none", "image_size": 32, "precision": "float32", "xla": "off", "bn_stats": "moving"},
        records, out)


def test_after_begin_nothing_builds_the_plan_or_draws_the_splits_again(records, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    cfg = tiny_sweep(records, out, splits=2)
    begun = sweep_lib.begin(cfg)
    stored = json.loads((out / "sweep.json").read_text())
    assert [t["name"] for t in stored["trials"]] == [t.name for t in begun.plan] and len(begun.plan) == 4
    # Each trial carries its setting's own values: nothing is divided back out.
    assert [(t.lr, t.batch, t.split, t.seed, t.epochs) for t in begun.plan] == \
        [(1e-3, 8, 1, 0, 1), (1e-3, 8, 2, 0, 1), (1e-2, 8, 1, 0, 1), (1e-2, 8, 2, 0, 1)]

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(RAISING)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setattr(plan_lib, "trials", built_again)
    monkeypatch.setattr(sweep_lib.replicates, "draw", built_again)
    monkeypatch.setattr(sweep_lib.replicates.resample, "draw", built_again)

    # The sweep, in two trial processes, with its dashboard; then its report.
    outcome = compare.run(cfg, parallel="2", quiet=False)
    assert [r["status"] for r in outcome["results"]] == ["done"] * 4 and outcome["report"] is not None
    # A lost trial, run again by engine resume (in this process).
    lost = begun.plan[3].config.out
    shutil.rmtree(lost)
    compare.resume(out, quiet=True)
    assert runs.read_metrics(lost)["status"] == "done"
    # The report on its own, from the command line.
    (out / "report.md").unlink()
    cli.app(["report", str(out)], standalone_mode=False)
    text = (out / "report.md").read_text()
    assert all(t.setting in text for t in begun.plan) and "2 splits" in text
    settings = collect.collect(out)["settings"]
    assert {r["split"] for r in settings["lr=0.01"]} == {1, 2} and runs.finished(lost)


def test_a_sweep_json_of_an_older_engine_gains_its_plan_on_resume(records, tmp_path):
    """An older sweep.json listed its trials without their setting's own values: engine resume
    begins the sweep again, stores the full plan, and trains."""
    out = tmp_path / "old"
    cfg = tiny_sweep(records, out, splits=1)
    sweep_lib.begin(cfg)
    path = out / "sweep.json"
    stored = json.loads(path.read_text())
    old = ("index", "name", "setting", "lr", "batch_size", "optimizer", "epochs", "split", "seed")
    path.write_text(json.dumps(stored | {"trials": [{k: t[k] for k in old} for t in stored["trials"]]}))
    assert sweep_lib.load(out)[2] is None
    compare.resume(out, quiet=True)
    assert json.loads(path.read_text())["trials"] == stored["trials"]
    assert all(runs.finished(t.config.out) for t in sweep_lib.load(out)[2])
