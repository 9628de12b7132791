"""What a sweep's report and plots show a reader, from hand-written sweep
folders (history.csv, metrics.json and score files as runs leave them; no
training): numbers without float noise, whole epochs, the compile time apart,
the chance line, and figures with labelled axes, one legend outside the data,
one colour scheme and print-sized text."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from engine import options
from figures import check_reads_at_a_glance
from engine.study import clinical, collect, numbers, plan as plan_lib, plots, report
from engine.training.evaluation import save_scores

LABELS = np.array([1, 1, 1, 0, 0, 0])


def epoch_rows(val_losses, *, loss=None, val_auc=0.9, first_step=None, seconds=10.0, images_per_second=10.0,
               val_accuracy=0.8):
    """A run's history.csv rows: val loss per epoch, the rest plausible; ``first_step`` the first
    epoch's first-step seconds (a training session's first epoch records it)."""
    loss = loss or val_losses
    return [{"epoch": i + 1, "loss": loss[i], "val_loss": v, "accuracy": 0.8, "val_accuracy": val_accuracy,
             "val_auc": val_auc, "seconds": seconds, "images_per_second": images_per_second,
             "first_step_seconds": first_step if i == 0 else None} for i, v in enumerate(val_losses)]


def write_run(folder: Path, rows: list[dict], scores: list[float] | None = None) -> None:
    """A finished trial folder; with ``scores``, its val and test score files too (for calibration.png)."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {"status": "done", "bn_momentum": 0.9}
    if scores is not None:
        for split in ("val", "test"):
            ids = [f"{split}/{i}.png" for i in range(LABELS.size)]
            save_scores(folder / f"scores-{split}.csv", ids, np.asarray(scores, np.float32), LABELS, 1)
        metrics |= {"threshold": {"value": 0.5, "chosen_on": "fixed"},
                    "scores": {"val": {"file": "scores-val.csv"}, "test": {"file": "scores-test.csv"}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(folder / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def fake_sweep(out: Path, runs, scores=None, **config) -> options.SweepConfig:
    """A finished batch sweep (5, 10, 15; 2 seeds) whose trial (setting, seed) has the history ``runs(setting,
    seed)`` and, with ``scores``, the score files ``scores(setting, seed)``."""
    cfg = options.sweep_config({"axis": "batch", "preset": "quick", "model": "TinyCNN", "weights": "none",
                                "batch_sizes": (5, 10, 15), "lrs": (1e-4,), "repeats": 2, "splits": 1, "epochs": 3,
                                **config},
                               {}, Path("/records"), out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"config": cfg.to_json(), "command": ["compare", "--out", str(out)],
                                                "choice": {"precision": "float32", "xla": "off"},
                                                "deviations": [], "machine": {}}))
    for trial in plan_lib.trials(cfg):
        write_run(trial.config.out, runs(trial.setting, trial.config.seed),
                  scores(trial.setting, trial.config.seed) if scores else None)
    return cfg


# --- numbers ------------------------------------------------------------------

def test_rounded_removes_float_noise():
    assert collect.rounded(0.6499999999999999) == 0.65
    assert json.dumps(collect.rounded({"a": [0.1 + 0.2, (np.float32(0.7),)], "n": np.int64(3), "b": True})) == \
        '{"a": [0.3, [0.7]], "n": 3, "b": true}'
    assert collect.rounded(123456789.0) == 123457000.0 and collect.rounded(1.23456789e-9) == 1.23457e-9
    assert collect.rounded(float("nan")) != collect.rounded(float("nan"))  # stays NaN
    assert collect.rounded("0.6499999999999999") == "0.6499999999999999"  # text is not a number


def test_summary_files_carry_no_float_noise(tmp_path):
    # 0.1 + 0.2 and a mean of thirds: the float noise the summaries must not show.
    fake_sweep(tmp_path, lambda setting, seed: epoch_rows([0.7, 0.1 + 0.2 + seed / 3, 0.65]))
    report.write(tmp_path)
    for name in ("summary.csv", "summary.json"):
        numbers = re.findall(r"\d+\.\d+", (tmp_path / name).read_text())
        digits = {n: len(n.replace(".", "").lstrip("0")) for n in numbers}
        assert numbers and max(digits.values()) <= collect.SIGNIFICANT, (name, max(digits, key=digits.get))
    row = json.loads((tmp_path / "summary.json").read_text())["rows"][0]
    assert row["val_loss"] == 0.605556  # the mean of the 2 runs' last 3 epochs, to 6 digits


def test_table_numbers_carry_what_their_spread_allows():
    assert numbers.pm(0.69312, 0.0123, 3) == "0.693 ± 0.012"
    assert numbers.pm(0.69312, 0.00012, 3) == "0.6931 ± 0.0001"  # at most 4 decimals
    assert numbers.pm(0.69312, 0.31, 3) == "0.69 ± 0.31"
    assert numbers.pm(0.69312, 0.0, 1) == "0.693"  # one run: no SD to show
    assert numbers.pm(76.4, 3.2, 3, 0, 0) == "76 ± 3"
    assert [numbers.significant(v) for v in (1654.2, 16.54, 0.16542, 0)] == ["1654", "16.5", "0.165", "0"]


def test_best_epoch_is_a_whole_epoch(tmp_path):
    # Seed 0 is lowest at epoch 2, seed 1 at epoch 3: a mean would say 2.5.
    fake_sweep(tmp_path, lambda setting, seed: epoch_rows([0.7, 0.3, 0.5] if seed == 0 else [0.7, 0.5, 0.3]))
    written = report.write(tmp_path)
    row = written["rows"][0]
    assert row["best_epochs"] == [2, 3] and row["best_epoch"] == 2 and isinstance(row["best_epoch"], int)
    text = (tmp_path / "report.md").read_text()
    assert "2.5" not in text
    assert re.search(r"\| 0\.300 ± 0\.000 \| 2, 3 \|", text)
    assert numbers.epochs_text([3, 2, 4, 4, 5, 6, 1]) == "4 (median; 1-6)"


def test_compile_time_is_a_column_of_its_own(tmp_path):
    """Seed 0 of every setting compiles (first step 30.5 s, an ordinary step 0.5 s at 10 img/s and batch 5);
    seed 1 reuses the compiled step (first step 0.6 s). Each epoch takes 40 s (the first) or 10 s."""
    def runs(setting, seed):
        rows = epoch_rows([0.7, 0.5, 0.3], first_step=30.5 if seed == 0 else 0.6)
        rows[0]["seconds"] = 40.0 if seed == 0 else 10.1
        return rows
    fake_sweep(tmp_path, runs, batch_sizes=(5,))
    row = report.write(tmp_path)["rows"][0]
    assert row["compile_seconds_by_run"] == pytest.approx([30.0, 0.1])
    assert row["compile_seconds"] == pytest.approx(30.0)  # the one-off, not a mean over runs
    assert row["train_seconds"] == pytest.approx(30.0) and row["train_seconds_std"] == pytest.approx(0.0)
    text = (tmp_path / "report.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| setting |")).split(" | ")
    cells = next(line for line in text.splitlines() if line.startswith("| batch=5 |")).split(" | ")
    assert cells[header.index("s/run")] == "30 ± 0" and cells[header.index("compile s")] == "30"
    # A resumed run compiled twice (once per session); a history without first steps has no compile time.
    resumed = {"history": epoch_rows([0.7, 0.5], first_step=10.5, seconds=25.0),
               "config": type("Config", (), {"batch_size": 5})}
    resumed["history"][1]["first_step_seconds"] = 20.5  # the resumed session's first epoch
    assert collect.measured_seconds(resumed) == pytest.approx((50.0 - 30.0, 30.0))
    old = {"history": [{"epoch": 1, "seconds": 12.0}], "config": None}
    assert collect.measured_seconds(old) == (12.0, None)


