"""The report's clinical pieces from saved per-image scores: the seed-ensemble test table with
intervals and paired DeLong differences, each run's own metrics over seeds, the report's lines, and
calibration.png. Trial folders are written by hand (metrics.json plus score files in the runs'
format), so no model is trained."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from engine.study.clinical import (ENSEMBLE_VALIDATION, RUNS_MEDIAN, clinical_table, plot_calibration,
                                   report_lines)
from engine.results import runs
from engine.results.runs import read_scores
from engine.training.evaluation import save_scores
from engine.results.metrics import (DELONG_TEST_FALLBACK, auc_score_interval, brier_score, delong_test,
                                     expected_calibration_error, scores_summary, youden_threshold)

# Six test images (3 positive) and six validation images; the positive class has label 1, so the
# saved score P(positive) is p itself.
LABELS = np.array([1, 1, 1, 0, 0, 0])
IDS = [f"test/{'covid' if y else 'normal'}/{i}.png" for i, y in enumerate(LABELS)]


def trial(folder, test_p, val_p=None, threshold=None, status="done", order=None, val_prefix="val/"):
    """A finished trial folder as a run leaves it: metrics.json naming scores-val/test.csv.
    ``val_prefix`` names its validation images (another prefix: other images, as on another split)."""
    folder.mkdir(parents=True)
    order = np.arange(LABELS.size) if order is None else np.asarray(order)
    val_p = test_p if val_p is None else val_p
    for split, p in (("test", test_p), ("val", val_p)):
        ids = [IDS[i].replace("test/", "test/" if split == "test" else val_prefix) for i in order]
        # Positive label 1: "positive" is the label and the score P(positive) is p, saved as float32 as runs do.
        runs.save_scores(runs.scores_path(folder, split), ids, LABELS[order], LABELS[order],
                         np.asarray(p, np.float32)[order])
    result = {"status": status,
              "threshold": threshold or {"value": 0.5, "chosen_on": "fixed"},
              "scores": {"columns": ["index", "id", "label", "positive", "score"],
                         "val": {"file": "scores-val.csv", "id": "image/source_id"},
                         "test": {"file": "scores-test.csv", "id": "image/source_id"}}}
    if status != "done":
        result = {"status": status}  # a diverged run names no scores (any files are stale)
    (folder / "metrics.json").write_text(json.dumps(result))
    return folder


def test_scores_file_round_trip(tmp_path):
    path = tmp_path / "scores-test.csv"
    # Positive label 0: the saved score is 1 - p, and "positive" marks label 0.
    save_scores(path, ["a", "b", "c"], np.array([0.25, 0.9, 0.5], np.float32), np.array([0, 1, 0]), 0)
    back = read_scores(path)
    assert back["id"].tolist() == ["a", "b", "c"] and back["label"].tolist() == [0, 1, 0]
    # Scores are written in full precision: float32 0.9 widened to float64, then 1 - p, exactly.
    assert back["positive"].tolist() == [1, 0, 1] and back["score"].tolist() == [0.75, 1 - float(np.float32(0.9)), 0.5]
    assert path.read_text().splitlines()[0] == "index,id,label,positive,score"


def test_table_pools_seeds_and_compares_with_the_reference(tmp_path):
    # Setting A, two seeds: averaged test scores 0.8 0.7 0.6 | 0.3 0.2 0.65 (one negative above two positives).
    a1 = trial(tmp_path / "a1", [0.9, 0.6, 0.5, 0.2, 0.3, 0.6])
    a2 = trial(tmp_path / "a2", [0.7, 0.8, 0.7, 0.4, 0.1, 0.7])
    # Setting B, one seed finished and one diverged (its stale score files must not count).
    b1 = trial(tmp_path / "b1", [0.6, 0.4, 0.9, 0.5, 0.7, 0.1])
    b2 = tmp_path / "b2"
    b2.mkdir()
    save_scores(b2 / "scores-test.csv", IDS, np.ones(6, np.float32), LABELS, 1)
    (b2 / "metrics.json").write_text(json.dumps({"status": "diverged"}))
    table = clinical_table({"A": [a1, a2], "B": [b1, b2], "C": [tmp_path / "never-ran"]}, reference="A")
    rows = {r["setting"]: r for r in table["rows"]}
    assert [r["setting"] for r in table["rows"]] == ["A", "B", "C"]
    assert rows["A"]["runs"] == 2 and rows["B"]["runs"] == 1 and rows["B"]["seeds"] == ["b1"]
    assert rows["C"]["runs"] == 0 and "metrics" not in rows["C"] and rows["C"]["auc_difference"] is None
    pooled_a = np.array([0.8, 0.7, 0.6, 0.3, 0.2, 0.65])
    # AUC of A by hand: positives 0.8 0.7 beat all three negatives, 0.6 beats 0.3 and 0.2: 8 of 9.
    assert rows["A"]["metrics"]["auc"] == pytest.approx(8 / 9)
    # At 0.5: positives all found, negative 0.65 a false positive: accuracy 5/6.
    assert rows["A"]["metrics"]["accuracy"] == pytest.approx(5 / 6) and rows["A"]["threshold"] == 0.5
    expected = scores_summary(LABELS, pooled_a, 0.5, seed=0)
    for name, interval in expected["intervals"].items():
        assert rows["A"]["intervals"][name] == pytest.approx(interval), name
    assert rows["A"]["interval_methods"]["accuracy"] == "Clopper-Pearson"
    assert rows["A"]["brier"] == pytest.approx(expected["brier"]) and "ece" in rows["A"]
    # The reference has no difference; B's is DeLong's paired test of A's pooled scores against B's.
    assert rows["A"]["auc_difference"] is None
    found = delong_test(LABELS, pooled_a, [0.6, 0.4, 0.9, 0.5, 0.7, 0.1])
    difference = rows["B"]["auc_difference"]
    assert difference["n"] == 6
    assert difference["difference"] == pytest.approx(found["difference"], abs=1e-6)
    assert difference["p"] == pytest.approx(found["p"], abs=1e-5)
    assert difference["low"] < difference["difference"] < difference["high"]
    # B's AUC by hand: positives 0.6 (beats 0.5 0.1), 0.4 (beats 0.1), 0.9 (beats all): 6 of 9.
    assert difference["difference"] == pytest.approx(8 / 9 - 6 / 9, abs=1e-6)
    assert table["reference"] == "A" and "averaged" in table["pooling"]


def test_table_aligns_images_by_id(tmp_path):
    # The same scores saved in another row order give the same pooled result.
    scores = [0.9, 0.6, 0.5, 0.2, 0.3, 0.6]
    plain = clinical_table({"A": [trial(tmp_path / "plain", scores)]}, "A")
    shuffled = clinical_table({"A": [trial(tmp_path / "shuffled", scores, order=[5, 2, 0, 4, 1, 3])]}, "A")
    assert plain["rows"][0]["metrics"] == shuffled["rows"][0]["metrics"]


def test_table_threshold_chosen_on_pooled_validation(tmp_path):
    youden = {"value": 0.33, "chosen_on": "val", "rule": "Youden's J"}
    # Validation of the two seeds averages to positives 0.7 0.65 0.6, negatives 0.1 0.05 0.2: separable,
    # so Youden's threshold is 0.5 whatever each seed's own was.
    r1 = trial(tmp_path / "s1", [0.9] * 3 + [0.1] * 3, val_p=[0.8, 0.6, 0.7, 0.1, 0.0, 0.3], threshold=youden)
    r2 = trial(tmp_path / "s2", [0.9] * 3 + [0.1] * 3, val_p=[0.6, 0.7, 0.5, 0.1, 0.1, 0.1], threshold=youden)
    row = clinical_table({"A": [r1, r2]}, "A")["rows"][0]
    assert row["threshold"] == 0.5 and row["threshold_rule"] == ENSEMBLE_VALIDATION
    # Each run alone uses its own validation scores' threshold (separable too: 0.5), not the recorded 0.33.
    assert row["per_run"]["thresholds"] == [0.5, 0.5]
    pooled_val = np.array([0.7, 0.65, 0.6, 0.1, 0.05, 0.2])
    assert youden_threshold(LABELS, pooled_val) == 0.5


def test_table_threshold_with_disjoint_validation_images(tmp_path):
    # Split replicates: each run validated on its own images, so no image is in every run's validation set
    # and the ensemble has no validation scores. Each run's own Youden threshold: positives above all three
    # negatives (0.1 0.2 0.3), so every threshold in (0.3, lowest positive] is best, and the one nearest 0.5
    # is the lowest positive: 0.42, 0.38 and 0.35 (as float32, the precision the scores are saved in).
    youden = {"value": 0.0, "chosen_on": "val", "rule": "Youden's J"}
    test_p = [0.9, 0.4, 0.37, 0.1, 0.2, 0.36]
    runs = [trial(tmp_path / f"split{k}", test_p, val_p=[low, 0.9, 0.95, 0.1, 0.2, 0.3], threshold=youden,
                  val_prefix=f"split{k}/val/") for k, low in enumerate([0.42, 0.38, 0.35])]
    row = clinical_table({"A": runs}, "A")["rows"][0]
    own = [float(np.float32(v)) for v in (0.42, 0.38, 0.35)]
    assert row["per_run"]["thresholds"] == own
    # The ensemble's threshold is their median, and the table says so.
    assert row["threshold"] == own[1] and row["threshold_rule"] == RUNS_MEDIAN
    # Test positives 0.9 0.4 0.37, negatives 0.1 0.2 0.36: at 0.38 two positives found and no negative.
    assert row["metrics"]["sensitivity"] == pytest.approx(2 / 3) and row["metrics"]["specificity"] == 1.0
    # Each run at its own threshold: 0.42 finds one positive, 0.38 two, 0.35 three and one negative.
    spread = row["per_run"]["metrics"]
    assert spread["sensitivity"]["values"] == pytest.approx([1 / 3, 2 / 3, 1])
    assert spread["sensitivity"]["mean"] == pytest.approx(2 / 3) and spread["sensitivity"]["sd"] == pytest.approx(1 / 3)
    assert spread["specificity"]["values"] == pytest.approx([1, 1, 2 / 3])


def test_table_gives_each_runs_metrics_over_seeds(tmp_path):
    # Two runs at the fixed threshold 0.5; each is scored alone on all its test images.
    # r1: positives 0.9 0.6 0.5 all found, negative 0.6 a false positive: accuracy 5/6, sensitivity 1,
    #     specificity 2/3; AUC: 0.9 beats 3, 0.6 beats 2 and ties 1 (2.5), 0.5 beats 2: 7.5/9 = 5/6.
    # r2: positives 0.7 0.8 found, 0.4 missed, negative 0.6 a false positive: accuracy 4/6, sensitivity 2/3,
    #     specificity 2/3; AUC: 0.7 and 0.8 beat all 3, 0.4 beats 0.1 and 0.2: 8/9.
    r1_p, r2_p = [0.9, 0.6, 0.5, 0.2, 0.3, 0.6], [0.7, 0.8, 0.4, 0.6, 0.1, 0.2]
    table = clinical_table({"A": [trial(tmp_path / "r1", r1_p), trial(tmp_path / "r2", r2_p)],
                            "B": [trial(tmp_path / "b1", r1_p)]}, "A")
    rows = {r["setting"]: r for r in table["rows"]}
    assert rows["A"]["ensemble"] == "ensemble of 2 models" and rows["B"]["ensemble"] == "single model"
    spread = rows["A"]["per_run"]
    assert spread["runs"] == 2 and spread["thresholds"] == [0.5, 0.5] and spread["threshold_rule"] == "fixed"
    expected = {"accuracy": (5 / 6, 4 / 6), "sensitivity": (1, 2 / 3), "specificity": (2 / 3, 2 / 3),
                "auc": (5 / 6, 8 / 9)}
    for name, (a, b) in expected.items():
        stat = spread["metrics"][name]
        assert stat["values"] == pytest.approx([a, b], abs=1e-12), name
        # Two values: mean (a + b) / 2 and SD |a - b| / sqrt(2) (n - 1 in the denominator).
        assert stat["mean"] == pytest.approx((a + b) / 2, abs=1e-12), name
        assert stat["sd"] == pytest.approx(abs(a - b) / np.sqrt(2), abs=1e-12), name
        assert (stat["min"], stat["max"]) == pytest.approx((min(a, b), max(a, b)), abs=1e-12), name
    # Brier and ECE of each run's saved (float32) scores; r1: (0.01 + 0.16 + 0.25 + 0.04 + 0.09 + 0.36) / 6.
    saved = [np.float32(r1_p).astype(float), np.float32(r2_p).astype(float)]
    assert spread["metrics"]["brier"]["values"] == pytest.approx([brier_score(LABELS, s) for s in saved], rel=1e-12)
    assert spread["metrics"]["brier"]["values"][0] == pytest.approx(0.91 / 6, rel=1e-6)
    assert spread["metrics"]["ece"]["values"] == pytest.approx(
        [expected_calibration_error(LABELS, s) for s in saved], rel=1e-12)
    # One run: its value, and no SD.
    single = rows["B"]["per_run"]["metrics"]["accuracy"]
    assert single["mean"] == pytest.approx(5 / 6) and single["sd"] is None
    # The table is JSON (summary.json carries it) without NaN.
    json.dumps(table, allow_nan=False)


def test_report_lines(tmp_path):
    # R and S rank every test image right, so DeLong's variance of their difference is 0: the MOVER interval
    # stands in, with no p-value. A has two runs for the single-model table; "none" has no finished run.
    settings = {"R": [trial(tmp_path / "r", [0.9, 0.8, 0.7, 0.2, 0.1, 0.3])],
                "S": [trial(tmp_path / "s", [0.6, 0.9, 0.7, 0.4, 0.1, 0.3])],
                "A": [trial(tmp_path / "a1", [0.9, 0.6, 0.5, 0.2, 0.3, 0.6]),
                      trial(tmp_path / "a2", [0.7, 0.8, 0.4, 0.6, 0.1, 0.2])],
                "none": [tmp_path / "never-ran"]}
    table = clinical_table(settings, "R")
    lines = report_lines(table)
    text = "\n".join(lines)
    assert lines[0] == "## Test metrics (reported, never used to choose)"
    bound = 1 - auc_score_interval(1.0, 3, 3)[0]
    assert table["rows"][1]["auc_difference"]["p"] is None
    assert f"+0.000 ({-bound:+.3f} to {bound:+.3f}; no p-value†)" in text and f"† {DELONG_TEST_FALLBACK}." in text
    assert "| A | ensemble of 2 models | 0.5 |" in text and "| R | single model | 0.5 |" in text
    # A's single runs: accuracy 5/6 and 4/6, mean 0.75, SD 0.118 -> two decimals.
    assert "| A | 2 | 0.5 | 0.75 ± 0.12 (0.67-0.83) |" in text
    # Calibration: ECE with its interval beside the calibrated ECE; R separates the classes, so no slope, and why.
    assert "ECE if calibrated" in text and "R: no calibration slope, the scores separate the classes" in text
    assert "| none | no finished run |" in text and "| none | 0 |" in text
    assert "Thresholds (on P(positive)): R, S, A: fixed." in text
    # A slope or intercept to the decimals its interval carries (2 significant digits of the half width), none
    # finer: 12.2 (0.6 to 27.5) is "12 (1 to 28)", 0.13 (-0.9 to 1.1) is "0.1 (-0.9 to 1.1)".
    row = next(row for row in table["rows"] if row["setting"] == "A")
    row["recalibration"] = dict(row["recalibration"], slope=12.2, slope_interval=[0.6, 27.5], intercept=0.13,
                                intercept_interval=[-0.9, 1.1])
    assert "| 12 (1 to 28) | 0.1 (-0.9 to 1.1) |" in "\n".join(report_lines(table))
    assert report_lines(None) == [] and report_lines(clinical_table({"x": [tmp_path / "never-ran"]}, "x")) == []


def test_table_refuses_runs_that_disagree_on_labels(tmp_path):
    good = trial(tmp_path / "good", [0.9, 0.6, 0.5, 0.2, 0.3, 0.6])
    bad = trial(tmp_path / "bad", [0.9, 0.6, 0.5, 0.2, 0.3, 0.6])
    rows = (bad / "scores-test.csv").read_text().splitlines()
    rows[1] = rows[1].replace(",1,1,", ",0,0,")  # first image relabelled negative
    (bad / "scores-test.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match="disagree on the labels"):
        clinical_table({"A": [good, bad]}, "A")


def legend_texts(figure) -> list[str]:
    return [text.get_text() for text in figure.legends[0].get_texts()]


def test_calibration_png(tmp_path):
    settings = {"lr=1e-3": [trial(tmp_path / "a1", [0.9, 0.6, 0.5, 0.2, 0.3, 0.6]),
                            trial(tmp_path / "a2", [0.7, 0.8, 0.7, 0.4, 0.1, 0.7])],
                "lr=1e-4": [trial(tmp_path / "b1", [0.6, 0.4, 0.9, 0.5, 0.7, 0.1])],
                "lr=1e-5": [tmp_path / "never-ran"]}
    path = tmp_path / "calibration.png"
    figure = plot_calibration(settings, {"lr=1e-3"}, path)
    with Image.open(path) as image:
        width, height = image.size
    # One paper column (3.5 in at 300 dpi): the test panel, the legend under it.
    assert 900 <= width <= 1100 and height > width
    assert len(figure.axes) == 1 and figure.axes[0].get_title() == "test" and len(figure.legends) == 1
    # Each drawn setting names what its ECE is of; the setting that never ran is not drawn.
    labels = legend_texts(figure)
    assert len(labels) == 3 and labels[-1] == "perfect calibration"
    assert labels[0].startswith("lr=1e-3 (best): ECE ") and labels[0].endswith(" (ensemble of 2 models)")
    assert labels[1].startswith("lr=1e-4: ECE ") and labels[1].endswith(" (single model)")
    assert "ensemble" in figure.legends[0].get_title().get_text()
    # No run with scores: nothing is drawn and nothing written.
    assert plot_calibration({"x": [tmp_path / "never-ran"]}, {"x"}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_calibration_png_shows_the_tables_ensemble_ece(tmp_path):
    # Three runs: the ensemble's average puts two positives and a negative at 0.65 and one positive and
    # two negatives at 0.35, nearly calibrated (ECE 1/60); one run scores every image 0.25 higher, one
    # 0.25 lower (ECE 0.25 each). The ensemble's ECE (0.017) is far below the runs' mean ECE (0.17), so
    # a legend giving the runs' mean fails.
    run_p = [[0.9, 0.9, 0.6, 0.6, 0.6, 0.9], [0.4, 0.4, 0.1, 0.1, 0.1, 0.4], [0.65, 0.65, 0.35, 0.35, 0.35, 0.65]]
    settings = {"A": [trial(tmp_path / f"a{k}", p) for k, p in enumerate(run_p)]}
    table = clinical_table(settings, "A")
    row = table["rows"][0]
    saved = np.float32(run_p).astype(float)  # the scores as the runs saved them
    ensemble = expected_calibration_error(LABELS, saved.mean(axis=0))
    runs_mean = np.mean([expected_calibration_error(LABELS, s) for s in saved])
    assert row["ece"] == pytest.approx(ensemble, rel=1e-12)
    assert row["per_run"]["metrics"]["ece"]["mean"] == pytest.approx(runs_mean, rel=1e-12)
    assert ensemble == pytest.approx(1 / 60, abs=1e-6) and runs_mean == pytest.approx(31 / 180, abs=1e-6)

    # The ECE the report's calibration table prints for A (to the decimals its interval supports).
    lines = report_lines(table)
    header = next(line for line in lines if "ensemble ECE (95 %)" in line)
    cells = [c.strip() for c in lines[lines.index(header) + 2].split("|")[1:-1]]
    assert cells[0] == "A"
    table_ece = cells[header.split("|")[1:-1].index(" ensemble ECE (95 %) ")].split(" ")[0]

    figure = plot_calibration(settings, set(), tmp_path / "calibration.png")
    label = legend_texts(figure)[0]
    assert label == f"A: ECE {table_ece} (ensemble of 3 models)"
    # The same number, and not the runs' mean, whatever the rounding.
    shown = float(re.search(r"ECE (\S+) ", label).group(1))
    places = len(table_ece.split(".")[1])
    assert shown == pytest.approx(round(ensemble, places), abs=1e-12)
    assert abs(shown - runs_mean) > 10 ** -places
    # The curve is the ensemble's: its averaged scores in the ECE's bins, 0.3-0.4 and 0.6-0.7.
    x, y = figure.axes[0].get_lines()[1].get_data()
    assert np.allclose(x, [0.35, 0.65], atol=1e-6) and np.allclose(y, [1 / 3, 2 / 3])
    # The single-models table names its ECE column as the runs' mean.
    assert any("| Brier | ECE (runs' mean) |" in line for line in lines)
