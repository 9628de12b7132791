"""Positive-class metrics: hand-computed values, label convention, Youden, bootstrap, loss."""

import json
import math
import warnings

import keras
import numpy as np
import pytest

from engine.training import metrics
from engine.training.metrics import (RATE_METRICS, binary_cross_entropy, binary_metrics, bootstrap_intervals,
                            confusion, positive_label_of, positive_scores, roc_auc, summary,
                            youden_threshold)

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
    # J = sens + spec - 1 at each distinct score of Y10/S10 (4 positives, 6 negatives):
    #   t:  0.1  0.2  0.3  0.4   0.5  0.6   0.7  0.8  0.9
    #   tp:  4    4    4    3     3    3     2    2    1
    #   tn:  0    1    2    2     3    4     5    6    6
    #   J:   0   1/6  1/3  1/12  1/4  5/12  1/3  1/2  1/4   -> best 0.8
    assert youden_threshold(Y10, S10) == 0.8


def test_youden_ties():
    # Scores (label): 0.1 (0), 0.25 (1), 0.5 (0), 0.75 (1). J at 0.1, 0.25, 0.5, 0.75 is 0, 1/2, 0, 1/2:
    # 0.25 and 0.75 tie and are equally far from 0.5, so the larger one wins.
    assert youden_threshold([0, 1, 0, 1], [0.1, 0.25, 0.5, 0.75]) == 0.75
    # Scores 0.1 (0), 0.3 (1), 0.5 (0), 0.9 (1): J is 1/2 at 0.3 and 0.9; 0.3 is closer to 0.5.
    assert youden_threshold([0, 1, 0, 1], [0.1, 0.3, 0.5, 0.9]) == 0.3
    # Perfect separation: every threshold in (0.2, 0.7] gives J = 1; 0.6 is the closest score to 0.5.
    assert youden_threshold([0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.7, 0.9]) == 0.6


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
    indices = metrics._stratified_resamples(y, 1000, np.random.default_rng(0))
    assert indices.shape == (1000, 40)
    assert (y[indices].sum(axis=1) == 3).all()
    # Draws do vary: not every row is the identity.
    assert len({tuple(row) for row in indices[:, :3].tolist()}) > 10


def test_resample_metrics_match_binary_metrics_on_the_expanded_resample():
    y, s = sample(30, seed=4)
    s = np.round(s, 1)  # ties, to exercise the tie half of the AUC counting
    indices = metrics._stratified_resamples(y, 20, np.random.default_rng(1))
    values = metrics._resample_metrics(y, s, 0.5, indices)
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
        values = metrics._bootstrap_values(y, s, 0.5, 500, 0)
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
