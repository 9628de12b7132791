"""Split replicates: grouped, stratified, seeded draws from the pool of train
and val (``draw``), and the records folder of one split (``write``)."""

import collections
import hashlib
import json
import os
import random
import socket
import threading
import time

import numpy as np
import pytest

import factories
from engine.data import resample, synthetic
from engine.data.manifest import load_manifest
from engine.data.splits import stratified_counts
from engine.errors import UserError


def pool_manifest(n=300, seed=0, none_share=0.15, splits=("train",) * 7 + ("val",) * 2 + ("test",),
                  classes=("covid", "normal", "normal")):
    """A hand-made manifest: patients of 1-3 images, some without a patient id."""
    rng = random.Random(seed)
    examples, p = [], 0
    while len(examples) < n:
        cls, split = rng.choice(classes), rng.choice(splits)
        patient = None if rng.random() < none_share else f"p{p}"
        for j in range(rng.randint(1, 3) if patient else 1):
            examples.append({"id": f"{split}/{cls}/{p}-{j}.png", "split": split, "class": cls,
                             "label": int(cls == "normal"), "patient": patient, "source": None,
                             "shard": f"x-{split}.tfrecord-00000-of-00001"})
        p += 1
    return {"name": "x", "label_map": {"covid": 0, "normal": 1}, "examples": examples}


def key(e):
    return f"patient:{e['patient']}" if e["patient"] else f"file:{e['id']}"


def pool_of(manifest):
    return [e for e in manifest["examples"] if e["split"] in ("train", "val")]


def largest_group(manifest):
    """Per class, the image count of its largest patient (or 1 for a single file)."""
    sizes = collections.Counter((e["class"], key(e)) for e in pool_of(manifest))
    out = collections.defaultdict(int)
    for (cls, _), n in sizes.items():
        out[cls] = max(out[cls], n)
    return out


def per_class(manifest, ids):
    by_id = {e["id"]: e["class"] for e in manifest["examples"]}
    return collections.Counter(by_id[i] for i in ids)


@pytest.mark.parametrize("mode,sizes", [("holdout", None), ("holdout", (120, 40)), ("kfold", None)])
def test_splits_are_grouped_and_within_the_pool(mode, sizes):
    m = pool_manifest(600)
    by_id = {e["id"]: e for e in m["examples"]}
    pool = {e["id"] for e in pool_of(m)}
    members = resample.draw(m, 4, mode, sizes, seed=3)
    assert [x.index for x in members] == [1, 2, 3, 4]
    for x in members:
        assert list(x.train) == sorted(x.train) and list(x.val) == sorted(x.val)
        assert set(x.train) <= pool and set(x.val) <= pool  # never a test example
        assert not set(x.train) & set(x.val)
        assert not {key(by_id[i]) for i in x.train} & {key(by_id[i]) for i in x.val}
        assert x.per_class == {"train": dict(per_class(m, x.train)), "val": dict(per_class(m, x.val))}


def test_patients_of_two_classes_stay_on_one_side():
    m = pool_manifest(300)
    # Patients with images of both classes: each goes where its majority class's line puts it.
    m["examples"] += [{"id": f"train/{cls}/mixed{p}-{j}.png", "split": "train", "class": cls,
                       "label": int(cls == "normal"), "patient": f"mixed{p}", "source": None}
                      for p in range(20) for j, cls in enumerate(("covid", "normal", "covid" if p % 2 else "normal"))]
    by_id = {e["id"]: e for e in m["examples"]}
    for mode in ("holdout", "kfold"):
        for x in resample.draw(m, 3, mode, seed=0):
            assert not {key(by_id[i]) for i in x.train} & {key(by_id[i]) for i in x.val}
            assert len(x.train) + len(x.val) == len(pool_of(m))


