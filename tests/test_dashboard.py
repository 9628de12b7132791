"""The sweep's live view never looks stuck: a trial says it is starting from
its process' first second, and after a resume the overall bar and the curves
count what earlier runs finished. Driven with events; nothing trains."""

from __future__ import annotations

import io
import json
import logging
import signal
import sys
import types
from pathlib import Path

import pytest
from rich.console import Console

from engine.errors import UserError
from engine.study import worker
from engine.study.dashboard import STARTING, Dashboard

EPOCHS, PER_EPOCH = 3, 10


def trial(folder: Path, name: str):
    config = types.SimpleNamespace(seed=0, epochs=EPOCHS, out=folder / "trials" / name, records=None, batch_size=8)
    return types.SimpleNamespace(name=name, setting=name.split("_")[0], config=config)


def write_history(trial_, val_losses: list[float]) -> None:
    trial_.config.out.mkdir(parents=True, exist_ok=True)
    lines = ["epoch,loss,accuracy,val_loss,val_accuracy"] + [
        f"{i + 1},0.5,0.8,{v},0.75" for i, v in enumerate(val_losses)]
    (trial_.config.out / "history.csv").write_text("\n".join(lines) + "\n")


def shown(board: Dashboard) -> str:
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(board.render())
    return console.export_text()


def test_a_starting_trial_says_so_and_the_others_stay_queued(tmp_path):
    a, b = trial(tmp_path, "a_seed0"), trial(tmp_path, "b_seed0")
    board = Dashboard(total_steps=60, quiet=True, steps_per_epoch=None)
    for t in (a, b):
        board("queued", t, {})
    board("starting", a, {})  # its process started: importing TensorFlow, compiling
    board("queued", a, {})  # the process' own list of its trials changes nothing
    rows = {line.split()[1]: line for line in shown(board).splitlines() if line.startswith("│")}
    assert f"{STARTING} 0 s" in rows["a"] and "queued" in rows["b"]  # with the seconds it has spent
    board("start", a, {"compiles": True})
    assert board.rows["a_seed0"]["status"] == STARTING  # until its first batch
    board("batch", a, {"steps": 2})
    assert board.rows["a_seed0"]["status"] == "running"


def test_off_a_terminal_a_starting_trial_is_one_line(tmp_path):
    a = trial(tmp_path, "a_seed0")
    console = Console(file=io.StringIO(), width=200)
    board = Dashboard(total_steps=30, console=console, steps_per_epoch=None)
    board("queued", a, {})
    board("starting", a, {})
    board("starting", a, {})  # the parent and the process both say it: one line
    board("start", a, {"compiles": True})
    lines = console.file.getvalue().splitlines()
    assert lines == ["a_seed0: starting (its process imports TensorFlow and compiles the step)",
                     "a_seed0: compiling (the first step traces and compiles the model)"]


@pytest.mark.parametrize("planned", [PER_EPOCH, None], ids=["steps known from the records", "steps measured"])
def test_after_a_resume_the_bar_and_the_curves_count_every_finished_epoch(tmp_path, planned):
    finished, resumed, fresh = (trial(tmp_path, f"{n}_seed0") for n in ("a", "b", "c"))
    write_history(finished, [0.7, 0.6, 0.5])
    write_history(resumed, [0.8, 0.7])  # 2 of 3 epochs done before this run
    board = Dashboard(total_steps=3 * EPOCHS * PER_EPOCH, quiet=True,
                      steps_per_epoch=(lambda t: planned) if planned else None)
    for t in (finished, resumed, fresh):
        board("queued", t, {})
    # Skipped as finished: its metrics.json is its end event.
    board("end", finished, {"status": "done", "epochs_done": EPOCHS, "steps_per_epoch": PER_EPOCH})
    assert board.progress.tasks[0].completed == EPOCHS * PER_EPOCH
    assert board.rows[finished.name]["val_losses"] == [0.7, 0.6, 0.5] and board.rows[finished.name]["epoch"] == 3
    board("start", resumed, {"compiles": True})
    for _ in range(PER_EPOCH):
        board("batch", resumed, {})
    assert board.rows[resumed.name]["epoch"] == 2  # shown from its first batch
    board("epoch", resumed, {"epoch": 3, "loss": 0.4, "val_loss": 0.6})
    assert board.progress.tasks[0].completed == 2 * EPOCHS * PER_EPOCH
    assert board.rows[resumed.name]["val_losses"] == [0.8, 0.7, 0.6]
    board("end", resumed, {"status": "done", "epochs_done": EPOCHS, "steps_per_epoch": PER_EPOCH})
    board("start", fresh, {"compiles": False})
    for epoch in range(1, EPOCHS + 1):
        board("batch", fresh, {"steps": PER_EPOCH})
        board("epoch", fresh, {"epoch": epoch, "val_loss": 1.0 / epoch})
    board("end", fresh, {"status": "done", "epochs_done": EPOCHS, "steps_per_epoch": PER_EPOCH})
    assert board.progress.tasks[0].completed == board.progress.tasks[0].total == 90
    assert [len(board.rows[t.name]["val_losses"]) for t in (finished, resumed, fresh)] == [3, 3, 3]


