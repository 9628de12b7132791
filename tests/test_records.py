"""build-records end to end: round trip, manifest, leakage, bad input, interruption."""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from engine.data import manifest as reading, records
from engine.config import RecordsConfig
from engine.errors import UserError
from factories import class_folder, gray, png_bomb, save, split_folder


def build(src, out, **kwargs):
    kwargs.setdefault("workers", 0)
    kwargs.setdefault("image_size", 32)
    return records.build(RecordsConfig(src=src, out=out, **kwargs), quiet=True)


def read_split(folder, split):
    """Reads one split with plain tf.data and tf.io, no engine code."""
    files = sorted(str(p) for p in folder.glob(f"chestxray-{split}.tfrecord-*"))
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/format": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64),
            "image/source_id": tf.io.FixedLenFeature([], tf.string),
            "image/channels": tf.io.FixedLenFeature([], tf.int64)}
    rows = []
    for serialized in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(serialized, spec)
        rows.append({k: v.numpy() for k, v in ex.items()})
    return rows


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_round_trip_17_examples_3_shards_pixel_exact(tmp_path, encoding):
    src = class_folder(tmp_path / "src", {"covid": 8, "normal": 9})
    manifest = build(src, tmp_path / "out", fractions=(1.0, 0.0, 0.0), min_shards=3,
                     encoding=encoding, image_size=48, resize="nearest")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.tfrecord-*")) == [
        f"chestxray-train.tfrecord-0000{i}-of-00003" for i in range(3)]
    rows = read_split(out, "train")
    assert len(rows) == 17
    assert manifest["splits"]["train"]["per_class"] == {"covid": 8, "normal": 9}
    for row in rows:
        rel = row["image/source_id"].decode()
        cls, index = rel.split("/")[1].split("-")[0], int(rel.split("-")[1].split(".")[0])
        seed = (0 if cls == "covid" else 1) * 1000 + index
        original = gray(seed)  # 40 x 48 source, resized to 48 x 48 with nearest
        if encoding == "raw":
            image = np.frombuffer(row["image/encoded"], np.uint8).reshape(48, 48)
        else:
            image = tf.io.decode_png(row["image/encoded"]).numpy()[..., 0]
        expected = np.asarray(Image.fromarray(original).resize((48, 48), Image.Resampling.NEAREST))
        np.testing.assert_array_equal(image, expected)
        assert row["image/class/label"] == (0 if cls == "covid" else 1)
        assert row["image/format"].decode() == encoding


def test_parse_fn_reads_static_shapes(tmp_path):
    src = class_folder(tmp_path / "src", {"covid": 3, "normal": 3})
    manifest = build(src, tmp_path / "out", fractions=(1.0, 0.0, 0.0), min_shards=2)
    ds = tf.data.TFRecordDataset(reading.shard_paths(tmp_path / "out", "train")).map(reading.parse_fn(manifest))
    assert ds.element_spec[0].shape == (32, 32, 1) and ds.element_spec[0].dtype == tf.uint8
    labels = sorted(int(label) for _, label in ds)
    assert labels == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_tfds_reads_the_records_as_they_are(tmp_path, encoding):
    """TFDS's metadata beside the shards: tfds.builder_from_directory reads every
    split, its examples equal to the engine's own reading of them."""
    import tensorflow_datasets as tfds

    src = split_folder(tmp_path / "src", {"train": {"covid": 3, "normal": 3}, "val": {"covid": 1, "normal": 1}})
    manifest = build(src, tmp_path / "out", min_shards=2, encoding=encoding)
    builder = tfds.builder_from_directory(str(tmp_path / "out"))
    assert builder.info.features["image/class/label"].names == ["covid", "normal"]
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == {"train": 6, "val": 2}
    assert builder.info.splits["train"].num_shards == 2
    engine_read = {}
    parse = reading.parse_fn(manifest)
    for serialized in tf.data.TFRecordDataset(reading.shard_paths(tmp_path / "out", "train")):
        ex = tf.io.parse_single_example(serialized, {"image/source_id": tf.io.FixedLenFeature([], tf.string)})
        engine_read[ex["image/source_id"].numpy().decode()] = [t.numpy() for t in parse(serialized)]
    read = list(builder.as_dataset(split="train"))
    assert len(read) == 6
    for ex in read:
        image, label = engine_read[ex["image/source_id"].numpy().decode()]
        assert ex["image/encoded"].dtype == tf.uint8 and ex["image/encoded"].shape == (32, 32, 1)
        np.testing.assert_array_equal(ex["image/encoded"].numpy(), image)
        assert ex["image/class/label"].numpy() == label and ex["image/format"].numpy().decode() == encoding
    image, label = next(iter(builder.as_dataset(split="val", as_supervised=True)))
    assert image.shape == (32, 32, 1) and int(label) in (0, 1)