def test_module_import_stays_light():
    import subprocess
    import sys

    code = "import sys, engine.data.resample; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_holdout_follows_the_records_own_sizes_within_tolerance():
    m = pool_manifest(600)
    pool = pool_of(m)
    own_val = sum(e["split"] == "val" for e in pool)
    classes = collections.Counter(e["class"] for e in pool)
    val_target = stratified_counts(dict(classes), own_val)
    g = largest_group(m)
    for x in resample.draw(m, 5, seed=1):
        assert len(x.train) + len(x.val) == len(pool)  # train is the rest of the pool
        for cls in classes:
            assert abs(x.per_class["val"][cls] - val_target[cls]) <= g[cls] / 2
            assert abs(x.per_class["train"][cls] - (classes[cls] - val_target[cls])) <= g[cls] / 2
        assert abs(len(x.val) - own_val) <= sum(g.values()) / 2


def test_holdout_sizes_within_tolerance_rest_unused():
    m = pool_manifest(600, seed=4)
    pool = pool_of(m)
    classes = collections.Counter(e["class"] for e in pool)
    train, val = 200, 60
    v = stratified_counts(dict(classes), val)
    both = stratified_counts(dict(classes), train + val)
    g = largest_group(m)
    for x in resample.draw(m, 6, sizes=(train, val), seed=2):
        for cls in classes:
            assert abs(x.per_class["val"][cls] - v[cls]) <= g[cls] / 2
            assert abs(x.per_class["train"][cls] - (both[cls] - v[cls])) <= g[cls]
        assert abs(len(x.val) - val) <= sum(g.values()) / 2
        assert abs(len(x.train) - train) <= sum(g.values())
        assert len(x.train) + len(x.val) < len(pool)


def test_stratified_shares_follow_the_pool():
    m = pool_manifest(600, seed=5)
    pool = pool_of(m)
    share = sum(e["class"] == "covid" for e in pool) / len(pool)
    for mode in ("holdout", "kfold"):
        for x in resample.draw(m, 3, mode, seed=0):
            for part in ("train", "val"):
                n = sum(x.per_class[part].values())
                # Within the largest patient (3 images) of the exact share.
                assert abs(x.per_class[part]["covid"] - share * n) <= 3


def test_reproducible_whatever_the_order():
    m = pool_manifest(400)
    shuffled = dict(m, examples=random.Random(9).sample(m["examples"], len(m["examples"])))
    for mode in ("holdout", "kfold"):
        a = resample.draw(m, 3, mode, seed=7)
        assert resample.draw(m, 3, mode, seed=7) == a
        assert resample.draw(shuffled, 3, mode, seed=7) == a
        assert [x.digest for x in resample.draw(m, 3, mode, seed=8)] != [x.digest for x in a]
        assert len({x.digest for x in a}) == 3  # the splits differ from one another


def test_holdout_split_k_does_not_depend_on_k():
    m = pool_manifest(400)
    assert resample.draw(m, 3, seed=1) == resample.draw(m, 5, seed=1)[:3]
    assert resample.draw(m, 2, sizes=(100, 30), seed=1) == resample.draw(m, 4, sizes=(100, 30), seed=1)[:2]


def test_kfold_covers_the_pool_once_balanced():
    m = pool_manifest(600, seed=6)
    pool = {e["id"] for e in pool_of(m)}
    classes = collections.Counter(e["class"] for e in pool_of(m))
    g = largest_group(m)
    members = resample.draw(m, 5, "kfold", seed=0)
    seen = collections.Counter(i for x in members for i in x.val)
    assert set(seen) == pool and set(seen.values()) == {1}
    for x in members:
        assert set(x.train) == pool - set(x.val)
        for cls in classes:
            assert abs(x.per_class["val"][cls] - classes[cls] / 5) <= g[cls]
    assert resample.val_train_ratio(members) == pytest.approx(len(pool) / 5 / (len(pool) * 4 / 5))


def test_digest_to_json_and_ratio():
    x = resample.Membership(1, ("a", "b"), ("c",), {"train": {"k": 2}, "val": {"k": 1}})
    canonical = json.dumps({"train": ["a", "b"], "val": ["c"]}, sort_keys=True, separators=(",", ":"))
    assert x.digest == hashlib.sha256(canonical.encode()).hexdigest()
    assert x.to_json() == {"index": 1, "train": 2, "val": 1, "per_class": x.per_class, "sha256": x.digest}
    assert resample.val_train_ratio([x, resample.Membership(2, ("a",), ("b", "c"), {})]) == pytest.approx(1.0)


