"""The study's statistics against hand-computed values."""

from __future__ import annotations

import math

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
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []
