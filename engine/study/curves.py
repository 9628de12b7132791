"""What a run's loss and accuracy curves show: the properties the paper's
descriptive claims name ("accuracy near 1", "loss mostly below 0.2", "loss
spikes", ...), each a rule on one run's history (``PROPERTIES``; mostly = in
at least ``MOSTLY`` of the epochs, a spike as ``spikes`` finds it).

A run shows a claim when it shows all of the claim's properties at once
(``run_shows``; a diverged run shows the spike properties, ``ERRATIC``, and
none of the others), and a setting shows it when more than half of its runs
do (``tally``). The rules' words are printed in the report by
``engine.study.claims`` (``RULES``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MOSTLY, SPIKE_RISE, NEAR_ONE, HIGH, SPIKE_TO = 0.5, 0.2, 0.95, 0.9, 0.7
# A rise of 7 typical epoch-to-epoch changes. Both loss curves of a run are
# checked, so a run of flat noise (Gaussian about a constant, the two curves
# independent) shows a spike by chance in SPIKE_FALSE[epochs] of runs: 3.6 %
# at 20 epochs, 1.4 % at 5 (10^6 simulated runs each; tests/test_claim_rules.py
# re-simulates them). That is the most: it holds whenever the noise is large
# enough that the 0.2 floor does not bind (SD 0.1 and up at 20 epochs);
# quieter curves spike less (1.9 % of runs at SD 0.05). A factor of 6 gave
# 9.4 % of runs at 20 epochs. A jump far above the run's own noise still is a
# spike.
SPIKE_K = 7
SPIKE_FALSE = {20: 0.036, 5: 0.014}
# Below 5 epochs (4 changes) the run's typical change cannot be told from one spike.
SPIKE_EPOCHS = 5
# The properties a diverged run shows: a loss that ran off to infinity is the
# extreme of an erratic, spiking loss, and is none of a loss below a bound or
# an accuracy near 1 or high.
ERRATIC = ("loss spikes", "loss spikes to ~0.8-1.0")


def series(history: list[dict], key: str) -> list[float]:
    return [h[key] for h in history if h.get(key) is not None and math.isfinite(h[key])]


def share(values: list[float], test) -> float:
    """The fraction of the epochs whose value passes ``test`` (0 without epochs)."""
    return sum(1 for v in values if test(v)) / len(values) if values else 0.0


def spike_threshold(losses: list[float]) -> float:
    """How far above its running minimum a loss must rise to be a spike: more
    than SPIKE_RISE and than SPIKE_K times the run's typical epoch-to-epoch
    change (the median absolute change: one spike moves it little)."""
    changes = np.abs(np.diff(losses))
    return max(SPIKE_RISE, SPIKE_K * float(np.median(changes))) if len(changes) else SPIKE_RISE


def spikes(losses: list[float]) -> list[tuple[float, float]]:
    """(loss, rise above the lowest loss before it) of every spike epoch."""
    threshold = spike_threshold(losses)
    lowest = np.minimum.accumulate(losses)
    return [(loss, loss - lowest[i - 1]) for i, loss in enumerate(losses)
            if i and loss - lowest[i - 1] > threshold]


@dataclass(frozen=True)
class Shown:
    """Whether a run shows a property (None: it cannot tell), and the numbers that says so."""

    held: bool | None
    numbers: str


def mostly(history: list[dict], keys: tuple[str, ...], test, what: str) -> Shown:
    shares = [share(series(history, key), test) for key in keys]
    return Shown(all(s >= MOSTLY for s in shares), f"{what} in {'/'.join(f'{s:.0%}' for s in shares)} of epochs")


def spiking(history: list[dict], reaching: float = -math.inf) -> Shown:
    """A spike in the training or the validation loss (reaching at least ``reaching``)."""
    curves = [series(history, key) for key in LOSSES]
    if any(len(c) < SPIKE_EPOCHS for c in curves):
        return Shown(None, f"fewer than {SPIKE_EPOCHS} epochs")
    found = [s for c in curves for s in spikes(c) if s[0] >= reaching]
    threshold = "/".join(f"{spike_threshold(c):.2f}" for c in curves)
    if not found:
        return Shown(False, f"no spike{f' to {reaching:g}' if reaching > 0 else ''} (rise needed {threshold})")
    loss, rise = max(found, key=lambda s: s[1])
    return Shown(True, f"largest spike +{rise:.2f} to {loss:.2f} (rise needed {threshold})")


LOSSES, ACCURACIES = ("loss", "val_loss"), ("accuracy", "val_accuracy")
PROPERTIES = {
    "accuracy near 1": lambda h: mostly(h, ACCURACIES, lambda v: v >= NEAR_ONE, f"acc >= {NEAR_ONE} (train/val)"),
    "loss mostly below 0.2": lambda h: mostly(h, LOSSES, lambda v: v < 0.2, "loss < 0.2 (train/val)"),
    "accuracy high": lambda h: mostly(h, ACCURACIES, lambda v: v >= HIGH, f"acc >= {HIGH} (train/val)"),
    "loss spikes to ~0.8-1.0": lambda h: spiking(h, SPIKE_TO),
    "loss mostly 0.2-0.3": lambda h: mostly(h, LOSSES, lambda v: 0.2 <= v <= 0.3, "loss in 0.2-0.3 (train/val)"),
    "loss spikes": lambda h: spiking(h),
}


def run_shows(history: list[dict] | None, properties: tuple[str, ...]) -> Shown:
    """Whether one run shows all ``properties`` at once. A diverged run (None)
    shows the spike properties (``ERRATIC``) and none of the others."""
    if history is None:
        against = [name for name in properties if name not in ERRATIC]
        return Shown(not against, "diverged" + (f" (none of: {', '.join(against)})" if against else
                                                " (counts as a spike)"))
    found = [PROPERTIES[name](history) for name in properties]
    held = False if any(f.held is False for f in found) else None if any(f.held is None for f in found) else True
    return Shown(held, "; ".join(f.numbers for f in found))


@dataclass(frozen=True)
class Tally:
    """How many of a setting's ``runs`` show a claim (``yes``), do not (``no``) or
    cannot tell (``unknown``: a spike on too few epochs, the curves of the
    fewest being ``epochs`` long), and the numbers per run."""

    yes: int
    no: int
    unknown: int
    runs: int
    epochs: int
    numbers: str

    @property
    def held(self) -> bool | None:
        """More than half of the runs show it; not, when more than half do not."""
        return True if 2 * self.yes > self.runs else False if 2 * self.no > self.runs else None

    @property
    def text(self) -> str:
        return f"{self.yes} of {self.runs} run{'s' if self.runs != 1 else ''} show all ({self.numbers})"


def tally(runs: list[list[dict] | None], properties: tuple[str, ...]) -> Tally:
    found = [run_shows(h, properties) for h in runs]
    unsure = [h for h, f in zip(runs, found) if f.held is None and h is not None]
    epochs = min((len(series(h, key)) for h in unsure for key in LOSSES), default=0)
    return Tally(sum(f.held is True for f in found), sum(f.held is False for f in found), len(unsure), len(runs),
                 epochs, "; ".join(f"run {i + 1}: {f.numbers}" for i, f in enumerate(found)))


def setting_shows(runs: list[list[dict] | None], properties: tuple[str, ...]) -> tuple[bool | None, str]:
    """Whether a setting shows the claim (more than half of its runs show all its
    properties; not, when more than half do not), and the numbers per run."""
    found = tally(runs, properties)
    return found.held, found.text