def test_no_val_split_is_a_pool_of_train():
    m = pool_manifest(300, splits=("train",) * 9 + ("test",))
    assert len(resample.draw(m, 3, "kfold")) == 3
    assert len(resample.draw(m, 3, sizes=(150, 40))) == 3
    with pytest.raises(UserError, match="no val split"):
        resample.draw(m, 3)


def few_patients(n_covid):
    m = pool_manifest(200, classes=("normal",))
    m["examples"] += [{"id": f"train/covid/{i}.png", "split": "train", "class": "covid", "label": 0,
                       "patient": f"c{i}", "source": None} for i in range(n_covid)]
    return m


@pytest.mark.parametrize("call,match", [
    (lambda m: resample.draw(m, 1), "--splits 1"),
    (lambda m: resample.draw(m, 0), "at least 2"),
    (lambda m: resample.draw(m, 3, "bootstrap"), "holdout, kfold"),
    (lambda m: resample.draw(m, 3, "kfold", sizes=(100, 20)), "kfold"),
    (lambda m: resample.draw(m, 3, sizes=(1000, 20)), "pool of train and val has"),
    (lambda m: resample.draw(m, 3, sizes=(0, 20)), "at least 1"),
    (lambda m: resample.draw(m, 3, sizes=(100, 1)), "no .* images in its val"),
    (lambda m: resample.draw(few_patients(3), 4, "kfold"), "class covid has 3 patients"),
    (lambda m: resample.draw(few_patients(1), 3), "class covid has 1 patient"),
    (lambda m: resample.draw({"examples": []}, 3), "no train or val examples"),
])
def test_errors_are_one_line(call, match):
    with pytest.raises(UserError, match=match) as err:
        call(pool_manifest(300))
    assert "\n" not in str(err.value)


def test_draw_is_fast_on_a_large_pool():
    m = pool_manifest(20_000)
    for mode in ("holdout", "kfold"):
        start = time.perf_counter()
        resample.draw(m, 5, mode)
        assert time.perf_counter() - start < 1.5  # about 0.1 s measured; room for a busy machine


# Writing: small real records.

@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("resample")
    records = factories.synthetic_records(root, {"train": 24, "val": 8, "test": 8}, 32,
                                          patient_pattern=synthetic.FILENAME_PATTERN)
    manifest = load_manifest(records)
    return records, manifest, resample.draw(manifest, 2, seed=0)


def read_ids(out, split, manifest):
    import tensorflow as tf
    from engine.data.manifest import shard_paths

    spec = {"image/source_id": tf.io.FixedLenFeature([], tf.string)}
    ds = tf.data.TFRecordDataset(shard_paths(out, split, manifest))
    return [tf.io.parse_single_example(s, spec)["image/source_id"].numpy().decode() for s in ds]


def test_written_split_reads_as_records(pool, tmp_path):
    from engine.data import pipeline

    records, manifest, members = pool
    member = members[0]
    out = resample.write(records, manifest, member, tmp_path / "split1")
    written = load_manifest(out)
    assert {k for k in written if k != "split_of"} == set(manifest)
    assert written["split_of"]["sha256"] == member.digest and written["split_of"]["index"] == 1
    assert written["split_of"]["records"] == str(records.resolve())
    for split in ("train", "val", "test"):
        assert pipeline.verify(out, split) == written["splits"][split]["count"]
    for part in ("train", "val"):
        ids = read_ids(out, part, written)
        assert sorted(ids) == list(getattr(member, part)) and len(set(ids)) == len(ids)
        assert written["splits"][part]["per_class"] == member.per_class[part]
        listed = [e for e in written["examples"] if e["split"] == part]
        assert sorted(e["id"] for e in listed) == list(getattr(member, part))
        assert {e["shard"] for e in listed} == set(written["splits"][part]["shards"])
    test = written["splits"]["test"]["shards"]
    assert test == [str(records.resolve() / name) for name in manifest["splits"]["test"]["shards"]]
    assert not list(out.glob("*-test.tfrecord*"))  # read from the pool, not copied
    assert [e["id"] for e in written["examples"] if e["split"] == "test"] == \
        [e["id"] for e in manifest["examples"] if e["split"] == "test"]
    members_file = json.loads((out / "members.json").read_text())
    assert members_file == {"index": 1, "sha256": member.digest, "train": list(member.train),
                            "val": list(member.val)}
    images, labels = next(iter(pipeline.dataset(out, "train", 4, training=True, seed=0)))
    assert images.shape == (4, 32, 32, 1) and labels.shape == (4,)