def test_plus_minus_is_defined_where_first_used(tmp_path):
    fake_sweep(tmp_path, lambda setting, seed: epoch_rows([0.7, 0.5, 0.3 + seed / 10]))
    report.write(tmp_path)
    lines = (tmp_path / "report.md").read_text().splitlines()
    first = next(line for line in lines if "±" in line)
    assert "a mean ± SD over the setting's finished runs" in first and "sample standard deviation" in first
    assert lines.index(first) < next(i for i, line in enumerate(lines) if line.startswith("| setting |"))


def test_chance_line_when_no_setting_learned(tmp_path):
    at_chance = tmp_path / "chance"
    fake_sweep(at_chance, lambda setting, seed: epoch_rows([0.69, 0.69, 0.70], val_auc=0.5 + 0.05 * seed,
                                                           val_accuracy=0.5))
    written = report.write(at_chance)
    assert written["chance"]["no_setting_learned"]
    lines = (at_chance / "report.md").read_text().splitlines()
    # At the top: what was run, then the answer, which says first, with its
    # rule and its numbers, that nothing was learned.
    assert lines[2].startswith("**What was run:** 3 settings x 2 seeds on the records' own split")
    assert lines[4].startswith("**Answer (validation only):** **No setting learned**: every setting's val AUC (at "
                               "the snapshot, mean over its finished runs) is at most 0.6")
    assert "(0.5 is guessing; highest here: batch=5 0.525). Nothing here compares settings." in lines[4]
    assert json.loads((at_chance / "summary.json").read_text())["chance"]["threshold"] == 0.6
    # One setting learned: no line.
    learned = tmp_path / "learned"
    fake_sweep(learned, lambda setting, seed: epoch_rows([0.69, 0.4, 0.3], val_auc=0.85 if setting == "batch=10"
                                                         else 0.5))
    assert not report.write(learned)["chance"]["no_setting_learned"]
    assert "No setting learned" not in (learned / "report.md").read_text()
    # An undefined val AUC cannot say "everywhere"; no finished run says nothing either.
    rows = [{"setting": "a", "repeats_done": 2, "val_auc": 0.5},
            {"setting": "b", "repeats_done": 2, "val_auc": None}]
    assert not collect.chance(rows)["no_setting_learned"]
    assert not collect.chance([{"setting": "a", "repeats_done": 0, "val_auc": None}])["no_setting_learned"]


