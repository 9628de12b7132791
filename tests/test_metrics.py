"""Positive-class metrics: hand-computed values, label convention, Youden, intervals (Clopper-Pearson,
Wilson, DeLong, Newcombe, MOVER, bootstrap), calibration, loss."""

import json
import math
import warnings

import keras
import numpy as np
import pytest

from engine.results import metrics
from engine.results.metrics import (RATE_METRICS, auc_interval, auc_score_interval, binary_cross_entropy,
                                     binary_metrics, bootstrap_intervals, brier_score, calibration_bins,
                                     clopper_pearson, confusion, delong, delong_test,
                                     expected_calibration_error, positive_label_of, positive_scores, roc_auc,
                                     scores_summary, summary, wilson, youden_threshold)

# Ten examples, 4 positives and 6 negatives, with a positive-negative tie at 0.6
# and a negative exactly at the default threshold 0.5.
Y10 = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
S10 = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.6, 0.5, 0.4, 0.2, 0.1])
# AUC by hand, over the 4 x 6 = 24 positive-negative pairs (negatives 0.7 0.6 0.5 0.4 0.2 0.1):
#   positive 0.9 beats all 6, 0.8 beats all 6, 0.6 beats 0.5 0.4 0.2 0.1 and ties 0.6 (4 + 1/2),
#   0.3 beats 0.2 0.1 (2); U = 6 + 6 + 4.5 + 2 = 18.5, AUC = 18.5 / 24 = 37 / 48.
AUC10 = 37 / 48


def close(a, b):
    return a == pytest.approx(b, rel=1e-12, abs=1e-15)


def test_hand_example_at_threshold_one_half():
    # score >= 0.5 predicts positive: positives 0.9 0.8 0.6 found, 0.3 missed; negatives 0.7 0.6 0.5
    # are false positives (0.5 included), 0.4 0.2 0.1 true negatives.
    m = binary_metrics(Y10, S10)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 3, 3, 1)
    assert (m["n"], m["n_positive"], m["threshold"]) == (10, 4, 0.5)
    expected = {"accuracy": 6 / 10, "sensitivity": 3 / 4, "specificity": 3 / 6, "precision": 3 / 6,
                "npv": 3 / 4, "f1": 6 / 10, "auc": AUC10, "balanced_accuracy": (3 / 4 + 3 / 6) / 2}
    for name, value in expected.items():
        assert close(m[name], value), name
    assert confusion(Y10, S10, 0.5) == {"tp": 3, "fp": 3, "tn": 3, "fn": 1}


def test_hand_example_at_threshold_0_65():
    # Positives 0.9 0.8 found, 0.6 0.3 missed; negative 0.7 a false positive, the other 5 true negatives.
    m = binary_metrics(Y10, S10, threshold=0.65)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 5, 2)
    expected = {"accuracy": 7 / 10, "sensitivity": 2 / 4, "specificity": 5 / 6, "precision": 2 / 3,
                "npv": 5 / 7, "f1": 4 / 7, "auc": AUC10, "balanced_accuracy": 2 / 3}
    for name, value in expected.items():
        assert close(m[name], value), name


def test_threshold_is_inclusive():
    assert confusion([1, 0], [0.3, 0.3], 0.3) == {"tp": 1, "fp": 1, "tn": 0, "fn": 0}
    assert confusion([1, 0], [0.3, 0.3], np.nextafter(0.3, 1)) == {"tp": 0, "fp": 0, "tn": 1, "fn": 1}


def test_auc_with_ties_perfect_and_constant():
    assert roc_auc(Y10, S10) == AUC10
    # Positives 0.5 0.5 1.0, negatives 0.0 0.5: pairs (0.5, 0.0) 1, (0.5, 0.5) 1/2, twice, and
    # (1.0, .) 1 + 1; U = 1.5 + 1.5 + 2 = 5 of 6 pairs.
    assert roc_auc([1, 1, 1, 0, 0], [0.5, 0.5, 1.0, 0.0, 0.5]) == 5 / 6
    assert roc_auc([0, 1, 0, 1], [0.1, 0.2, 0.15, 0.9]) == 1.0
    assert roc_auc([0, 1, 0, 1], [0.9, 0.2, 0.95, 0.1]) == 0.0
    assert roc_auc([0, 1, 1, 0, 1], [0.4] * 5) == 0.5


