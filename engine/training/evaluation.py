"""Scoring models: a run's validation and test metrics with its threshold, and
a saved run's model on a split (``engine evaluate``) or on image files
(``engine predict``)."""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from engine.config import TrainConfig, from_json
from engine.data import images as images_lib, pipeline
from engine.data.manifest import load_manifest
from engine.errors import UserError
from engine.training import metrics

# One traced forward pass per network, reused by every run that reuses it.
_forwards: "weakref.WeakKeyDictionary[keras.Model, object]" = weakref.WeakKeyDictionary()


def predict_split(net: keras.Model, ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """P(label 1) and labels of every example of a split, in order.

    A plain forward pass outside any distribution strategy: each process
    predicts the whole split itself (the splits scored here are small), so no
    per-replica results need gathering.
    """
    if net not in _forwards:
        _forwards[net] = tf.function(lambda x: net(tf.cast(x, tf.float32), training=False),
                                     reduce_retracing=True)
    forward = _forwards[net]
    probabilities, labels = [], []
    for images, y in ds:
        probabilities.append(np.asarray(forward(images), np.float32).reshape(-1))
        labels.append(y.numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


# Evaluation batches hold about this many images (or the training batch, if larger).
EVAL_BATCH = 64


def eval_batch_size(count: int, train_batch: int) -> int:
    """The batch a split of ``count`` images is scored at.

    Scoring needs no gradients or saved activations, so it fits in memory at
    a larger batch than training, and fewer, larger batches run faster (fewer
    dispatches, better-shaped kernels). The split is cut into equal batches
    of at most ``max(EVAL_BATCH, train_batch)``, so that one shape is traced
    where the count allows (100 images: 2 x 50, not 64 + 36). BatchNorm runs
    in inference mode there, so every example's output, and every metric,
    is the same at any batch size (within float rounding).
    """
    most = max(EVAL_BATCH, train_batch)
    batches = -(-count // most)
    return max(1, -(-count // batches))


def evaluate_run(cfg: TrainConfig, net: keras.Model, folder: Path, manifest: dict, positive: int,
                 batch_size=None) -> dict:
    """Validation and test metrics with bootstrap intervals; threshold chosen on
    val. ``batch_size(split)`` gives each split's batch (default: training's)."""
    out = {}

    def split(name: str):
        batch = batch_size(name) if batch_size else cfg.batch_size
        ds = pipeline.dataset(folder, name, batch, training=False, config=cfg.data, manifest=manifest)
        return predict_split(net, ds)

    p_val, y_val = split("val")
    if cfg.threshold == "val-youden":
        scores, y = metrics.positive_scores(p_val, y_val, positive)
        threshold = metrics.youden_threshold(y, scores)
        out["threshold"] = {"value": threshold, "chosen_on": "val", "rule": "Youden's J"}
    else:
        threshold = float(cfg.threshold)
        out["threshold"] = {"value": threshold, "chosen_on": "fixed"}
    out["val"] = metrics.summary(p_val, y_val, positive, threshold, cfg.bootstrap, cfg.seed,
                                 label_map=manifest["label_map"])
    if "test" in manifest["splits"]:
        p_test, y_test = split("test")
        out["test"] = metrics.summary(p_test, y_test, positive, threshold, cfg.bootstrap, cfg.seed,
                                      label_map=manifest["label_map"])
    return out


@dataclass
class SavedRun:
    """A finished run folder: its config, data description, model and threshold."""

    folder: Path
    cfg: TrainConfig
    data: dict
    net: keras.Model

    @property
    def positive(self) -> int:
        return self.data["label_map"][self.data["positive_class"]]

    @property
    def threshold(self) -> float:
        """The decision threshold on P(positive) the run chose (0.5 before it finished)."""
        saved = self.folder / "metrics.json"
        if saved.is_file():
            threshold = json.loads(saved.read_text()).get("threshold")
            if threshold:
                return float(threshold["value"])
        return 0.5


def load_run(run: Path) -> SavedRun:
    """A run folder's config, data description and the model its metrics.json
    was scored with (Keras safe mode): ``cfg.select``'s, or before the run
    finished, its best model so far."""
    path = run / "config.json"
    if not path.is_file():
        raise UserError(f"{run} is not a run folder (no config.json)")
    cfg = from_json(TrainConfig, json.loads(path.read_text()))
    data = json.loads((run / "data.json").read_text())
    metrics_path = run / "metrics.json"
    scored = json.loads(metrics_path.read_text()).get("model_file") if metrics_path.is_file() else None
    for name in (scored, "best.keras", "last.keras"):
        if name and (run / name).is_file():
            net = keras.models.load_model(run / name, safe_mode=True, compile=False)
            return SavedRun(run, cfg, data, net)
    raise UserError(f"{run} has no saved model yet (best.keras / last.keras)")


def evaluate_saved(run: Path, split: str = "test", records: Path | None = None,
                   threshold: float | None = None) -> dict:
    """Metrics of a run's saved model on ``split`` of its records (or of ``records``)."""
    saved = load_run(run)
    folder = records or Path(saved.data["records"])
    manifest = load_manifest(folder)
    if manifest["label_map"] != saved.data["label_map"]:
        raise UserError(f"{folder} labels {manifest['label_map']} differ from the run's {saved.data['label_map']}")
    batch = eval_batch_size(manifest["splits"][split]["count"], saved.cfg.batch_size)
    ds = pipeline.dataset(folder, split, batch, training=False, manifest=manifest)
    p, y = predict_split(saved.net, ds)
    return metrics.summary(p, y, saved.positive, saved.threshold if threshold is None else threshold,
                           saved.cfg.bootstrap, saved.cfg.seed, label_map=saved.data["label_map"])


def predict_images(run: Path, paths: list[Path], gradcam: Path | None = None) -> list[tuple[Path, str, float]]:
    """(path, predicted class, its probability) per image file, decoded and
    resized as the run's records were; Grad-CAM overlays into ``gradcam``."""
    saved = load_run(run)
    size, channels = saved.data["image_size"][0], saved.data["channels"]
    names = {v: k for k, v in saved.data["label_map"].items()}
    positive, threshold = saved.positive, saved.threshold
    out = []
    for path in paths:
        result = images_lib.process(images_lib.Task(0, str(path), size, saved.data["resize"], "raw", 64_000_000))
        if result.reason:
            raise UserError(f"{path}: {result.reason}")
        array = images_lib.decode(result.data, "raw", (size, size, result.channels))
        if result.channels != channels:
            array = np.repeat(array, 3, axis=2) if channels == 3 else array.mean(axis=2, keepdims=True)
        p = float(saved.net(array[None].astype("float32"), training=False)[0, 0])
        score = p if positive == 1 else 1 - p  # P(positive class)
        label = positive if score >= threshold else 1 - positive
        out.append((path, names[label], p if label == 1 else 1 - p))
        if gradcam:
            from engine.model.gradcam import heatmap, overlay
            overlay(path, heatmap(saved.net, array, label), gradcam / f"{path.stem}_gradcam.png")
    return out
