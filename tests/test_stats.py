"""The study's statistics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.study import stats


def test_tail_mean():
    assert stats.tail_mean([0.5, 0.4, 0.3, 0.2]) == pytest.approx(0.3)  # the last 3
    assert stats.tail_mean([0.5, 0.4]) == pytest.approx(0.45)  # all, when fewer
    assert stats.tail_mean([0.5, 0.4, None]) is None and stats.tail_mean([0.1, math.inf]) is None
    assert stats.tail_mean([]) is None


def test_paired_t_by_hand():
    best, other = {0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 2.9, 2: 3.4, 7: 9.0}  # seed 7 is not shared
    c = stats.paired(best, other)
    # differences 0.5, 0.9, 0.4: mean 0.6, sd sqrt(0.07), se sqrt(0.07 / 3), df 2
    se = math.sqrt(0.07 / 3)
    t = 0.6 / se
    # Student's t with 2 df in closed form: two-sided p = 1 - t / sqrt(t^2 + 2);
    # the 0.975 quantile is (2q - 1) / sqrt(2 q (1 - q)) at q = 0.975.
    quantile = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    assert c.difference == pytest.approx(0.6)
    assert c.p == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    assert (c.low, c.high) == pytest.approx((0.6 - quantile * se, 0.6 + quantile * se), rel=1e-9)
    assert c.method == "paired t over 3 shared seeds"
    assert stats.paired({0: 1.0, 1: 2.0}, {1: 2.5, 2: 3.0}) is None  # one shared seed


def test_welch_t_by_hand():
    c = stats.welch([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    # means 2 and 4; variances 1 and 4 -> se^2 = 1/3 + 4/3 = 5/3;
    # df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = 50/17
    from scipy.stats import t as student
    half = student.ppf(0.975, 50 / 17) * math.sqrt(5 / 3)
    assert c.difference == 2.0 and (c.low, c.high) == pytest.approx((2 - half, 2 + half))
    assert c.p == pytest.approx(2 * student.sf(2 / math.sqrt(5 / 3), 50 / 17))
    assert stats.welch([1.0], [2.0, 3.0]) is None


def test_compare_pairs_when_it_can():
    assert stats.compare({0: 1.0, 1: 2.0}, {0: 1.5, 1: 2.7}).method == "paired t over 2 shared seeds"
    assert stats.compare({0: 1.0, 1: 2.0}, {5: 1.5, 6: 2.7}).method == "Welch t"
    assert stats.compare({0: 1.0}, {0: 1.5}) is None
    same = stats.compare({0: 1.0, 1: 2.0}, {0: 1.5, 1: 2.5})  # every difference 0.5: no spread
    assert (same.difference, same.low, same.high, same.p) == (0.5, 0.5, 0.5, 0.0)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert stats.holm_array(np.array([0.01, 0.04, 0.03])).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm_array(np.array([0.5, 0.9])).tolist() == pytest.approx([1.0, 1.0])
    assert stats.holm_array(np.array([])).tolist() == []
    # Each row is a family; NaN (no test) stays NaN and is not counted: the first row is a family of two.
    np.testing.assert_allclose(stats.holm_array(np.array([[0.01, np.nan, 0.04], [0.02, 0.5, 0.9]])),
                               [[0.02, np.nan, 0.04], [0.06, 1.0, 1.0]])


def test_one_sided_p_by_hand():
    # differences 0.5, 0.9, 0.4: mean 0.6, se sqrt(0.07 / 3), df 2; Student's t with 2 df in closed
    # form: the upper tail beyond t is (1 - t / sqrt(t^2 + 2)) / 2.
    se = math.sqrt(0.07 / 3)
    t = 0.6 / se
    p = stats.one_sided(np.array([0.6, -0.6]), np.array([se, se]), np.array([2.0, 2.0]))
    assert p == pytest.approx([(1 - t / math.sqrt(t * t + 2)) / 2, (1 + t / math.sqrt(t * t + 2)) / 2], rel=1e-9)
    # No spread: a positive difference is certain, a zero or negative one is not; no test stays NaN.
    p = stats.one_sided(np.array([0.5, 0.0, -0.5, np.nan]), np.zeros(4), np.ones(4))
    assert p[:3].tolist() == [0.0, 1.0, 1.0] and np.isnan(p[3])


def test_order_pairs():
    assert stats.best_pairs([0], 3) == [(0, 1), (0, 2)]
    assert stats.best_pairs([1, 2], 4) == [(1, 0), (1, 3), (2, 0), (2, 3)]
    assert stats.rise_pairs(3) == ([(0, 1), (1, 2)], [(0, 1), (0, 2), (1, 2)])


def test_order_test_by_hand():
    # 3 settings x 3 seeds; the differences 1 - 0 are 0.5, 0.9, 0.4 (the pair above) and 2 - 1 are
    # -0.2, -0.2, -0.2 + 0.3 = 0.1 (mean -0.1, sd sqrt 0.03).
    values = np.array([[1.0, 2.0, 3.0], [1.5, 2.9, 3.4], [1.3, 2.7, 3.5]])
    steps, reverse = stats.rise_pairs(3)
    found = stats.order_test(values, steps, reverse)
    se = math.sqrt(0.07 / 3)
    t_up = 0.6 / se
    assert found.p_above[0] == pytest.approx((1 - t_up / math.sqrt(t_up ** 2 + 2)) / 2, rel=1e-9)
    t_down = 0.1 / math.sqrt(0.03 / 3)  # = 1: the step 1 -> 2 goes down by one se
    assert found.p_above[1] == pytest.approx((1 + t_down / math.sqrt(t_down ** 2 + 2)) / 2, rel=1e-9)
    # Not every step up, no reverse order significant after Holm: cannot tell.
    assert found.verdict == stats.CANNOT_TELL
    # Reverse order, Holm over the 3 pairs: 2 below 1 has one-sided p P(T_2 > 1) = (1 - 1 / sqrt 3) / 2,
    # times 3; the two pairs that went up have p near 1, capped at 1.
    assert found.p_below_holm.tolist() == pytest.approx([1.0, 1.0, 3 * (1 - 1 / math.sqrt(3)) / 2], rel=1e-9)
    # Leading axes: each sweep its own verdict; a step up in every seed, and the reverse order.
    rising = np.array([[0.0, 0.0, 0.0], [1.0, 1.1, 0.9], [2.0, 2.2, 2.1]])
    verdicts = stats.order_test(np.stack([rising, rising[::-1], values]), steps, reverse).verdict
    assert verdicts.tolist() == [stats.AGREE, stats.DISAGREE, stats.CANNOT_TELL]


def test_difference_correlation():
    values = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 5.0], [2.0, 2.0, 5.0, 6.0]])
    # differences 1 - 0: 1, 2, 3, 5; 2 - 1: 1, 0, 2, 1
    expected = np.corrcoef([1.0, 2.0, 3.0, 5.0], [1.0, 0.0, 2.0, 1.0])[0, 1]
    assert stats.difference_correlation(values, [(0, 1), (1, 2)])[0, 1] == pytest.approx(expected)
    assert stats.difference_correlation(values[:, :2], [(0, 1), (1, 2)]).tolist() == [[1, 0], [0, 1]]  # 2 units