def test_auc_matches_pair_counting_on_random_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60), 1)  # few distinct values: many ties
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    brute = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
    assert close(roc_auc(y, s), brute)


def test_label_convention_positive_label_zero():
    # Labels: covid = 0, normal = 1; p = P(normal). Example 0 is covid with p = 0.9: a confident
    # *wrong* prediction. With covid positive its score is 1 - 0.9 = 0.1, a missed positive.
    labels = np.array([0, 0, 1, 1])
    p = np.array([0.9, 0.2, 0.8, 0.7])
    scores, y = positive_scores(p, labels, positive_label=0)
    assert y.tolist() == [1, 1, 0, 0]
    assert np.allclose(scores, [0.1, 0.8, 0.2, 0.3])
    covid = binary_metrics(y, scores)
    assert (covid["tp"], covid["fn"], covid["tn"], covid["fp"]) == (1, 1, 2, 0)
    assert covid["sensitivity"] == 0.5 and covid["specificity"] == 1.0
    # The same predictions with normal positive: the wrong example is now a false positive.
    scores1, y1 = positive_scores(p, labels, positive_label=1)
    assert y1.tolist() == [0, 0, 1, 1] and np.array_equal(scores1, p)
    normal = binary_metrics(y1, scores1)
    assert (normal["tp"], normal["fn"], normal["tn"], normal["fp"]) == (2, 0, 1, 1)
    assert normal["sensitivity"] == 1.0 and normal["specificity"] == 0.5
    assert covid["accuracy"] == normal["accuracy"] == 0.75


def test_swapping_the_positive_class_swaps_the_metrics():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 200)
    p = np.round(rng.random(200), 2)
    p[p == 0.5] = 0.51  # at exactly 0.5 both classes' scores reach the threshold
    m0 = binary_metrics(*positive_scores(p, labels, 0)[::-1])
    m1 = binary_metrics(*positive_scores(p, labels, 1)[::-1])
    assert m0["sensitivity"] == m1["specificity"] and m0["specificity"] == m1["sensitivity"]
    assert m0["precision"] == m1["npv"] and m0["npv"] == m1["precision"]
    assert m0["accuracy"] == m1["accuracy"] and close(m0["auc"], m1["auc"])
    assert m0["n_positive"] == 200 - m1["n_positive"] == np.count_nonzero(labels == 0)


def test_positive_scores_validates_inputs():
    scores, y = positive_scores(np.array([[0.25], [0.75]], np.float32), [[1], [0]], 0)
    assert scores.tolist() == [0.75, 0.25] and y.tolist() == [0, 1]
    with pytest.raises(ValueError, match="logits"):
        positive_scores([2.3, -1.0], [0, 1], 0)
    with pytest.raises(ValueError, match="0 or 1"):
        positive_scores([0.2, 0.3], [0, 2], 0)
    with pytest.raises(ValueError, match="positive_label"):
        positive_scores([0.2, 0.3], [0, 1], 2)
    with pytest.raises(ValueError, match="mismatch"):
        positive_scores([0.2, 0.3, 0.4], [0, 1], 1)
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        positive_scores(np.full((2, 2), 0.5), [0, 1], 1)


def test_positive_label_of():
    assert positive_label_of({"covid": 0, "normal": 1}, "covid") == 0
    assert positive_label_of({"covid": 0, "normal": 1}, "normal") == 1
    with pytest.raises(ValueError, match="not one of"):
        positive_label_of({"covid": 0, "normal": 1}, "pneumonia")
    with pytest.raises(ValueError, match="two classes"):
        positive_label_of({"covid": 0, "normal": 2}, "covid")


