"""The published study as data: its setup, the reference every sweep's
deviations are listed against, and its claims, checked on a sweep's runs.

The claims' words are defined here, once (``DEFINITIONS`` is printed in the
report): "mostly" means in at least half of the epochs; a claim about "the
loss" is about the training and the validation loss, as the paper's plots
show both; a spike is an epoch whose loss rises more than 0.2 above its
running minimum (the lowest loss of the epochs before it); "best" is rank 1
by the report's ranking statistic. A setting shows a property when at least
half of its finished runs do. A comparative claim ("best", "larger ...") is
"cannot tell" with fewer than 2 finished runs per setting or without the
settings it compares; a claim about settings the sweep does not have is left
out.
"""

from __future__ import annotations

import math

from engine.config import SweepConfig

PAPER = {
    "model": "InceptionV3", "weights": "imagenet", "optimizer": "adam", "schedule": "constant", "epochs": 20,
    "image_size": 299, "resize": "nearest", "augment": "paper", "precision": "float32", "xla": "off",
    "bn_momentum": 0.99, "counts": {"train": 500, "val": 100, "test": 100}, "select": "last",
    "device": "one NVIDIA GPU (TensorFlow 1.12, CUDA 9)", "repeats": 1,
}
MOSTLY, SPIKE_RISE = 0.5, 0.2
NEAR_ONE, HIGH, SPIKE_TO = 0.95, 0.9, 0.7
DEFINITIONS = (f"mostly = in at least {MOSTLY:.0%} of the epochs; the loss = the training and the validation "
               f"loss; a spike = an epoch whose loss is more than {SPIKE_RISE} above its running minimum; "
               f"accuracy near 1 = at least {NEAR_ONE}, high = at least {HIGH} (train and val); spikes to "
               f"~0.8-1.0 = a spike reaching at least {SPIKE_TO}; best = rank 1 by the ranking statistic; a "
               f"setting shows a property when at least half of its finished runs do")


# --- deviations -------------------------------------------------------------

def deviations(sweep: SweepConfig, manifest: dict, choice: dict, machine: dict) -> list[dict]:
    """Every way this sweep's setup differs from the paper's: ``{what, paper, here}``."""
    base, model = sweep.base, sweep.base.model
    out = []

    def differs(what: str, paper, here) -> None:
        if paper != here:
            out.append({"what": what, "paper": str(paper), "here": str(here)})

    differs("model", PAPER["model"], model.name)
    weights = {"imagenet": "imagenet", "none": "none (trained from scratch)"}.get(model.weights,
                                                                                 f"file {model.weights}")
    differs("weights", PAPER["weights"], weights)
    differs("optimizer", PAPER["optimizer"], ", ".join(sweep.optimizers))
    differs("schedule", PAPER["schedule"], base.schedule + (f", {base.warmup_epochs:g} warm-up epochs"
                                                            if base.warmup_epochs else ""))
    differs("epochs", PAPER["epochs"], base.epochs if sweep.budget == "epochs" else
            f"{base.epochs} at the smallest batch, more at larger ones (--budget steps)")
    differs("learning-rate scaling", "none", sweep.lr_scaling)
    differs("image size", PAPER["image_size"], manifest["image_size"][0])
    differs("resize", PAPER["resize"], manifest["resize"])
    counts = {s: manifest["splits"].get(s, {}).get("count", 0) for s in ("train", "val", "test")}
    differs("images (train/val/test)", "/".join(map(str, PAPER["counts"].values())),
            "/".join(map(str, counts.values())))
    differs("augmentation", PAPER["augment"], base.augment)
    differs("precision", PAPER["precision"], choice.get("precision"))
    differs("XLA", PAPER["xla"], choice.get("xla"))
    differs("BatchNorm momentum", PAPER["bn_momentum"], choice.get("bn_momentum", 0.99))
    differs("model scored", "last (the model trained at the last epoch)",
            "last (the model trained at the last epoch)" if base.select == "last" else
            "best (lowest val loss)")
    out.append({"what": "loss", "paper": "binary cross-entropy on probabilities clipped to [1e-7, 1 - 1e-7] "
                                         "(TF 1.12): at most 16.1 per example",
                "here": "Keras 3 computes it from the sigmoid's logits: unbounded, so a loss spike can be "
                        "larger than the paper's"})
    if "embedded synthetic set" in manifest.get("command", ""):
        out.append({"what": "data", "paper": "merged Kaggle chest X-rays (COVID vs normal)",
                    "here": "the embedded synthetic radiographs"})
    if model.freeze_base or model.trainable_from:
        out.append({"what": "frozen layers", "paper": "not stated",
                    "here": "backbone frozen" if model.freeze_base else f"layers before {model.trainable_from}"})
    device = ", ".join(g["name"] for g in machine.get("gpus", [])) or f"CPU ({machine.get('cpu', '?')})"
    out.append({"what": "device", "paper": PAPER["device"], "here": device})
    return out


