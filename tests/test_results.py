"""The results floor: the run folder's format read and written in one place,
and a report written from a folder of finished trials without TensorFlow."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.errors import DamagedState
from engine.results import runs
from test_report_output import epoch_rows, fake_sweep

ROOT = Path(__file__).resolve().parents[1]
# The run folder's own file names: only engine/results names them in code.
RUN_FILES = re.compile(r"history\.csv|metrics\.json|scores-|state\.json|failure\.txt")


def string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant of a module that is not a docstring."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_run_folders_file_names_live_in_the_results_layer(tmp_path):
    found = [f"{path.relative_to(ROOT)}:{line}: {text!r}" for path in sorted((ROOT / "engine").rglob("*.py"))
             if "results" not in path.relative_to(ROOT / "engine").parts
             for line, text in string_literals(path) if RUN_FILES.search(text)]
    assert not found, "name the run folder's files through engine.results.runs:\n" + "\n".join(found)
    # The check sees a name where code spells it out, and not in a docstring.
    module = tmp_path / "planted.py"
    module.write_text('"""Reads history.csv."""\nNAME = "metrics.json"\n')
    assert [text for _, text in string_literals(module)] == ["metrics.json"]


def test_the_run_folder_round_trips(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert runs.read_metrics(run) is None and not runs.finished(run) and runs.epochs_done(run) == []
    history = [{"epoch": 1, "loss": 0.5, "val_loss": 0.25}, {"epoch": 2, "loss": 0.125, "val_loss": None}]
    runs.write_history(run, history)
    assert runs.read_history(run) == history == runs.read_history(run / runs.HISTORY)
    for status, done in (("failed", False), ("done", True), ("diverged", True)):
        runs.write_metrics(run, {"status": status})
        assert runs.finished(run) is done and (runs.finished_metrics(run) is not None) is done
    scores = np.array([0.1, 0.75])
    runs.save_scores(runs.scores_path(run, "val"), ["a.png", "b.png"], np.array([0, 1]), np.array([0, 1]), scores)
    read = runs.read_scores(run / "scores-val.csv")
    assert read["id"].tolist() == ["a.png", "b.png"] and read["score"].tolist() == [0.1, 0.75]
    # Damaged files say so; a history whose epochs skip one is damaged too.
    (run / runs.METRICS).write_text("{not json")
    with pytest.raises(DamagedState):
        runs.read_metrics(run)
    assert not runs.finished(run)
    runs.write_history(run, [{"epoch": 1}, {"epoch": 3}])
    with pytest.raises(DamagedState, match="do not count"):
        runs.read_history(run)


def test_engine_report_runs_with_tensorflow_unimportable(tmp_path):
    fake_sweep(tmp_path, lambda setting, seed: epoch_rows([0.7, 0.5, 0.3 + seed / 10]))
    # An import of TensorFlow or Keras anywhere, even inside a function, fails.
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
            "from engine.cli import main; sys.argv = ['engine', 'report', sys.argv[1]]; main()")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 trials: 6 finished." in done.stdout
    assert (tmp_path / "report.md").read_text().startswith("# batch study (quick preset)")
    assert json.loads((tmp_path / "summary.json").read_text())["rows"]


def test_engine_compare_dry_run_runs_with_tensorflow_unimportable(tmp_path):
    """The plan, its estimate and its disk without starting a framework; nothing is written."""
    import factories

    records = factories.synthetic_records(tmp_path, {"train": 24, "val": 12, "test": 12}, 48, image_size=32)
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
            "from engine.cli import main; sys.argv = ['engine', *sys.argv[1:]]; main()")
    args = ["compare", str(records), "--out", str(tmp_path / "sweep"), "--axis", "batch", "--batch-sizes", "4,8",
            "--repeats", "2", "--model", "InceptionV3", "--image-size", "75", "--dry-run", "--json"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads(done.stdout)
    assert plan["count"] == 4 and [t["batch_size"] for t in plan["trials"]] == [4, 4, 8, 8]
    assert {t["split"] for t in plan["trials"]} == {1, 2} and plan["seconds"] > 0
    assert plan["disk"]["trial_mb"] > 80  # InceptionV3's weights, counted without building it
    assert not (tmp_path / "sweep").exists()