def test_youden_threshold_hand_example():
    # J = sens + spec - 1 for t in each interval between distinct scores of Y10/S10 (4 positives,
    # 6 negatives), t in (previous score, score]:
    #   score: 0.1  0.2  0.3  0.4   0.5  0.6   0.7  0.8  0.9
    #   tp:     4    4    4    3     3    3     2    2    1
    #   tn:     0    1    2    2     3    4     5    6    6
    #   J:      0   1/6  1/3  1/12  1/4  5/12  1/3  1/2  1/4   -> best (0.7, 0.8], all above 0.5:
    # the point nearest 0.5 is just above 0.7 (0.7 itself, a negative, would be called positive).
    t = youden_threshold(Y10, S10)
    assert t == np.nextafter(0.7, 1)
    assert binary_metrics(Y10, S10, t)["sensitivity"] == 2 / 4 and binary_metrics(Y10, S10, t)["specificity"] == 1


def test_youden_keeps_one_half_on_separable_data():
    # Positives >= 0.6 and negatives <= 0.05: J = 1 for every t in (0.05, 0.6], which holds 0.5.
    y = [0, 0, 0, 1, 1, 1]
    assert youden_threshold(y, [0.01, 0.03, 0.05, 0.6, 0.8, 0.99]) == 0.5
    # Positives at exactly 0.5 count as positive at 0.5 (score >= t): (0.2, 0.5] holds 0.5.
    assert youden_threshold([0, 0, 1, 1, 1], [0.1, 0.2, 0.5, 0.7, 0.9]) == 0.5
    # Separated below 0.5: J = 1 on (0.2, 0.4]; its nearest point to 0.5 is the score 0.4.
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.2, 0.4, 0.45]) == 0.4
    # Separated above 0.5: J = 1 on (0.55, 0.6]; nearest point just above 0.55.
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.55, 0.6, 0.9]) == np.nextafter(0.55, 1)


def test_youden_ties():
    # Scores (label): 0.1 (0), 0.25 (1), 0.5 (0), 0.75 (1). J = 1/2 on (0.1, 0.25] and on (0.5, 0.75],
    # 0 elsewhere; 0.5 is in neither (a negative sits at 0.5), the point nearest it is just above 0.5.
    assert youden_threshold([0, 1, 0, 1], [0.1, 0.25, 0.5, 0.75]) == np.nextafter(0.5, 1)
    # J = 1/2 on (0.1, 0.3] and on (0.7, 0.9]; 0.3 and just above 0.7 are both 0.2 from 0.5 in exact
    # arithmetic, but nextafter(0.7) is farther: 0.3 wins.
    assert youden_threshold([0, 1, 0, 1], [0.1, 0.3, 0.7, 0.9]) == 0.3
    # J = 1/2 on (0.25, 0.375] and on (0.625, 0.75]: 0.375 is 0.125 below 0.5, the nearest point of the
    # upper interval one float more than 0.125 above it.
    assert youden_threshold([0, 1, 0, 1], [0.25, 0.375, 0.625, 0.75]) == 0.375
    # No discrimination (one score for all): J = 0 everywhere; 0.5 lies in (0.3, inf).
    assert youden_threshold([0, 1, 0, 1], [0.3] * 4) == 0.5


def test_youden_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold([1, 1], [0.2, 0.8])


def test_undefined_ratios_are_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        no_positives = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])
        no_predicted = binary_metrics([1, 0, 0], [0.1, 0.2, 0.3])
        empty = binary_metrics([], [])
    for name in ("sensitivity", "precision", "f1", "auc", "balanced_accuracy"):
        assert math.isnan(no_positives[name]), name
    assert no_positives["specificity"] == 1.0 and no_positives["npv"] == 1.0
    assert no_positives["accuracy"] == 1.0
    # Positives exist but none is predicted: precision is 0/0, sensitivity and F1 are 0.
    assert math.isnan(no_predicted["precision"])
    assert no_predicted["sensitivity"] == 0.0 and no_predicted["f1"] == 0.0
    assert empty["n"] == 0 and all(math.isnan(empty[name]) for name in RATE_METRICS)