def test_a_trial_that_will_not_train_counts_its_steps_as_done(tmp_path):
    diverged, elsewhere = trial(tmp_path, "a_seed0"), trial(tmp_path, "b_seed0")
    board = Dashboard(total_steps=60, quiet=True, steps_per_epoch=lambda t: PER_EPOCH)
    board("start", diverged, {})
    board("batch", diverged, {"steps": PER_EPOCH})
    board("epoch", diverged, {"epoch": 1, "val_loss": 9.0})
    board("end", diverged, {"status": "diverged", "epochs_done": 1, "steps_per_epoch": PER_EPOCH})
    board("end", elsewhere, {"status": "running elsewhere"})
    assert board.progress.tasks[0].completed == 60
    assert board.rows[diverged.name]["epoch"] == 1  # diverged at epoch 1: not shown as 3/3


def test_an_unreadable_history_or_manifest_is_logged_and_the_view_goes_on(tmp_path, caplog):
    broken, bare = trial(tmp_path, "a_seed0"), trial(tmp_path, "b_seed0")
    (broken.config.out / "history.csv").mkdir(parents=True)  # there, but not a file
    bare.config.records = tmp_path / "no-records"
    board = Dashboard(total_steps=60, quiet=True)  # planned steps from the records, as a sweep does
    with caplog.at_level(logging.DEBUG, logger="engine.study.dashboard"):
        board("end", broken, {"status": "done", "epochs_done": EPOCHS, "steps_per_epoch": PER_EPOCH})
        board("end", bare, {"status": "failed"})
    assert board.rows[broken.name]["status"] == "done" and board.rows[broken.name]["val_losses"] == []
    logged = {(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records}
    assert logged == {("WARNING", f"{broken.config.out / 'history.csv'}: not read for the dashboard's curve"),
                      ("DEBUG", "b_seed0: no planned steps per epoch")}
    assert "IsADirectoryError" in caplog.text and f"{tmp_path / 'no-records'} is not a records folder" in caplog.text


def test_the_first_trial_of_a_shard_is_its_first_unfinished_one(tmp_path):
    names = [f"t{i}" for i in range(5)]
    (tmp_path / "sweep.json").write_text(json.dumps({"trials": [{"name": n} for n in names]}))
    (tmp_path / "trials" / "t1").mkdir(parents=True)
    (tmp_path / "trials" / "t1" / "metrics.json").write_text('{"status": "done"}')
    assert worker.first_trial(tmp_path, (1, 2)) == "t3"  # shard 1 of 2: t1 (finished), t3
    assert worker.first_trial(tmp_path, (1, 2), restart=True) == "t1"
    assert worker.first_trial(tmp_path, (0, 2)) == "t0"
    assert worker.first_trial(tmp_path / "missing", (0, 1)) is None


def test_a_trial_process_says_starting_before_it_imports_tensorflow(tmp_path, monkeypatch, capsys):
    (tmp_path / "sweep.json").write_text(json.dumps({"trials": [{"name": "t0"}, {"name": "t1"}]}))
    seen = []
    monkeypatch.delenv("ENGINE_VERBOSE", raising=False)
    monkeypatch.setattr("engine.progress.quiet_tensorflow", lambda: seen.append(capsys.readouterr().out))
    # The sweep module (which imports TensorFlow) stood in for: the run stops at once.
    stub = types.SimpleNamespace(terminate=lambda *_: None)
    monkeypatch.setitem(sys.modules, "engine.study.sweep", stub)
    monkeypatch.setattr("engine.study.sweep", stub, raising=False)

    def stop(*args, **kwargs):
        raise UserError("stopped here")
    monkeypatch.setattr(worker, "run", stop)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit):
            worker.main([str(tmp_path), "--shard", "1/2", "--processes", "2"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen and worker.read_event(seen[0]) == ("starting", "t1", {})