# --- figures ------------------------------------------------------------------

def line_colours(fig) -> set[tuple]:
    return {to_rgba(line.get_color()) for ax in fig.axes for line in ax.get_lines()}


def test_the_palette_keeps_meanings_apart():
    curve_colours = {to_rgba(c) for c in plots.CURVE_COLOURS.values()}
    assert not curve_colours & {to_rgba(c) for c in plots.SETTING_COLOURS}
    styles = plots.setting_styles([f"s{i}" for i in range(12)], best={"s1"})
    assert len({(s["color"], s["linestyle"]) for s in styles.values()}) == 12  # every setting distinct
    assert styles["s1"]["linewidth"] > styles["s0"]["linewidth"]


def histories(clipped: bool) -> dict[str, list[list[dict]]]:
    out = {}
    for b in (5, 10, 15, 20):
        runs = []
        for seed in range(2):
            rows = epoch_rows([0.6, 0.4 + 0.01 * seed, 0.3])
            if clipped and b == 10:
                rows[1]["val_loss"] = 2.5 + seed  # a spike above the axis
            runs.append(rows)
        out[f"batch={b}"] = runs
    return out


def test_curves_png(tmp_path):
    fig = plots.plot_curves(histories(clipped=True), tmp_path / "curves.png")
    check_reads_at_a_glance(fig, tmp_path / "curves.png")
    assert len(fig.axes) == 4  # one panel per setting; the grid's empty cells removed
    assert all(ax.get_ylabel() == "accuracy / loss" for ax in fig.axes)
    assert line_colours(fig) == {to_rgba(c) for c in plots.CURVE_COLOURS.values()}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["train acc", "val acc", "train loss", "val loss", "loss above 1, clipped"]
    title = fig.get_suptitle().replace("\n", " ")
    assert "Losses above 1 are drawn at the top edge and marked ▲ (largest: batch=10 val loss 3.5)" in title
    # Nothing clipped: nothing said.
    calm = plots.plot_curves(histories(clipped=False), tmp_path / "calm.png")
    assert "clipped" not in " ".join(t.get_text() for t in calm.legends[0].get_texts())
    assert "above 1" not in calm.get_suptitle()
    # One setting: one column wide.
    single = plots.plot_curves({"lr=0.001": histories(False)["batch=5"]}, tmp_path / "one.png")
    check_reads_at_a_glance(single, tmp_path / "one.png")
    assert single.get_size_inches()[0] == plots.COLUMN