def test_bootstrap_deterministic_by_seed():
    y, s = sample(100, seed=1)
    a = bootstrap_intervals(y, s, 0.5, n_resamples=500, seed=7)
    b = bootstrap_intervals(y, s, 0.5, n_resamples=500, seed=7)
    c = bootstrap_intervals(y, s, 0.5, n_resamples=500, seed=8)
    assert a == b and a != c
    assert set(a) == set(RATE_METRICS)


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_data():
    y, s = sample(40, seed=2)
    point = binary_metrics(y, s)
    small = bootstrap_intervals(y, s, 0.5, n_resamples=2000, seed=0)
    # Ten copies of the same 40 examples: the same empirical distribution, ten times the data.
    large = bootstrap_intervals(np.tile(y, 10), np.tile(s, 10), 0.5, n_resamples=2000, seed=0)
    assert binary_metrics(np.tile(y, 10), np.tile(s, 10))["auc"] == pytest.approx(point["auc"])
    for name in RATE_METRICS:
        low, high = small[name]
        assert low <= point[name] <= high, name
        assert large[name][0] <= point[name] <= large[name][1], name
        # Widths scale like 1 / sqrt(n): sqrt(10) ~ 3.2 narrower; ask for at least 2.
        assert (large[name][1] - large[name][0]) < (high - low) / 2, name


def test_every_resample_keeps_both_classes():
    y = np.array([0] * 37 + [1] * 3)
    indices = metrics.stratified_resamples(y, 1000, np.random.default_rng(0))
    assert indices.shape == (1000, 40)
    assert (y[indices].sum(axis=1) == 3).all()
    # Draws do vary: not every row is the identity.
    assert len({tuple(row) for row in indices[:, :3].tolist()}) > 10


def test_resample_metrics_match_binary_metrics_on_the_expanded_resample():
    y, s = sample(30, seed=4)
    s = np.round(s, 1)  # ties, to exercise the tie half of the AUC counting
    indices = metrics.stratified_resamples(y, 20, np.random.default_rng(1))
    values = metrics.resample_metrics(y, s, 0.5, indices)
    for row in range(20):
        direct = binary_metrics(y[indices[row]], s[indices[row]], 0.5)
        for name in RATE_METRICS:
            assert close(values[name][row], direct[name]), (row, name)


def test_bootstrap_is_nan_aware():
    # One positive prediction in 40: precision is undefined in resamples that lose it.
    y = np.array([1] * 10 + [0] * 30)
    s = np.array([0.9] + [0.3] * 9 + [0.1] * 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = metrics.bootstrap_values(y, s, 0.5, 500, 0)
        intervals = bootstrap_intervals(y, s, 0.5, n_resamples=500)
        one_class = bootstrap_intervals(np.zeros(10, int), np.linspace(0, 1, 10), 0.5, n_resamples=50)
    undefined = np.isnan(values["precision"])
    assert 0 < undefined.sum() < 500  # about (9/10)**10 = 35% of resamples
    assert intervals["precision"] == (1.0, 1.0)  # whenever precision is defined it is 1
    assert all(math.isnan(v) for v in one_class["sensitivity"] + one_class["auc"])
    assert one_class["specificity"][0] <= one_class["specificity"][1]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_binary_cross_entropy_matches_keras(dtype):
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0], dtype=dtype)
    # Both clipping ends, just inside them, and ordinary values.
    p = np.array([1.0, 1.0, 0.0, 0.0, 1 - 1e-9, 1e-9, 0.3, 0.8], dtype=dtype)
    expected = float(keras.losses.binary_crossentropy(labels, p))
    assert abs(binary_cross_entropy(labels, p) - expected) < 1e-6
    # Two confidently wrong outputs, clipped to about -log(1e-7) = 16 each, dominate the mean.
    assert binary_cross_entropy(labels, p) > 4
    if dtype == "float32":
        # Keras clips float32 at float32(1 - 1e-7) = 1 - 2**-23: clipping in float64 would miss it.
        assert abs(binary_cross_entropy(labels, p.astype("float64")) - expected) > 0.01
    q = np.array([0.9, 0.1, 0.6, 0.45, 0.99, 0.02, 0.3, 0.8], dtype=dtype)
    expected = float(keras.losses.binary_crossentropy(labels, q))
    assert abs(binary_cross_entropy(labels, q) - expected) < 1e-6


