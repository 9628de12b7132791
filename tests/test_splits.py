"""Grouped, stratified, seeded splits and subsets."""

import collections

import pytest

from engine.errors import UserError
from engine.data.layouts import Candidate
from engine.data.splits import assign_splits, draw_order, grouped_split, patient_overlap, stratified_counts


def cands(n_patients=60, per_patient=3, sources=("a", "b", "c"), split=None):
    out = []
    for p in range(n_patients):
        cls = "covid" if p % 3 == 0 else "normal"
        for k in range(per_patient):
            out.append(Candidate(path=None, rel=f"{cls}/p{p}-{k}.png", class_name=cls, split=split,
                                 patient=f"p{p}", source=sources[p % len(sources)]))
    return out


def counts(candidates):
    return collections.Counter((c.split, c.class_name) for c in candidates)


def test_grouped_split_keeps_patients_together_and_follows_fractions():
    out = grouped_split(cands(), {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    assert not patient_overlap(out)
    per_split = collections.Counter(c.split for c in out)
    assert sum(per_split.values()) == 180
    # 60 covid images (20 patients) and 120 normal (40 patients) in whole patients of 3.
    assert counts(out)[("train", "covid")] == 48 and counts(out)[("train", "normal")] == 96
    assert counts(out)[("val", "covid")] == 6 and counts(out)[("test", "covid")] == 6


def test_grouped_split_seeded():
    a = grouped_split(cands(), {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    b = grouped_split(list(reversed(cands())), {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    c = grouped_split(cands(), {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    key = lambda xs: sorted((x.rel, x.split) for x in xs)  # noqa: E731
    assert key(a) == key(b)  # input order does not matter
    assert key(a) != key(c)


def test_images_without_patient_are_their_own_group():
    items = [Candidate(None, f"x{i}.png", "covid" if i % 2 else "normal") for i in range(100)]
    out = grouped_split(items, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    assert counts(out) == {("train", "covid"): 40, ("train", "normal"): 40, ("val", "covid"): 5,
                           ("val", "normal"): 5, ("test", "covid"): 5, ("test", "normal"): 5}


def test_split_by_source_leaves_one_source_out():
    out, notes = assign_splits(cands(), (0.8, 0.1, 0.1), 0, split_by="source", test_source="b")
    assert {c.source for c in out if c.split == "test"} == {"b"}
    assert "b" not in {c.source for c in out if c.split != "test"}
    assert not patient_overlap(out)
    with pytest.raises(UserError, match=r"needs --test-source, one of: a \(60\), b \(60\), c \(60\)"):
        assign_splits(cands(), (0.8, 0.1, 0.1), 0, split_by="source")


def test_given_splits_kept_and_missing_val_carved_from_train():
    given = [Candidate(None, f"t{i}", "covid" if i % 2 else "normal", "train", f"p{i}") for i in range(40)]
    given += [Candidate(None, f"s{i}", "covid" if i % 2 else "normal", "test", f"q{i}") for i in range(10)]
    out, notes = assign_splits(given, (0.8, 0.1, 0.1), 0)
    per = collections.Counter(c.split for c in out)
    assert per == {"train": 36, "val": 4, "test": 10}
    assert "carved out of train" in notes[0]


def test_missing_train_split():
    given = [Candidate(None, f"s{i}", "covid" if i % 2 else "normal", "test") for i in range(4)]
    with pytest.raises(UserError, match="no train split found"):
        assign_splits(given, (0.8, 0.1, 0.1), 0)


def test_resplit_pools_and_regroups():
    leaky = [Candidate(None, f"t{i}", "covid" if i % 2 else "normal", "train" if i % 4 else "test",
                       f"p{i // 4}") for i in range(80)]
    assert patient_overlap(leaky)
    out, _ = assign_splits(leaky, (0.8, 0.1, 0.1), 0, resplit=True)
    assert not patient_overlap(out)


def test_stratified_counts_exact():
    assert stratified_counts({"covid": 300, "normal": 200}, 100) == {"covid": 60, "normal": 40}
    assert stratified_counts({"covid": 1, "normal": 2}, 2) == {"covid": 1, "normal": 1}
    assert stratified_counts({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}
    assert stratified_counts({"covid": 250, "normal": 250}, 100) == {"covid": 50, "normal": 50}


def test_draw_order_subset_and_reserves():
    out = grouped_split(cands(90), {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    order = draw_order(out, (30, 6, 6), seed=0)
    assert order[("train", "covid")][0] == 10 and order[("train", "normal")][0] == 20
    assert len(order[("train", "covid")][1]) == 72  # all of them, the rest as reserves
    again = draw_order(list(reversed(out)), (30, 6, 6), seed=0)
    assert [c.rel for c in again[("val", "normal")][1]] == [c.rel for c in order[("val", "normal")][1]]


def test_subset_larger_than_split():
    out = grouped_split(cands(30), {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    with pytest.raises(UserError, match="--subset asks for 500 train images but the train split has 72"):
        draw_order(out, (500, 1, 1), seed=0)