# --- properties of one run ----------------------------------------------------

def series(history: list[dict], key: str) -> list[float]:
    return [h[key] for h in history if h.get(key) is not None and math.isfinite(h[key])]


def share(values: list[float], test) -> float:
    """The fraction of the epochs whose value passes ``test`` (0 without epochs)."""
    return sum(1 for v in values if test(v)) / len(values) if values else 0.0


def spikes(losses: list[float]) -> list[float]:
    """The losses of the epochs that rise more than SPIKE_RISE above the lowest loss before them."""
    return [loss for i, loss in enumerate(losses) if i and loss > min(losses[:i]) + SPIKE_RISE]


def mostly(history: list[dict], keys: tuple[str, ...], test) -> bool:
    return all(share(series(history, key), test) >= MOSTLY for key in keys)


LOSSES, ACCURACIES = ("loss", "val_loss"), ("accuracy", "val_accuracy")
PROPERTIES = {
    "accuracy near 1": lambda h: mostly(h, ACCURACIES, lambda v: v >= NEAR_ONE),
    "loss mostly below 0.2": lambda h: mostly(h, LOSSES, lambda v: v < 0.2),
    "accuracy high": lambda h: mostly(h, ACCURACIES, lambda v: v >= HIGH),
    "loss spikes to ~0.8-1.0": lambda h: any(max(spikes(series(h, k)), default=0.0) >= SPIKE_TO for k in LOSSES),
    "loss mostly 0.2-0.3": lambda h: mostly(h, LOSSES, lambda v: 0.2 <= v <= 0.3),
    "loss spikes": lambda h: any(spikes(series(h, k)) for k in LOSSES),
}


def shows(histories: list[list[dict]], name: str) -> tuple[bool, int]:
    """Whether a setting shows a property (at least half of its runs do), and how many runs do."""
    count = sum(1 for h in histories if PROPERTIES[name](h))
    return bool(histories) and 2 * count >= len(histories), count


# --- the claims -------------------------------------------------------------

# (the paper's words, the axis, the settings, the properties each must show)
DESCRIPTIVE = [
    ("lr 1e-4 and 1e-5: accuracy near 1, loss mostly below 0.2", "lr", (1e-4, 1e-5),
     ("accuracy near 1", "loss mostly below 0.2")),
    ("lr 1e-2 and 1e-3: accuracy high but the loss erratic, spikes to ~0.8-1.0", "lr", (1e-2, 1e-3),
     ("accuracy high", "loss spikes to ~0.8-1.0")),
    ("lr 1e-6 and 1e-7: acceptable, loss mostly 0.2-0.3", "lr", (1e-6, 1e-7), ("loss mostly 0.2-0.3",)),
    ("batch 5: loss below 0.2", "batch", (5,), ("loss mostly below 0.2",)),
    ("batch 10 and 15: loss spikes", "batch", (10, 15), ("loss spikes",)),
]


def family(sweep: SweepConfig, rows: list[dict], axis: str) -> list[dict]:
    """The rows one axis of the paper runs along: the lr axis at one batch size
    (5, the paper's, where the sweep has it), the batch axis at one lr (1e-4)."""
    if axis == "lr" and sweep.axis not in ("lr", "grid") or axis == "batch" and sweep.axis not in ("batch", "grid"):
        return []
    other, wanted = ("batch_size", 5) if axis == "lr" else ("lr", 1e-4)
    values = sorted({r[other] for r in rows})
    at = next((v for v in values if math.isclose(v, wanted)), values[0] if values else None)
    return [r for r in rows if r[other] == at]