def test_summary_is_json_ready_and_states_the_convention():
    labels = np.array([0, 0, 1, 1, 1])
    p = np.array([0.9, 0.2, 0.8, 0.7, 0.6])
    out = summary(p, labels, positive_label=0, n_resamples=200, label_map={"covid": 0, "normal": 1})
    json.dumps(out, allow_nan=False)
    assert out["positive_label"] == 0 and out["positive_class"] == "covid" and out["score"] == "1 - p"
    assert "1 - p" in out["convention"]
    # covid examples: p 0.9 (score 0.1, missed), p 0.2 (score 0.8, found); normal scores 0.2 0.3 0.4.
    assert out["confusion"]["matrix"] == [[3, 0], [1, 1]]
    assert out["metrics"]["sensitivity"] == 0.5 and out["metrics"]["specificity"] == 1.0
    assert out["confusion"]["rows"] == ["true negative (normal)", "true positive (covid)"]
    assert set(out["intervals"]) == set(RATE_METRICS)
    assert all(isinstance(v, float) for pair in out["intervals"].values() for v in pair)
    assert out["binary_cross_entropy"] == pytest.approx(binary_cross_entropy(labels, p))
    # No positive examples: undefined metrics become null, not NaN.
    none = summary([0.2, 0.3], [1, 1], positive_label=0, n_resamples=10)
    json.dumps(none, allow_nan=False)
    assert none["metrics"]["sensitivity"] is None and none["intervals"]["auc"] == [None, None]
    assert none["positive_class"] is None


