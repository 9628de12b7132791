"""The tf.data pipeline: every example once in evaluation, epoch orders and
augmentations keyed by one seed, the batch-size rule, tf.data service,
tf.distribute, and named faults."""

import numpy as np
import pytest
import tensorflow as tf

from engine.data import pipeline, records
from engine.data.manifest import check_batch_size, load_manifest
from engine.config import RecordsConfig
from engine.errors import UserError
from engine.config import PipelineConfig
from factories import class_folder, damage

COUNT = 17


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    src = class_folder(root / "src", {"covid": 8, "normal": 9})
    records.build(RecordsConfig(src=src, out=root / "out", fractions=(1.0, 0.0, 0.0), min_shards=3,
                                image_size=32, workers=0), quiet=True)
    return root / "out"


def fingerprints(images):
    """One number per image: enough to tell 17 distinct images apart."""
    return [int(x) for x in tf.reduce_sum(tf.cast(images, tf.int64), axis=[1, 2, 3]).numpy()]


def all_images(folder):
    ds = pipeline.dataset(folder, "train", 100, training=False)
    return sorted(fp for images, _ in ds for fp in fingerprints(images))


def epoch_batches(ds, steps):
    return [fingerprints(images) for images, _ in ds.take(steps)]


@pytest.mark.parametrize("cache_mb", [2048, 0])
def test_evaluation_counts_every_example_once(folder, cache_mb):
    ds = pipeline.dataset(folder, "train", 5, training=False, config=PipelineConfig(cache_mb=cache_mb))
    sizes, seen = [], []
    for images, labels in ds:
        assert images.dtype == tf.uint8 and labels.dtype == tf.int32
        sizes.append(int(images.shape[0]))
        seen += fingerprints(images)
    assert sizes == [5, 5, 5, 2]
    assert sorted(seen) == all_images(folder) and len(set(seen)) == COUNT


@pytest.mark.parametrize("cache_mb", [2048, 0])
def test_training_epochs_are_seeded_permutations(folder, cache_mb):
    tf.random.set_seed(123)  # a global seed, as training sets, must not break seeded shuffles
    config = PipelineConfig(cache_mb=cache_mb)
    steps = COUNT // 4
    ds = pipeline.dataset(folder, "train", 4, training=True, config=config, seed=3, end_epoch=3)
    # The batch dimension is unknown (one traced step serves every batch
    # size), yet every batch is whole: the remainder is dropped per epoch.
    assert ds.element_spec[0].shape.as_list() == [None, 32, 32, 1]
    assert all(images.shape[0] == 4 for images, _ in ds.take(3 * steps + 1))
    batches = epoch_batches(ds, 3 * steps)
    epochs = [sum(batches[i * steps:(i + 1) * steps], []) for i in range(3)]
    for epoch in epochs:
        assert len(set(epoch)) == 16 and set(epoch) <= set(all_images(folder))
    assert epochs[0] != epochs[1] != epochs[2]
    again = epoch_batches(pipeline.dataset(folder, "train", 4, training=True, config=config, seed=3,
                                           end_epoch=3), 3 * steps)
    assert again == batches
    resumed = epoch_batches(pipeline.dataset(folder, "train", 4, training=True, config=config, seed=3,
                                             start_epoch=2, end_epoch=3), steps)
    assert resumed == batches[2 * steps:]
    other = epoch_batches(pipeline.dataset(folder, "train", 4, training=True, config=config, seed=4), steps)
    assert other != batches[:steps]