def value_of(row: dict, axis: str) -> float:
    return row["lr"] if axis == "lr" else row["batch_size"]


def pick(rows: list[dict], axis: str, value: float) -> dict | None:
    return next((r for r in rows if math.isclose(value_of(r, axis), value)), None)


def label(axis: str, value: float) -> str:
    return f"lr {value:g}" if axis == "lr" else f"batch {value:g}"


def check(sweep: SweepConfig, rows: list[dict], histories: dict[str, list[list[dict]]]) -> list[dict]:
    """The paper's claims that this sweep's settings touch: ``{claim, evidence, verdict}``.

    Args:
        sweep: the sweep.
        rows: the report's rows (``setting``, ``lr``, ``batch_size``,
            ``statistic``: the ranking statistic's mean, ``repeats_done``).
        histories: per setting, the histories of its finished runs.
    """
    out = []
    for text, axis, values, properties in DESCRIPTIVE:
        members = family(sweep, rows, axis)
        present = [(v, pick(members, axis, v)) for v in values if pick(members, axis, v)]
        if not present:
            continue
        evidence, agree = [], True
        for value, row in present:
            runs = histories.get(row["setting"], [])
            parts = []
            for name in properties:
                held, count = shows(runs, name)
                agree &= held
                parts.append(f"{name}: {count} of {len(runs)} runs")
            evidence.append(f"{label(axis, value)}: " + ", ".join(parts))
        missing = [label(axis, v) for v in values if not pick(members, axis, v)]
        if missing:
            evidence.append(f"(the sweep has no {', '.join(missing)})")
        out.append({"claim": text, "evidence": "; ".join(evidence),
                    "verdict": "cannot tell" if not any(histories.get(r["setting"]) for _, r in present)
                    else "agree" if agree else "disagree"})
    out += comparative(sweep, rows, "lr", (1e-4, 1e-5), "lr 1e-4 and 1e-5 best")
    out += comparative(sweep, rows, "batch", (5,), "batch 5 best")
    # The paper's general finding, checked over whatever batch sizes the sweep has.
    members = sorted(family(sweep, rows, "batch"), key=lambda r: r["batch_size"])
    if members:
        verdict, evidence = order_verdict(members)
        out.append({"claim": "larger batch, larger loss", "evidence": evidence, "verdict": verdict})
    return out


def comparative(sweep: SweepConfig, rows: list[dict], axis: str, values: tuple, text: str) -> list[dict]:
    """"``values`` best" along ``axis``: rank 1 by the ranking statistic."""
    members = family(sweep, rows, axis)
    if not any(pick(members, axis, v) for v in values):
        return []
    ranked = [r for r in members if r["statistic"] is not None]
    if len(members) < 2:
        return [{"claim": text, "evidence": "the sweep has nothing to compare with", "verdict": "cannot tell"}]
    if any(r["repeats_done"] < 2 for r in members) or len(ranked) < 2:
        return [{"claim": text, "evidence": "fewer than 2 finished runs per setting", "verdict": "cannot tell"}]
    best = min(ranked, key=lambda r: r["statistic"])
    agree = any(math.isclose(value_of(best, axis), v) for v in values)
    return [{"claim": text, "evidence": f"rank 1: {label(axis, value_of(best, axis))} "
                                        f"(statistic {best['statistic']:.4f})",
             "verdict": "agree" if agree else "disagree"}]


def order_verdict(rows: list[dict]) -> tuple[str, str]:
    """Whether the ranking statistic grows with the batch size over ``rows`` (sorted by batch)."""
    if len(rows) < 2:
        return "cannot tell", "the sweep has a single batch size"
    if any(r["repeats_done"] < 2 or r["statistic"] is None for r in rows):
        return "cannot tell", "fewer than 2 finished runs per setting"
    stats = [r["statistic"] for r in rows]
    evidence = ", ".join(f"batch {r['batch_size']}: {r['statistic']:.4f}" for r in rows)
    return ("agree" if all(b > a for a, b in zip(stats, stats[1:])) else "disagree"), evidence
