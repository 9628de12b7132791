"""The command line: one-line errors, summaries, plain output off a terminal."""

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from engine.cli import app
from factories import class_folder

runner = CliRunner()


def engine(*args, env=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def engine_here(*args):
    """A command run in this process (its exit status and output, as typer's runner gives them)."""
    from typer.testing import CliRunner

    from engine.cli import app
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_user_error_is_one_line_exit_2(tmp_path):
    done = engine("build-records", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: source folder {tmp_path / 'missing'} does not exist or is not a folder"]
    assert "Traceback" not in done.stderr


def test_build_records_prints_summary_and_plain_progress(tmp_path):
    src = class_folder(tmp_path / "src", {"covid": 5, "normal": 5})
    done = engine("build-records", str(src), str(tmp_path / "out"), "--workers", "0",
                  "--image-size", "32", "--split", "0.6,0.2,0.2")
    assert done.returncode == 0, done.stderr
    # Not a terminal: plain progress lines on stderr, no bar control codes.
    assert "Decoding images: 10/10 files" in done.stderr and "\x1b[" not in done.stderr
    assert "covid (0)" in done.stdout and "normal (1)" in done.stdout
    assert "train" in done.stdout and "images/s" in done.stdout


def test_bad_option_value_is_one_line(tmp_path):
    src = class_folder(tmp_path / "src", {"covid": 2, "normal": 2})
    result = runner.invoke(app, ["build-records", str(src), str(tmp_path / "o"), "--subset", "5,x"])
    assert isinstance(result.exception, Exception)
    assert "--subset takes comma-separated whole numbers, not '5,x'" in str(result.exception)


def test_synthetic_bad_arguments_are_one_line(tmp_path):
    for args, message in ((["--image-size", "8"], "error: image size must be an integer of at least 16 px, got 8"),
                          (["--seed", "-1"], "error: seed must be a non-negative integer, got -1")):
        done = engine("synthetic", str(tmp_path / "out"), "--counts", "2,0,0", *args)
        assert done.returncode == 2 and done.stderr.strip().splitlines() == [message], done.stderr
        assert not (tmp_path / "out").exists()


def test_a_cpu_terminal_shows_no_tensorflow_start_up_lines(tmp_path):
    import re

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ENGINE_VERBOSE")}
    log_line = re.compile(r"^[IWE][0-9]{4} ", re.MULTILINE)
    args = [sys.executable, "-m", "engine.cli", "compare", "--dry-run", "--epochs", "1", "--out", str(tmp_path / "c")]
    planned = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert planned.returncode == 0 and "6 trials" in planned.stdout and not log_line.search(planned.stderr)
    bad = subprocess.run(args + ["--axis", "nope"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --axis must be one of lr, batch, grid, optimizer, not 'nope'"], bad.stderr
    # Writing records starts TensorFlow (the dry run above does not): its
    # start-up lines show only with --verbose.
    src = class_folder(tmp_path / "src", {"covid": 2, "normal": 2})
    build = [sys.executable, "-m", "engine.cli", "build-records", str(src), str(tmp_path / "r"), "--workers", "0",
             "--image-size", "32", "--split", "0.5,0.25,0.25"]
    quiet = subprocess.run(build, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0 and not log_line.search(quiet.stderr), quiet.stderr
    verbose = subprocess.run([*build[:3], "--verbose", *build[3:], "--overwrite"], capture_output=True, text=True,
                             env=env, timeout=300)
    assert verbose.returncode == 0 and log_line.search(verbose.stderr), verbose.stderr


def test_the_command_line_only_parses_and_calls():
    import ast
    from pathlib import Path

    from engine import cli

    source = Path(cli.__file__).read_text()
    assert len(source.splitlines()) < 300
    compare = next(node for node in ast.walk(ast.parse(source))
                   if isinstance(node, ast.FunctionDef) and node.name == "compare")
    # (a conditional expression on an option, such as --config given or not, is an option check)
    assert not [node for node in ast.walk(compare) if isinstance(node, (ast.If, ast.For, ast.While, ast.Try))]


def test_recipes_listed():
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0
    for name in ("chest-xray-pneumonia", "covid19-radiography", "covidx", "synthetic"):
        assert name in result.output


def test_train_evaluate_predict_gradcam(tmp_path):
    import factories

    factories.synthetic_records(tmp_path, {"train": 32, "val": 8, "test": 8}, 64)
    run = tmp_path / "run"
    done = engine("train", str(tmp_path / "records"), "--out", str(run), "--model", "TinyCNN", "--weights", "none",
                  "--image-size", "64", "--epochs", "2", "--batch-size", "8", "--lr", "1e-3",
                  "--precision", "float32", "--xla", "off", "--threshold", "val-youden")
    assert done.returncode == 0, done.stderr
    assert "epoch 2/2" in done.stdout and "test (8 images, positive class covid" in done.stdout
    # evaluate and predict in this process: TensorFlow's start-up spared
    done = engine_here("evaluate", str(run), "--split", "val")
    assert done.exit_code == 0, done.output
    assert "val (8 images" in done.stdout
    image = next((tmp_path / "images" / "test" / "covid").glob("*.png"))
    done = engine_here("predict", str(run), str(image), "--gradcam", str(tmp_path / "cams"))
    assert done.exit_code == 0, done.output
    line = done.stdout.strip().splitlines()[-1]
    name, probability = line.rsplit(" ", 2)[-2:]
    # The class is decided by the run's threshold (val-youden here, not always 0.5) on P(covid), the
    # positive class; the probability printed is that of the class named.
    threshold = json.loads((run / "metrics.json").read_text())["threshold"]["value"]
    p_covid = float(probability) if name == "covid" else 1 - float(probability)
    assert line.startswith(str(image)) and name in ("covid", "normal") and 0 <= float(probability) <= 1
    assert (p_covid >= threshold) == (name == "covid"), (line, threshold)
    from PIL import Image
    overlay = Image.open(tmp_path / "cams" / f"{image.stem}_gradcam.png")
    assert overlay.size == (64, 64) and overlay.mode == "RGB"
    done = engine("predict", str(run), str(tmp_path / "missing.png"))  # listed as unreadable: a runtime failure
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == \
        "error: 1 of 1 images could not be read (listed above)"
    done = engine("train", str(tmp_path / "records"), "--out", str(tmp_path / "bad"), "--lr", "0")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == "error: --lr must be > 0, not 0.0"