def test_without_a_seed_training_orders_are_fresh_and_evaluation_keeps_file_order(folder):
    fresh = [epoch_batches(pipeline.dataset(folder, "train", 4, training=True), COUNT // 4) for _ in range(2)]
    assert fresh[0] != fresh[1]  # 16 of 17 images in the same order twice: a chance of 1 in 10^14
    passes = [[fp for images, _ in pipeline.dataset(folder, "train", 5, training=False) for fp in fingerprints(images)]
              for _ in range(2)]
    assert passes[0] == passes[1]


def test_batch_larger_than_split(folder):
    with pytest.raises(UserError, match=r"^--batch-size 18 is larger than the train split \(17 images\)$"):
        pipeline.dataset(folder, "train", 18, training=True)
    pipeline.dataset(folder, "train", 18, training=False)  # evaluation: one smaller batch


def test_the_batch_size_rule_on_a_manifest(folder):
    manifest = load_manifest(folder)
    check_batch_size(COUNT, manifest)  # the whole split in one batch
    with pytest.raises(UserError, match=r"^--batch-size 5 is larger than the val split \(0 images\)$"):
        check_batch_size(5, manifest, "val")  # a split the records lack holds no images


def test_missing_split(folder):
    with pytest.raises(UserError, match="has no val split"):
        pipeline.dataset(folder, "val", 4, training=False)


def test_tf_data_service_yields_the_same_examples(folder):
    dispatcher = tf.data.experimental.service.DispatchServer()
    address = dispatcher.target.split("://")[1]
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=address))
    ds = pipeline.dataset(folder, "train", 5, training=False,
                          config=PipelineConfig(data_service=dispatcher.target))
    seen = [fp for images, _ in ds for fp in fingerprints(images)]
    assert sorted(seen) == all_images(folder)
    del worker


def test_distribute_over_two_replicas(folder):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    strategy = tf.distribute.MirroredStrategy(devices)
    ds = pipeline.dataset(folder, "train", 4, training=True, seed=0)
    local = next(iter(ds))[0]
    dist = iter(strategy.experimental_distribute_dataset(ds))
    per_replica = strategy.experimental_local_results(next(dist)[0])
    assert [tuple(x.shape) for x in per_replica] == [(2, 32, 32, 1), (2, 32, 32, 1)]
    np.testing.assert_array_equal(tf.concat(per_replica, 0).numpy(), local.numpy())


def test_verify_counts(folder):
    assert pipeline.verify(folder, "train") == COUNT


def test_corrupt_shard_is_named(folder, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shard = damage(sorted(copy.glob("*.tfrecord-*"))[1])
    with pytest.raises(UserError, match=rf"{shard.name}: record \d+ cannot be read"):
        pipeline.verify(copy, "train")


def test_wrong_shape_record_is_named(folder, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shard = sorted(copy.glob("*.tfrecord-*"))[0]
    wrong = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[tf.io.encode_png(tf.zeros([16, 16, 1], tf.uint8)).numpy()])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))}))
    with tf.io.TFRecordWriter(str(shard)) as writer:
        writer.write(wrong.SerializeToString())
    with pytest.raises(UserError, match=rf"{shard.name}: record 0 cannot be read"):
        pipeline.verify(copy, "train")


def test_augmentation_inside_tf_data_is_chunked_and_seeded(folder):
    from engine.data import augment

    fn = augment.make_augment_fn("paper", image_size=32, channels=1, seed=0)
    make = lambda seed: pipeline.dataset(folder, "train", 4, training=True, end_epoch=2,  # noqa: E731
                                         augment_fn=fn, seed=seed)
    ds = make(7)
    assert ds.element_spec[0].shape.as_list() == [None, 32, 32, 1] and ds.element_spec[0].dtype == tf.float32
    first = [images.numpy() for images, _ in ds.take(8)]  # two epochs of 4 steps (17 // 4)
    assert [len(batch) for batch in first] == [4] * 8
    again = [images.numpy() for images, _ in make(7).take(8)]
    other = [images.numpy() for images, _ in make(8).take(8)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))
    plain = [images.numpy() for images, _ in pipeline.dataset(folder, "train", 4, training=True, seed=7,
                                                               end_epoch=2).take(8)]
    # Same order of examples, now warped: the augmentation changes pixels, not the order.
    assert not np.array_equal(first[0], plain[0].astype(np.float32))
    np.testing.assert_allclose([a.mean() for a in first], [p.mean() for p in plain], rtol=0.35)