def test_a_name_tfds_cannot_read_is_refused_before_any_work(tmp_path):
    src = class_folder(tmp_path / "src", {"covid": 2, "normal": 2})
    with pytest.raises(UserError, match="--name must be a letter"):
        build(src, tmp_path / "out", name="chest-xray")
    assert not (tmp_path / "out").exists()


def test_manifest_records_everything(tmp_path):
    src = split_folder(tmp_path / "src", {"train": {"covid": 4, "normal": 4}, "val": {"covid": 1, "normal": 1},
                                          "test": {"covid": 1, "normal": 2}},
                       pattern="patient-{patient}_source-{source}_view-{i}.png")
    manifest = build(src, tmp_path / "out", recipe="synthetic", command="engine build-records x y")
    assert manifest["label_map"] == {"covid": 0, "normal": 1}
    assert manifest["channels"] == 1 and manifest["encoding"] == "png" and manifest["image_size"] == [32, 32]
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 8, "val": 2, "test": 3}
    assert manifest["command"] == "engine build-records x y"
    example = next(e for e in manifest["examples"] if e["id"] == "train/covid/patient-covid1_source-s1_view-1.png")
    assert example["patient"] == "covid1" and example["source"] == "s1" and example["label"] == 0
    assert example["sha256"] == hashlib.sha256(open(example["path"], "rb").read()).hexdigest()
    assert (tmp_path / "out" / example["shard"]).is_file()
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest


def test_subset_is_stratified_and_seeded(tmp_path):
    src = split_folder(tmp_path / "src", {"train": {"covid": 12, "normal": 8}, "val": {"covid": 4, "normal": 4},
                                          "test": {"covid": 4, "normal": 4}})
    a = build(src, tmp_path / "a", subset=(10, 4, 2))
    b = build(src, tmp_path / "b", subset=(10, 4, 2))
    assert a["splits"]["train"]["per_class"] == {"covid": 6, "normal": 4}
    assert a["splits"]["test"]["per_class"] == {"covid": 1, "normal": 1}
    assert [e["id"] for e in a["examples"]] == [e["id"] for e in b["examples"]]


def test_subset_replaces_rejected_images(tmp_path):
    src = split_folder(tmp_path / "src", {"train": {"covid": 6, "normal": 6}, "test": {"covid": 2, "normal": 2}})
    for i in range(6):
        (src / "train" / "covid" / f"covid-{i}.png").write_bytes(b"" if i < 3 else
                                                              (src / "train" / "covid" / f"covid-{i}.png").read_bytes())
    manifest = build(src, tmp_path / "out", subset=(6, 0, 4), fractions=(0.8, 0.0, 0.2))
    assert manifest["splits"]["train"]["per_class"] == {"covid": 3, "normal": 3}


def test_bad_input_corpus_is_skipped_and_listed(tmp_path):
    src = class_folder(tmp_path / "src", {"covid": 10, "normal": 10})
    (src / "covid" / "empty.png").write_bytes(b"")
    (src / "covid" / "notes.txt").write_text("not an image")
    (src / "normal" / "cut.png").write_bytes((src / "normal" / "normal-0.png").read_bytes()[:100])
    png_bomb(src / "normal" / "bomb.png")
    deep = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 4)
    Image.fromarray(deep).save(src / "normal" / "deep16.png")
    save(src / "covid" / "rgba.png", np.dstack([gray(77, 32, 32)] * 3 + [np.full((32, 32), 128, np.uint8)]))
    Image.fromarray(gray(78, 32, 32)).convert("P").save(src / "covid" / "palette.png")
    manifest = build(src, tmp_path / "out", fractions=(1.0, 0.0, 0.0))
    with open(tmp_path / "out" / "rejects.csv") as f:
        reasons = {row["path"]: row["reason"] for row in csv.DictReader(f)}
    assert set(reasons) == {"covid/empty.png", "covid/notes.txt", "normal/cut.png", "normal/bomb.png"}
    assert reasons["covid/empty.png"] == "empty file"
    assert "too large" in reasons["normal/bomb.png"]
    # Every readable image is kept: 20 plain + 16-bit + RGBA + palette.
    assert manifest["splits"]["train"]["count"] == 23 and manifest["rejects"] == 4
    assert manifest["channels"] == 1


