"""How long `engine report DIR` takes on a finished 60-trial sweep.

Builds a made-up finished sweep shaped like `--preset robust --axis lr` (6
learning rates x 10 splits x 1 seed, 5 epochs, 40 validation and 40 test
images scored per run), then times `engine report DIR` end to end in a fresh
process with TensorFlow made unimportable (as a user's `engine report` runs:
Python start-up, imports, reading 60 trial folders, the statistics, the
figures and the report). Interleaved repeats; median and range.

    .venv/bin/python benchmarks/report_time.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine import options
from engine.results import runs
from engine.study import plan

CODE = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
        "from engine.cli import main; sys.argv = ['engine', 'report', sys.argv[1]]; main()")


def made_up_sweep(out: Path, images: int = 40) -> int:
    """A finished lr sweep of 6 rates x 10 splits in ``out``; returns its trial count."""
    sweep = options.sweep_config({"axis": "lr", "preset": "robust"}, {}, Path("/records"), out)
    rng = np.random.default_rng(0)
    members = [{"index": k, "train": 160, "val": 40, "sha256": "-", "folder": f"splits/split{k}",
                "members_file": f"splits/split{k}/members.json"} for k in range(1, sweep.splits + 1)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({
        "config": sweep.to_json(), "command": ["resume", str(out)], "choice": {"precision": "float32", "xla": "off"},
        "deviations": [], "machine": {}, "splits": {"count": sweep.splits, "mode": "holdout", "sizes": None,
                                                    "seed": 0, "ratio": 0.25, "pool": 200, "members": members},
        "trials": plan.entries(plan.trials(sweep))}))
    listed = plan.trials(sweep)
    labels = np.arange(images) % 2
    for i, trial in enumerate(listed):
        folder = trial.config.out
        folder.mkdir(parents=True)
        losses = 0.6 - 0.05 * np.arange(sweep.base.epochs) + 0.02 * rng.standard_normal(sweep.base.epochs)
        runs.write_history(folder, [{"epoch": e + 1, "loss": v, "val_loss": v, "accuracy": 0.8, "val_accuracy": 0.8,
                                     "val_auc": 0.9, "seconds": 10.0, "images_per_second": 20.0}
                                    for e, v in enumerate(losses)])
        for split in ("val", "test"):
            scores = np.clip(0.5 + (labels - 0.5) * 0.6 + 0.2 * rng.standard_normal(images), 0.01, 0.99)
            runs.save_scores(runs.scores_path(folder, split), [f"{split}/{j}.png" for j in range(images)], labels,
                             labels, scores)
        runs.write_metrics(folder, {"status": "done", "bn_momentum": 0.9, "model": "last (epoch 5)",
                                    "threshold": {"value": 0.5, "chosen_on": "fixed"},
                                    "scores": {s: {"file": runs.scores_path(folder, s).name} for s in ("val", "test")}})
    return len(listed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sweep"
        count = made_up_sweep(folder)
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", CODE, str(folder)], check=True, capture_output=True)
            seconds.append(time.perf_counter() - start)
    print(f"engine report on {count} finished trials: median {statistics.median(seconds):.2f} s "
          f"(min {min(seconds):.2f}, max {max(seconds):.2f}, {args.repeats} runs)")


if __name__ == "__main__":
    main()