def test_write_is_idempotent_and_replaces_another_split(pool, tmp_path):
    records, manifest, members = pool
    out = resample.write(records, manifest, members[0], tmp_path / "split")
    stamp = (out / "manifest.json").stat().st_mtime_ns
    shards = sorted(p.name for p in out.iterdir())
    assert resample.write(records, manifest, members[0], out) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    resample.write(records, manifest, members[1], out)
    assert load_manifest(out)["split_of"]["sha256"] == members[1].digest
    assert sorted(read_ids(out, "val", load_manifest(out))) == list(members[1].val)
    assert sorted(p.name for p in out.iterdir()) == shards
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]  # nothing left beside it


def test_write_removes_leftovers_of_dead_writers_only(pool, tmp_path):
    records, manifest, members = pool
    dead = tmp_path / f".split.partial-{socket.gethostname()}-99999999-abcd"
    old = tmp_path / ".split.partial-12345"
    live = tmp_path / f".split.partial-{socket.gethostname()}-{os.getpid()}-beef"
    for path in (dead, old, live):
        path.mkdir()
        (path / "chestxray-train.tfrecord-00000-of-00001").write_bytes(b"half")
    os.utime(old, (time.time() - 2 * resample.STALE_SECONDS,) * 2)
    resample.write(records, manifest, members[0], tmp_path / "split")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["split", live.name])


def test_two_writers_at_once_both_end_valid(pool, tmp_path):
    records, manifest, members = pool
    out, errors = tmp_path / "split", []

    def run():
        try:
            assert resample.write(records, manifest, members[1], out) == out
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert load_manifest(out)["split_of"]["sha256"] == members[1].digest
    assert sorted(read_ids(out, "train", load_manifest(out))) == list(members[1].train)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]


def test_write_errors(pool, tmp_path):
    records, manifest, members = pool
    lost = resample.Membership(1, members[0].train + ("train/covid/gone.png",), members[0].val, {})
    with pytest.raises(UserError, match="gone.png") as err:
        resample.write(records, manifest, lost, tmp_path / "split")
    assert "\n" not in str(err.value) and not (tmp_path / "split").exists()
    # In the manifest, not in the shards: the records changed under it.
    changed = dict(manifest, examples=manifest["examples"] + [
        {**manifest["examples"][0], "id": "train/covid/ghost.png"}])
    ghost = resample.Membership(1, ("train/covid/ghost.png",) + members[0].train, members[0].val, {})
    with pytest.raises(UserError, match="ghost.png"):
        resample.write(records, changed, ghost, tmp_path / "split")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a split replicate"):
        resample.write(records, manifest, members[0], mine)
    assert (mine / "notes.txt").read_text() == "mine"


def test_written_shards_mix_in_a_seeded_order(pool, tmp_path):
    records, manifest, members = pool
    a = read_ids(resample.write(records, manifest, members[0], tmp_path / "a"), "train", manifest | {
        "splits": load_manifest(tmp_path / "a")["splits"]})
    b = read_ids(resample.write(records, manifest, members[0], tmp_path / "b"), "train", manifest | {
        "splits": load_manifest(tmp_path / "b")["splits"]})
    assert a == b and a != sorted(a)