def test_colour_image_makes_three_channels(tmp_path):
    src = class_folder(tmp_path / "src", {"covid": 2, "normal": 2})
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 0] = 255
    save(src / "normal" / "red.png", colour)
    manifest = build(src, tmp_path / "out", fractions=(1.0, 0.0, 0.0), encoding="raw")
    assert manifest["channels"] == 3
    rows = read_split(tmp_path / "out", "train")
    images = {r["image/source_id"].decode(): np.frombuffer(r["image/encoded"], np.uint8).reshape(32, 32, 3)
              for r in rows}
    assert images["normal/red.png"][0, 0].tolist() == [255, 0, 0]
    g = images["covid/covid-0.png"]
    np.testing.assert_array_equal(g[..., 0], g[..., 2])


def test_duplicates_across_splits_refused_then_deduped_or_allowed(tmp_path):
    src = split_folder(tmp_path / "src", {"train": {"covid": 3, "normal": 3}, "test": {"covid": 2, "normal": 2}})
    (src / "test" / "covid" / "copy.png").write_bytes((src / "train" / "covid" / "covid-1.png").read_bytes())
    with pytest.raises(UserError, match=r"1 identical files are in more than one split .*--dedupe"):
        build(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    listing = (tmp_path / "out.duplicates.txt").read_text()
    assert listing == "train:train/covid/covid-1.png = test:test/covid/copy.png\n"
    deduped = build(src, tmp_path / "out", dedupe=True, fractions=(0.9, 0.0, 0.1))
    assert deduped["splits"]["test"]["count"] == 4 and deduped["rejects"] == 1
    allowed = build(src, tmp_path / "out2", allow_duplicates=True, fractions=(0.9, 0.0, 0.1))
    assert allowed["splits"]["test"]["count"] == 5
    assert allowed["duplicates_across_splits"] == [["train:train/covid/covid-1.png", "test:test/covid/copy.png"]]


def test_near_duplicates_reported(tmp_path):
    src = split_folder(tmp_path / "src", {"train": {"covid": 3, "normal": 3}, "test": {"covid": 2, "normal": 2}})
    original = np.asarray(Image.open(src / "train" / "covid" / "covid-1.png"))
    save(src / "test" / "covid" / "near.png", np.clip(original.astype(int) + 3, 0, 255).astype(np.uint8))
    manifest = build(src, tmp_path / "out", fractions=(0.9, 0.0, 0.1))
    pairs = [(p["a"], p["b"]) for p in manifest["near_duplicates"]["pairs"]]
    assert ("train/covid/covid-1.png", "test/covid/near.png") in pairs
    assert manifest["near_duplicates"]["count"] >= 1


def test_existing_out_refused_then_overwritten(tmp_path):
    src = class_folder(tmp_path / "src", {"covid": 3, "normal": 3})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists; use --overwrite"):
        build(src, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    build(src, tmp_path / "out", overwrite=True, fractions=(1.0, 0.0, 0.0))
    assert (tmp_path / "out" / "manifest.json").is_file() and not (tmp_path / "out" / "keep.txt").exists()


def test_pool_gives_same_records_as_in_process(tmp_path):
    src = class_folder(tmp_path / "src", {"covid": 6, "normal": 6})
    build(src, tmp_path / "a", fractions=(1.0, 0.0, 0.0), workers=0)
    build(src, tmp_path / "b", fractions=(1.0, 0.0, 0.0), workers=2)
    for shard in sorted((tmp_path / "a").glob("*.tfrecord-*")):
        assert shard.read_bytes() == (tmp_path / "b" / shard.name).read_bytes()


def test_structural_errors_before_any_work(tmp_path):
    src = class_folder(tmp_path / "src", {"covid": 3, "normal": 3})
    with pytest.raises(UserError, match="--subset asks for 50 train images"):
        build(src, tmp_path / "out", subset=(50, 1, 1))
    with pytest.raises(UserError, match="'Flu', which is not a class here"):
        build(src, tmp_path / "out", classes="Flu=covid,normal")
    with pytest.raises(UserError, match="--resize must be one of"):
        build(src, tmp_path / "out", resize="cubic")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_kill_at_any_moment_leaves_no_complete_looking_output(tmp_path):
    src = class_folder(tmp_path / "src", {"covid": 150, "normal": 150})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "engine.cli", "build-records", str(src), str(out),
           "--workers", "0", "--image-size", "64", "--quiet"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.stat().st_size > 0 for p in tmp_path.glob(".out.partial-*/spool.bin")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".out.partial-*")), "the build was killed before it started"
    assert not out.exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "manifest.json").is_file()
    assert not list(tmp_path.glob(".out.partial-*"))