def sample(n, seed):
    """Positives score higher on average, with overlap: every metric is strictly between 0 and 1."""
    rng = np.random.default_rng(seed)
    y = np.array([1] * (n // 2) + [0] * (n - n // 2))
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
    return y, s


# --- intervals that hold at the edges ------------------------------------------

def test_clopper_pearson_golden():
    # 100 of 100: the lower bound solves p^100 = 0.025, p = 0.025 ** (1 / 100) = 0.96379.
    low, high = clopper_pearson(100, 100)
    assert round(low, 3) == 0.964 and low == pytest.approx(0.025 ** (1 / 100), rel=1e-12) and high == 1.0
    # 49 of 50: (0.894, 0.9995); the upper bound is Beta(0.975; 50, 1) = 0.975 ** (1 / 50).
    low, high = clopper_pearson(49, 50)
    assert round(low, 3) == 0.894 and round(high, 4) == 0.9995
    assert high == pytest.approx(0.975 ** (1 / 50), rel=1e-12)
    # Mirror image at 0, and the empty case.
    assert clopper_pearson(0, 100) == pytest.approx((0.0, 1 - 0.025 ** (1 / 100)), rel=1e-12)
    assert all(math.isnan(v) for v in clopper_pearson(0, 0))
    with pytest.raises(ValueError, match="counts"):
        clopper_pearson(5, 4)


def test_wilson_golden():
    # At k = n the lower bound is n / (n + z^2): 100 / (100 + 1.95996^2) = 0.96300.
    low, high = wilson(100, 100)
    z = 1.959963984540054
    assert round(low, 3) == 0.963 and low == pytest.approx(100 / (100 + z * z), rel=1e-12) and high == 1.0
    # 49 of 50 by the closed form: centre (49 + z^2/2) / (50 + z^2),
    # half-width z sqrt(49 * 1 / 50 + z^2/4) / (50 + z^2).
    centre, half = (49 + z * z / 2) / (50 + z * z), z * math.sqrt(49 / 50 + z * z / 4) / (50 + z * z)
    assert wilson(49, 50) == pytest.approx((centre - half, centre + half), rel=1e-12)
    assert round(wilson(49, 50)[0], 3) == 0.895


def test_edges_do_not_collapse_in_the_summary():
    # 100 of 100 right, 50 positives: the percentile bootstrap gave (1, 1) for all of these.
    y = np.array([1] * 50 + [0] * 50)
    s = np.where(y == 1, 0.9, 0.1)
    out = scores_summary(y, s, 0.5, n_resamples=200)
    assert out["metrics"]["accuracy"] == out["metrics"]["auc"] == 1.0
    assert round(out["intervals"]["accuracy"][0], 3) == 0.964
    assert out["intervals"]["sensitivity"][0] == pytest.approx(0.025 ** (1 / 50), rel=1e-12)  # 0.929
    assert out["interval_methods"]["accuracy"] == "Clopper-Pearson"
    # AUC 1: DeLong's variance is 0, so Newcombe's score interval stands in, and says so.
    assert out["intervals"]["auc"][0] < 0.97 and out["intervals"]["auc"][1] == 1.0
    assert out["interval_methods"]["auc"].startswith("Newcombe")
    assert out["intervals"]["balanced_accuracy"][0] < 1.0
    # 49 of 50 positives found: sensitivity (0.894, 0.9995), as Clopper-Pearson gives.
    s2 = s.copy()
    s2[0] = 0.2
    sens = scores_summary(y, s2, 0.5, n_resamples=200)["intervals"]["sensitivity"]
    assert (round(sens[0], 3), round(sens[1], 4)) == (0.894, 0.9995)


def test_summary_states_every_interval_method():
    y, s = sample(60, seed=3)
    out = summary(s, y, positive_label=1, n_resamples=100)
    assert set(out["interval_methods"]) == set(RATE_METRICS)
    assert out["interval_methods"]["auc"] == "DeLong on the logit scale"
    assert "bootstrap" in out["interval_methods"]["f1"]
    assert out["interval_level"] == 0.95 and out["bootstrap"]["used_for"] == ["f1", "ece"]
    for name in RATE_METRICS:
        low, high = out["intervals"][name]
        assert low <= out["metrics"][name] <= high, name
    # The AUC interval is logit(AUC) -+ 1.96 DeLong standard errors carried to the logit scale, back-transformed.
    auc, se = out["metrics"]["auc"], out["auc_delong_se"]
    half = 1.959963984540054 * se / (auc * (1 - auc))
    expit = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    logit = math.log(auc / (1 - auc))
    assert out["intervals"]["auc"] == pytest.approx([expit(logit - half), expit(logit + half)], rel=1e-12)


# A tiny example worked by hand: positives P1-P3, negatives N1-N2, two score sets.
#   set A: positives 0.8 0.6 0.4, negatives 0.5 0.3
#   set B: positives 0.9 0.2 0.35, negatives 0.6 0.1
YD = [1, 1, 1, 0, 0]
SA = [0.8, 0.6, 0.4, 0.5, 0.3]
SB = [0.9, 0.2, 0.35, 0.6, 0.1]


def test_delong_variance_by_hand():
    # A: positive placements (share of negatives below, ties 1/2) 1, 1, 1/2; negative placements (share
    # of positives above) 2/3, 1. AUC = mean = 5/6. Sample variances: positives (1/36 + 1/36 + 4/36) / 2
    # = 1/12, negatives (1/36 + 1/36) / 1 = 1/18. Var = (1/12) / 3 + (1/18) / 2 = 1/36 + 1/36 = 1/18.
    auc, var = delong(YD, SA)
    assert auc == pytest.approx(5 / 6, rel=1e-12) and var == pytest.approx(1 / 18, rel=1e-12)
    # B: placements 1, 1/2, 1/2 and 1/3, 1; AUC 2/3; Var = (1/12) / 3 + (2/9) / 2 = 1/36 + 4/36 = 5/36.
    auc, var = delong(YD, SB)
    assert auc == pytest.approx(2 / 3, rel=1e-12) and var == pytest.approx(5 / 36, rel=1e-12)
    # Ties count 1/2, as in roc_auc.
    assert delong(Y10, S10)[0] == pytest.approx(AUC10, rel=1e-12)
    # The interval is taken on the logit scale: logit(5/6) = ln 5, and the delta method gives the standard
    # error sqrt(1/18) / (5/6 * 1/6) = 1.2 sqrt(2); back-transformed, ln 5 -+ h with h = 1.95996 * 1.2 sqrt(2)
    # is 5 / (5 + e^h) to 5 / (5 + e^-h) = (0.1523, 0.9929), where the clipped normal interval was (0.371, 1).
    low, high, method = auc_interval(YD, SA)
    h = 1.959963984540054 * 1.2 * math.sqrt(2)
    assert method == "DeLong on the logit scale"
    assert (low, high) == pytest.approx((5 / (5 + math.exp(h)), 5 / (5 + math.exp(-h))), rel=1e-12)
    assert (round(low, 4), round(high, 4)) == (0.1523, 0.9929)


def test_paired_delong_by_hand():
    # Placement differences A - B: positives 0, 1/2, 0 (sample variance 1/12), negatives 1/3, 0
    # (sample variance 1/18). Var(AUC_A - AUC_B) = (1/12) / 3 + (1/18) / 2 = 1/18; the difference
    # 5/6 - 2/3 = 1/6, z = (1/6) / sqrt(1/18) = 1 / sqrt(2) = 0.7071, two-sided p = 0.4795;
    # 95 % interval 1/6 -+ 1.95996 sqrt(1/18) = (-0.2953, 0.6286).
    out = delong_test(YD, SA, SB)
    assert out["auc_a"] == pytest.approx(5 / 6) and out["auc_b"] == pytest.approx(2 / 3)
    assert out["difference"] == pytest.approx(1 / 6, rel=1e-12)
    assert out["se"] == pytest.approx(math.sqrt(1 / 18), rel=1e-12)
    assert out["z"] == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    assert round(out["p"], 4) == 0.4795
    assert (round(out["low"], 4), round(out["high"], 4)) == (-0.2953, 0.6286)
    # Swapping the sets flips the sign and keeps p.
    back = delong_test(YD, SB, SA)
    assert back["difference"] == pytest.approx(-1 / 6) and back["p"] == pytest.approx(out["p"])
    assert out["method"] == metrics.DELONG_TEST
    # The same scores twice: DeLong's variance is 0, so a normal interval would be the point 0 and p 1. The MOVER
    # interval of the two AUCs' score intervals stands in, symmetric here: -+ hypot(A - low, high - A); no p-value.
    same = delong_test(YD, SA, SA)
    a_low, a_high = auc_score_interval(5 / 6, 3, 2)
    assert same["difference"] == 0 and math.isnan(same["p"]) and same["method"] == metrics.DELONG_TEST_FALLBACK
    half = np.hypot(5 / 6 - a_low, a_high - 5 / 6)
    assert (same["low"], same["high"]) == pytest.approx((-half, half), rel=1e-12) and half > 0.3
    # Two perfect rankings: both AUCs 1, so the interval is -+ (1 - the score interval's lower bound at AUC 1).
    perfect = delong_test([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], [0.6, 0.7, 0.3, 0.4])
    bound = 1 - auc_score_interval(1.0, 2, 2)[0]
    assert math.isnan(perfect["p"]) and (perfect["low"], perfect["high"]) == pytest.approx((-bound, bound), rel=1e-12)


def test_paired_delong_is_calibrated_under_the_null():
    # Two score sets with the same AUC on shared images (correlated noise): the test rejects at
    # about its level, 5 % (+- 1.4 % Monte Carlo at 1,000 simulations; 6.5 % with seed 0, DeLong being
    # slightly liberal at 40 + 60 images).
    rng = np.random.default_rng(0)
    rejected = 0
    for _ in range(1000):
        y = np.array([1] * 40 + [0] * 60)
        shared = rng.normal(size=100) + y
        a, b = shared + rng.normal(size=100), shared + rng.normal(size=100)
        rejected += delong_test(y, a, b)["p"] < 0.05
    assert 0.03 <= rejected / 1000 <= 0.07


def test_newcombe_score_interval():
    # AUC 1 with 50 + 50: the lower bound solves (1 - A)^2 = z^2 V(A); checked by substitution.
    low, high = auc_score_interval(1.0, 50, 50)
    z2, extra = 1.959963984540054 ** 2, 49
    v = low * (1 - low) / 2500 * (1 + extra * ((1 - low) / (2 - low) + low / (1 + low)))
    assert high == 1.0 and round(low, 3) == 0.960 and (1 - low) ** 2 == pytest.approx(z2 * v, rel=1e-9)
    # Symmetric: AUC 0 mirrors AUC 1.
    assert auc_score_interval(0.0, 50, 50) == pytest.approx((0.0, 1 - low), abs=1e-9)
    # Fewer images, wider.
    assert auc_score_interval(1.0, 10, 10)[0] < low


# --- calibration ---------------------------------------------------------------

def test_brier_and_ece_by_hand():
    # Scores 0.05 0.15 (bin 0 and 1), 0.95 0.95 (bin 9) with labels 0 1 1 0:
    # Brier = (0.05^2 + 0.85^2 + 0.05^2 + 0.95^2) / 4 = (0.0025 + 0.7225 + 0.0025 + 0.9025) / 4 = 0.4075.
    y, s = [0, 1, 1, 0], [0.05, 0.15, 0.95, 0.95]
    assert brier_score(y, s) == pytest.approx(0.4075, rel=1e-12)
    # Bins: [0, 0.1) one image, share 0, mean 0.05, gap 0.05; [0.1, 0.2) one image, share 1, mean 0.15,
    # gap 0.85; [0.9, 1] two images, share 1/2, mean 0.95, gap 0.45.
    # ECE = (1 * 0.05 + 1 * 0.85 + 2 * 0.45) / 4 = 1.8 / 4 = 0.45.
    assert expected_calibration_error(y, s) == pytest.approx(0.45, rel=1e-12)
    binned = calibration_bins(y, s)
    assert binned["count"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert binned["positive_rate"][9] == 0.5 and math.isnan(binned["positive_rate"][5])
    # 1.0 falls in the last bin, 0.1 in the second (bins are closed on the left).
    assert calibration_bins([1, 0], [1.0, 0.1])["count"].tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    # Perfectly calibrated in every bin: ECE 0.
    assert expected_calibration_error([1, 0, 1, 1], [0.5, 0.5, 1.0, 1.0]) == 0.0


def test_summary_reports_calibration():
    labels = np.array([0, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.95, 0.95])
    out = summary(p, labels, positive_label=1, n_resamples=50)
    assert out["brier"] == pytest.approx(0.4075) and out["ece"] == pytest.approx(0.45)
    assert out["calibration"]["bins"] == 10 and "equal-width" in out["calibration"]["binning"]
    # With positive label 0 the score is 1 - p: the Brier score is the same, squared errors mirror.
    assert summary(p, labels, positive_label=0, n_resamples=50)["brier"] == pytest.approx(0.4075)


def test_recalibration_of_saturated_scores_does_not_fail_the_run():
    # Scores at 0 and 1 that still overlap across the classes: far out on the slope's profile every
    # probability saturates and the information matrix is singular. Scoring a run must not fail on it.
    y = np.array([1, 1, 0, 0, 1, 0])
    s = np.array([1 - 1e-12, 0.3, 1e-12, 0.6, 0.99999, 0.2])
    fitted = metrics.recalibration(y, s)
    assert np.isfinite(fitted["slope"]) and fitted["slope_interval"][0] < fitted["slope"] < fitted["slope_interval"][1]
    assert fitted["slope_reason"] is None and np.isfinite(fitted["intercept"])
