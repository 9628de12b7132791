"""Reading records: the manifest, the shard files of a split and the parser of
one ``tf.train.Example`` (writing them is ``engine.data.records``), and the
rule a batch size must meet against a split's size."""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import DamagedState, UserError
from engine.io import read_json

FORMAT = "engine-records/1"
MANIFEST = "manifest.json"


def load_manifest(folder: Path) -> dict:
    """Reads a records folder's manifest, with a one-line error if it is not one."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder} is not a records folder (no {MANIFEST}); "
                        f"build one with `engine build-records SRC OUT`")
    todo = "rebuild the records with `engine build-records SRC OUT --overwrite`"
    try:
        manifest = read_json(path, todo)
    except DamagedState as err:  # the records are the user's input: a user error
        raise UserError(str(err)) from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}")
    missing = [key for key in REQUIRED if key not in manifest]
    splits = manifest.get("splits")
    if missing or not isinstance(splits, dict) or \
            any(not isinstance(v, dict) or not {"count", "shards"} <= set(v) for v in splits.values()):
        what = f"{', '.join(missing)} missing" if missing else "its splits lack counts or shards"
        raise UserError(f"{path} is damaged ({what}); {todo}")
    return manifest


# What every reader of a manifest relies on.
REQUIRED = ("splits", "label_map", "image_size", "channels", "encoding", "resize")


def check_batch_size(batch_size: int, manifest: dict, split: str = "train") -> None:
    """The one rule of a batch against the records: a training batch holds no
    more images than its split (training drops the incomplete last batch, so
    a larger one would train on nothing). Raises UserError in one line."""
    count = manifest["splits"].get(split, {}).get("count", 0)
    if batch_size > count:
        raise UserError(f"--batch-size {batch_size} is larger than the {split} split ({count} images)")


def shard_paths(folder: Path, split: str, manifest: dict | None = None) -> list[str]:
    """The shard files of one split."""
    manifest = manifest or load_manifest(folder)
    if split not in manifest["splits"]:
        raise UserError(f"{folder} has no {split} split (has: {', '.join(manifest['splits'])})")
    paths = [str(Path(folder) / name) for name in manifest["splits"][split]["shards"]]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserError(f"shard {missing[0]} listed in the manifest is missing")
    return paths


def parse_fn(manifest: dict):
    """A function ``serialized -> (image uint8 [H, W, C], label int32)`` for ``tf.data``."""
    import tensorflow as tf

    height, width = manifest["image_size"]
    channels = manifest["channels"]
    encoding = manifest["encoding"]
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(serialized):
        features = tf.io.parse_single_example(serialized, spec)
        data = features["image/encoded"]
        if encoding == "raw":
            image = tf.io.decode_raw(data, tf.uint8)
            image = tf.reshape(image, [height, width, channels])
        elif encoding == "png":
            image = tf.io.decode_png(data, channels=channels)
        else:
            image = tf.io.decode_jpeg(data, channels=channels)
        image = tf.ensure_shape(image, [height, width, channels])
        return image, tf.cast(features["image/class/label"], tf.int32)

    return parse
