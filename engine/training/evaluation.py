"""Scoring models: a run's validation and test metrics with its threshold, and
a saved run's model on a split (``engine evaluate``) or on image files
(``engine predict``).

A finished run also keeps its selected model's per-image scores beside
``metrics.json``: ``scores-val.csv`` and ``scores-test.csv``, one row per
image with the columns of ``runs.SCORE_COLUMNS``. With them intervals, paired
tests (DeLong on the same test images) and calibration can be computed
across seeds and settings after the runs are gone (``engine.study.clinical``),
without scoring any model again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from engine.config import TrainConfig
from engine.data import images as images_lib, pipeline
from engine.data.manifest import load_manifest, shard_paths
from engine.errors import UserError
from engine.io import read_json
from engine.results import metrics, runs
from engine.serialise import from_json

def forward_pass(net: keras.Model):
    """``net``'s inference pass on a batch of images of any dtype, traced
    (``reduce_retracing``: the last, smaller batch of a split shares the
    trace). A ``Trainer`` keeps the one of the network its trials share."""
    return tf.function(lambda x: net(tf.cast(x, tf.float32), training=False), reduce_retracing=True)


def predict_split(net: keras.Model, ds: tf.data.Dataset, forward=None) -> tuple[np.ndarray, np.ndarray]:
    """P(label 1) and labels of every example of a split, in order.

    A plain forward pass outside any distribution strategy: each process
    predicts the whole split itself (the splits scored here are small), so no
    per-replica results need gathering. ``forward``: ``forward_pass(net)``
    traced before; default: traced here.
    """
    forward = forward_pass(net) if forward is None else forward
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


# A run folder's per-image scores of one split, and their columns: the
# example's position in the split's scoring order, its id, its class label
# (0/1 as in the records), 1 if it is of the positive class, and P(positive).
ID_SOURCE = ("id: the record's image/source_id (the image's path in the source folder); where the records "
             "carry none, the example's index in the split's scoring order (file order, never shuffled)")


def example_ids(folder: Path, split: str, manifest: dict, labels: np.ndarray) -> tuple[list[str], str]:
    """The ids of a split's examples in the order evaluation scores them, and where they come from.

    The records are read again, interleaved as ``pipeline.dataset`` reads an
    evaluation split (deterministic, up to 8 shards in turn), parsing only the
    id and the label. The labels must equal ``labels``, the ones scored, in
    order; otherwise (or without ids, or with repeated ones) the ids are the
    indices in scoring order, which identify the same image in every run on
    these records, since evaluation never shuffles.
    """
    files = shard_paths(folder, split, manifest)
    spec = {"image/source_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64)}
    # Sequential, so in the order the deterministic parallel interleave of the pipeline yields.
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8))
    ids, read = [], []
    for batch in ds.map(lambda s: tf.io.parse_single_example(s, spec)).batch(1024):
        ids += [v.decode() for v in batch["image/source_id"].numpy()]
        read.append(batch["image/class/label"].numpy())
    read = np.concatenate(read) if read else np.zeros(0, np.int64)
    if (read.shape == labels.shape and np.array_equal(read, labels) and all(ids)
            and len(set(ids)) == len(ids)):
        return ids, "image/source_id"
    return [str(i) for i in range(labels.size)], "index in scoring order"


def save_scores(path: Path, ids: list[str], p_label1: np.ndarray, labels: np.ndarray, positive: int) -> None:
    """Writes one split's per-image scores as P(positive) (``runs.SCORE_COLUMNS``)."""
    scores, y = metrics.positive_scores(p_label1, labels, positive)
    runs.save_scores(path, ids, labels, y, scores)


def evaluate_run(cfg: TrainConfig, net: keras.Model, folder: Path, manifest: dict, positive: int,
                 batch_size=None, scores_to: Path | None = None, forward=None) -> dict:
    """Validation and test metrics with their intervals; threshold chosen on
    val. ``batch_size(split)`` gives each split's batch (default: training's).
    With ``scores_to`` (the run folder) each split's per-image scores are saved
    there as ``scores-SPLIT.csv`` and ``scores`` in the result names the files.
    ``forward``: see ``predict_split``."""
    out = {}
    saved = {}
    forward = forward_pass(net) if forward is None else forward

    def split(name: str):
        batch = batch_size(name) if batch_size else cfg.batch_size
        ds = pipeline.dataset(folder, name, batch, training=False, config=cfg.data, manifest=manifest)
        p, y = predict_split(net, ds, forward)
        if scores_to is not None:
            ids, source = example_ids(folder, name, manifest, y)
            save_scores(runs.scores_path(scores_to, name), ids, p, y, positive)
            saved[name] = {"file": runs.scores_path(scores_to, name).name, "id": source}
        return p, y

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
    if saved:
        out["scores"] = {"columns": list(runs.SCORE_COLUMNS), "about": ID_SOURCE, **saved}
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
        saved = self.folder / runs.METRICS
        if saved.is_file():
            threshold = json.loads(saved.read_text()).get("threshold")
            if threshold:
                return float(threshold["value"])
        return 0.5


def load_run(run: Path) -> SavedRun:
    """A run folder's config, data description and the model its metrics.json
    was scored with (Keras safe mode): ``cfg.select``'s, or before the run
    finished, its best model so far."""
    path = run / runs.CONFIG
    if not path.is_file():
        raise UserError(f"{run} is not a run folder (no {runs.CONFIG})")
    cfg = from_json(TrainConfig, read_json(path))
    data = read_json(run / runs.DATA)
    result = runs.read_metrics(run)
    scored = result.get("model_file") if result is not None else None
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