def test_compare_and_calibration_share_the_setting_colours(tmp_path):
    shown = histories(clipped=False)
    fig = plots.plot_compare(shown, tmp_path / "compare.png", best={"batch=5"})
    check_reads_at_a_glance(fig, tmp_path / "compare.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["validation loss", "validation accuracy"]
    styles = plots.setting_styles(list(shown), {"batch=5"})
    assert line_colours(fig) == {to_rgba(styles[name]["color"]) for name in shown}
    assert not line_colours(fig) & {to_rgba(c) for c in plots.CURVE_COLOURS.values()}
    scores = [0.9, 0.6, 0.5, 0.2, 0.3, 0.6]
    folders = {}
    for name in shown:
        folders[name] = [tmp_path / name / "seed0"]
        write_run(folders[name][0], epoch_rows([0.5]), scores)
    folders["batch=15"] = [tmp_path / "never-ran"]  # not drawn: the others keep their colours
    calibration = clinical.plot_calibration(folders, {"batch=5"}, tmp_path / "calibration.png")
    check_reads_at_a_glance(calibration, tmp_path / "calibration.png")
    drawn = {to_rgba(styles[name]["color"]) for name in shown if name != "batch=15"}
    assert line_colours(calibration) == drawn | {to_rgba("0.55")}  # and the perfect-calibration diagonal


def test_report_writes_every_figure(tmp_path):
    fake_sweep(tmp_path, lambda setting, seed: epoch_rows([0.7, 0.5, 0.3 + 0.01 * seed]),
               scores=lambda setting, seed: [0.9, 0.6, 0.5, 0.2, 0.3, 0.6 - 0.1 * seed])
    report.write(tmp_path)
    for name in ("curves.png", "compare.png", "calibration.png"):
        with Image.open(tmp_path / name) as image:
            assert plots.COLUMN * plots.DPI - 1 <= image.size[0] <= plots.PAGE * plots.DPI + 1, name
    assert "![calibration](calibration.png)" in (tmp_path / "report.md").read_text()


# --- the one snapshot -----------------------------------------------------------

def test_every_validation_number_comes_from_the_declared_snapshot(tmp_path):
    # Each run is lowest at epoch 2 (val loss 0.3, val AUC 0.95 there) and ends at 0.5 (val AUC 0.8).
    def runs(setting, seed):
        rows = epoch_rows([0.7, 0.3 + seed / 100, 0.5])
        for row, auc in zip(rows, (0.7, 0.95, 0.8)):
            row["val_auc"] = auc
        return rows
    last = tmp_path / "last"
    fake_sweep(last, runs)
    row = report.write(last)["rows"][0]
    # last: the mean of the last 3 epochs, for the ranking statistic and the validation metrics alike.
    assert row["statistic"] == pytest.approx(np.mean([(0.7 + 0.3 + 0.5) / 3, (0.7 + 0.31 + 0.5) / 3]))
    assert row["val_auc"] == pytest.approx((0.7 + 0.95 + 0.8) / 3)
    assert row["lowest_val_loss"] == pytest.approx(0.305)  # the minimum over the epochs, labelled as such
    assert "Snapshot: the end of training (`--select last`)" in (last / "report.md").read_text()
    best = tmp_path / "best"
    fake_sweep(best, runs, select="best")
    row = report.write(best)["rows"][0]
    # best: the epoch of lowest val loss, for the statistic and the validation metrics alike.
    assert row["statistic"] == pytest.approx(0.305) and row["val_auc"] == pytest.approx(0.95)
    text = (best / "report.md").read_text()
    assert "the minimum of 3 epochs (optimistic)" in text and "`--select best`" in text


def test_the_splits_share_of_the_variance_has_its_exact_interval():
    from scipy import stats as scipy_stats

    from engine.study import replicates

    # 6 splits x 2 seeds of one setting: split effects of SD 1, seed noise of SD 0.5 (fixed draw).
    rng = np.random.default_rng(3)
    values = rng.normal(0, 1, (6, 1)) + rng.normal(0, 0.5, (6, 2))
    row = {"setting": "s", "statistic_by_run": {k + 1: {s: values[k, s] for s in range(2)} for k in range(6)}}
    line = replicates.variance_lines([row])[0]
    # By hand: F = MSB / MSW on (5, 6) df; bounds (F / F_q - 1) / (F / F_q - 1 + n), n = 2 seeds.
    msb = 2 * np.var(values.mean(axis=1), ddof=1)
    msw = np.sum((values - values.mean(axis=1, keepdims=True)) ** 2) / 6
    f = msb / msw
    bounds = [f / scipy_stats.f.ppf(q, 5, 6) - 1 for q in (0.975, 0.025)]
    low, high = (b / (b + 2) for b in bounds)
    assert f"(95 % interval {max(low, 0):.0%} to {min(high, 1):.0%})" in line, line
    # Below 5 splits, no share is printed: its interval would span nearly everything.
    few = {"setting": "s", "statistic_by_run": {k + 1: {s: values[k, s] for s in range(2)} for k in range(3)}}
    assert "not estimated" in replicates.variance_lines([few])[0]


def test_the_closing_summary_is_at_most_8_lines(tmp_path, capsys):
    """What was run, the answer, each claim's verdict (with what would decide it), where the report is."""
    from engine.study import show

    fake_sweep(tmp_path, lambda setting, seed: epoch_rows([0.7, 0.5, 0.3 + 0.01 * seed]))
    written = report.write(tmp_path)
    show.summary(written, tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert 4 <= len(lines) <= 8 and lines[1].startswith("Answer: ") and "**" not in "".join(lines)
    for claim in written["claims"]:
        assert any(line.startswith(f"Claim \"{claim['shown']}\": {claim['verdict']}") for line in lines)
    assert lines[-1].startswith(f"Report: {tmp_path / 'report.md'}")
    # Many claims (a grid sweep): counted by verdict, still at most 8 lines.
    many = dict(written, claims=[{"claim": f"c{i}", "shown": f"c{i}", "verdict": "cannot tell", "remedy": ""}
                                 for i in range(9)])
    show.summary(many, tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 8 and "The paper's claims: 9 cannot tell." in lines
