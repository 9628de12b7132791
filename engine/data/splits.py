"""Leak-free splits and subsets.

Images of one patient always land in one split (grouped split) whenever a
patient id is known; ``split_by="source"`` holds one source out as the test
split, because merged sources let a model learn the source instead of the
disease. Every choice is seeded and independent of file-system order.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from engine.config import SPLITS
from engine.errors import UserError
from engine.data.layouts import Candidate


def group_key(c: Candidate) -> str:
    """The leakage unit: the patient when known, else the single file."""
    return f"patient:{c.patient}" if c.patient else f"file:{c.rel}"


def stable_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator keyed by the seed and names, so that one split's draw does
    not shift when another split's content changes."""
    digest = hashlib.sha256("/".join((str(seed),) + names).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def grouped_split(candidates: Sequence[Candidate], fractions: dict[str, float],
                  seed: int) -> list[Candidate]:
    """Assigns splits by whole groups, stratified by each group's majority class.

    Within each class the groups are shuffled and laid end to end; a group goes
    to the split whose share of the line its midpoint falls in, so the image
    counts follow ``fractions`` as closely as whole groups allow.
    """
    groups: dict[str, list[Candidate]] = collections.defaultdict(list)
    for c in candidates:
        groups[group_key(c)].append(c)
    by_class: dict[str, list[str]] = collections.defaultdict(list)
    for key, members in groups.items():
        majority = collections.Counter(m.class_name for m in members).most_common(1)[0][0]
        by_class[majority].append(key)
    names = [s for s in SPLITS if fractions.get(s, 0) > 0]
    bounds = np.cumsum([fractions[s] for s in names])
    bounds /= bounds[-1]
    assigned = []
    for class_name in sorted(by_class):
        keys = sorted(by_class[class_name])
        stable_rng(seed, "split", class_name).shuffle(keys)
        total = sum(len(groups[k]) for k in keys)
        position = 0
        for key in keys:
            size = len(groups[key])
            mid = (position + size / 2) / total
            split = names[min(int(np.searchsorted(bounds, mid, side="right")), len(names) - 1)]
            assigned += [replace(m, split=split) for m in groups[key]]
            position += size
    return assigned


def assign_splits(candidates: list[Candidate], fractions: tuple[float, float, float], seed: int,
                  split_by: str = "patient", test_source: str | None = None,
                  resplit: bool = False) -> tuple[list[Candidate], list[str]]:
    """Gives every candidate a split.

    Splits the source defines are kept (unless ``resplit``); a missing val or
    test split is carved out of train by patient. Returns the candidates and
    notes for the summary.
    """
    notes = []
    frac = dict(zip(SPLITS, fractions))
    if split_by == "source":
        sources = collections.Counter(c.source for c in candidates)
        if None in sources:
            raise UserError("--split-by source needs a source per image (list file column 4 or "
                            "--source-pattern); some images have none")
        if test_source not in sources:
            listing = ", ".join(f"{s} ({n})" for s, n in sorted(sources.items()))
            raise UserError(f"--split-by source needs --test-source, one of: {listing}")
        test = [replace(c, split="test") for c in candidates if c.source == test_source]
        rest = [c for c in candidates if c.source != test_source]
        rest_frac = {"train": frac["train"], "val": frac["val"]}
        notes.append(f"leave-one-source-out: test = source {test_source}")
        return grouped_split(rest, rest_frac, seed) + test, notes
    given = {c.split for c in candidates}
    if resplit or given == {None}:
        if given != {None}:
            notes.append("the folder's own splits were pooled and split again by patient")
        return grouped_split([replace(c, split=None) for c in candidates], frac, seed), notes
    if None in given:
        raise UserError("some images have a split and others none; use --resplit to split them all")
    if "train" not in given:
        raise UserError(f"no train split found (found: {', '.join(sorted(given))})")
    missing = [s for s in SPLITS if s not in given]
    if not missing:
        return candidates, notes
    # Carve the missing splits out of train, keeping their intended share.
    train = [c for c in candidates if c.split == "train"]
    carve = {"train": frac["train"], **{s: frac[s] for s in missing}}
    notes.append(f"no {' or '.join(missing)} split in the folder: carved out of train by patient")
    kept = [c for c in candidates if c.split != "train"]
    return kept + grouped_split(train, carve, seed), notes


def stratified_counts(class_sizes: dict[str, int], total: int) -> dict[str, int]:
    """Splits ``total`` over classes in proportion to their sizes (largest remainder)."""
    size = sum(class_sizes.values())
    exact = {k: total * v / size for k, v in class_sizes.items()}
    counts = {k: int(np.floor(x)) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: (counts[k] - exact[k], k))[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def draw_order(candidates: list[Candidate], subset: tuple[int, int, int] | None, seed: int
               ) -> dict[tuple[str, str], tuple[int, list[Candidate]]]:
    """The seeded order in which each (split, class) is drawn, and how many it needs.

    With no subset every candidate is needed. With a subset the first ``need``
    of each list are used and the rest are reserves that replace images that
    turn out unreadable.
    """
    cells: dict[tuple[str, str], list[Candidate]] = collections.defaultdict(list)
    for c in candidates:
        cells[(c.split, c.class_name)].append(c)
    order = {}
    for (split, class_name), members in sorted(cells.items()):
        members = sorted(members, key=lambda c: c.rel)
        stable_rng(seed, "subset", split, class_name).shuffle(members)
        order[(split, class_name)] = (len(members), members)
    if subset is None:
        return order
    wanted = dict(zip(SPLITS, subset))
    for split in SPLITS:
        sizes = {k[1]: v[0] for k, v in order.items() if k[0] == split}
        have = sum(sizes.values())
        if wanted[split] > have:
            raise UserError(f"--subset asks for {wanted[split]} {split} images but the {split} "
                            f"split has {have}")
        if not sizes:
            continue
        for class_name, need in stratified_counts(sizes, wanted[split]).items():
            order[(split, class_name)] = (need, order[(split, class_name)][1])
    return order


def patient_overlap(candidates: list[Candidate]) -> dict[str, list[str]]:
    """Patients that appear in more than one split: patient -> splits."""
    splits: dict[str, set[str]] = collections.defaultdict(set)
    for c in candidates:
        if c.patient:
            splits[c.patient].add(c.split)
    return {p: sorted(s, key=SPLITS.index) for p, s in sorted(splits.items()) if len(s) > 1}
