"""The paper's two axes in a sweep's rows, and the settings a claim names.

``family`` gives the rows one axis of the paper runs along (the lr axis at
one batch size, the batch axis at one learning rate); ``value_of``, ``pick``
and the words ``label``, ``short``, ``listed`` (a learning rate as the paper
writes it: ``compact``) a setting on it. ``named`` gives the settings a claim
is checked at: a batch sweep with none of the paper's batch sizes (the quick
preset's 8, 16, 32) checks the batch claims by order: the paper's i-th
smallest batch size stands for the sweep's i-th smallest, and the claim as
shown says so (``Named.shown``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.config import SweepConfig
from engine.presets import PAPER_BATCHES

def compact(value: float) -> str:
    """A learning rate as the paper writes it: 1e-4, not 0.0001 or 1e-04."""
    if value >= 0.1:
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def sweep_lr(row: dict) -> float:
    """The learning rate the sweep lists for a row's setting (before --lr-scaling)."""
    return row.get("sweep_lr", row["lr"])


def family(sweep: SweepConfig, rows: list[dict], axis: str) -> list[dict]:
    """The rows one axis of the paper runs along: the lr axis at one batch size
    (5, the paper's, where the sweep has it), the batch axis at one of the
    sweep's learning rates (1e-4 where it has it; under --lr-scaling each batch
    size trains at that rate scaled, and the evidence says so)."""
    if axis == "lr" and sweep.axis not in ("lr", "grid") or axis == "batch" and sweep.axis not in ("batch", "grid"):
        return []
    key = (lambda r: r["batch_size"]) if axis == "lr" else sweep_lr
    wanted = 5 if axis == "lr" else 1e-4
    values = sorted({key(r) for r in rows})
    at = next((v for v in values if math.isclose(v, wanted)), values[0] if values else None)
    return sorted((r for r in rows if math.isclose(key(r), at)), key=lambda r: value_of(r, axis))


def value_of(row: dict, axis: str) -> float:
    return sweep_lr(row) if axis == "lr" else row["batch_size"]


def pick(rows: list[dict], axis: str, value: float) -> dict | None:
    return next((r for r in rows if math.isclose(value_of(r, axis), value)), None)


def label(axis: str, value: float) -> str:
    return f"lr {value:g}" if axis == "lr" else f"batch {value:g}"

# --- the settings a claim names -------------------------------------------------

ORDINALS = ("smallest", "2nd smallest", "3rd smallest")


def ranks_text(ranks: list[int]) -> str:
    """"smallest", "2nd and 3rd smallest": the sweep's batch sizes of these ranks (0: the smallest)."""
    return " and ".join(ORDINALS[k] for k in ranks).replace(" smallest and ", " and ")


def value_text(axis: str, value: float) -> str:
    return compact(value) if axis == "lr" else f"{value:g}"


def short(axis: str, value: float) -> str:
    """A setting in a reason: "lr 1e-4", "batch 8"."""
    return f"{axis} {value_text(axis, value)}"


def listed(axis: str, values) -> str:
    """Settings of one axis in a reason: "batch 16 and 32", "lr 1e-2, 1e-3 and 1e-6"."""
    words = [value_text(axis, v) for v in values]
    return f"{axis} " + (" and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1])


@dataclass(frozen=True)
class Named:
    """The settings a claim names: the paper's ``values`` and, in the same
    order, the sweep's value each is checked at (None: absent). ``by_order``:
    the sweep's batch family has none of the paper's batch sizes, so the
    paper's i-th smallest stands for the sweep's i-th smallest."""

    axis: str
    values: tuple
    here: tuple
    by_order: bool

    @property
    def present(self) -> list[float]:
        return [h for h in self.here if h is not None]

    @property
    def gone(self) -> list[float]:
        """The paper's values the sweep has nothing for."""
        return [v for v, h in zip(self.values, self.here) if h is None]

    def lacks(self) -> str:
        """What the sweep lacks, for a reason ("" when nothing)."""
        if not self.gone:
            return ""
        if not self.by_order:
            return f"the sweep has no {self.axis} " + ", ".join(value_text(self.axis, v) for v in self.gone)
        ranks = [PAPER_BATCHES.index(v) for v in self.gone]
        return (f"the sweep has no {ranks_text(ranks).replace(' and ', ' or ')} batch size (the paper's "
                f"{listed('batch', self.gone)})")

    def absent(self) -> str:
        """What the sweep lacks, for the evidence ("" when nothing)."""
        if not self.gone:
            return ""
        if not self.by_order:
            return f"setting absent: the sweep has no {', '.join(label(self.axis, v) for v in self.gone)}"
        return f"setting absent: {self.lacks().removeprefix('the sweep has ')}, by order"

    def shown(self, text: str) -> str:
        """The claim as checked: the paper's words, or its batch sizes replaced by
        the sweep's of the same rank, saying so."""
        if not self.by_order or not self.present:
            return text
        subject = listed("batch", self.values)
        ranks = [PAPER_BATCHES.index(v) for v, h in zip(self.values, self.here) if h is not None]
        plural = "es" if len(self.present) > 1 else ""
        sizes = ", ".join(f"{h:g}" for h in self.present)
        return (f"{ranks_text(ranks)} batch{plural} ({sizes}){text.removeprefix(subject)} — the paper's {subject}, "
                f"checked by order")


def named(members: list[dict], axis: str, values: tuple) -> Named:
    """The settings of ``members`` a claim naming ``values`` is checked at: the
    same values, except on the batch axis of a sweep with none of the paper's
    batch sizes, where they map by rank (the paper's i-th smallest to the
    sweep's i-th smallest; a rank the sweep lacks is absent). The lr claims
    are not mapped: what they say is about a rate's size (1e-2 erratic, 1e-6
    slow), not about its rank among the sweep's."""
    values = tuple(values)
    here = tuple(v if pick(members, axis, v) else None for v in values)
    if axis != "batch" or any(pick(members, axis, b) for b in PAPER_BATCHES):
        return Named(axis, values, here, False)
    sizes = sorted({r["batch_size"] for r in members})
    ranks = [PAPER_BATCHES.index(v) for v in values]
    return Named(axis, values, tuple(sizes[k] if k < len(sizes) else None for k in ranks), True)
