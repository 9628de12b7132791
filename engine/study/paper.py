"""The published study as data: its setup (``PAPER``), the reference every
sweep's deviations are listed against (``deviations``: every way a sweep's
setup differs from the paper's, listed in report.md and sweep.json).

The paper's claims, checked on a sweep's runs, are ``engine.study.claims``;
the properties of a run's curves they name, ``engine.study.curves``; the
settings they name, ``engine.study.axes``.
"""

from __future__ import annotations

from engine.config import SweepConfig

PAPER = {
    "model": "InceptionV3", "weights": "imagenet", "optimizer": "adam", "schedule": "constant", "epochs": 20,
    "image_size": 299, "resize": "nearest", "augment": "paper", "precision": "float32", "xla": "off",
    "bn_momentum": 0.99, "counts": {"train": 500, "val": 100, "test": 100}, "select": "last",
    "device": "one NVIDIA GPU (TensorFlow 1.12, CUDA 9)", "repeats": 1,
}


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
    if sweep.splits > 1:
        out.append({"what": "splits", "paper": "one train/val split",
                    "here": f"{sweep.splits} {sweep.split_mode} splits of the train+val pool, each with every seed "
                            f"(--splits); the images above are the pool's"})
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
