"""tf.data input pipeline over the record shards of one split.

Decoding runs on the host CPU inside tf.data; batches leave the pipeline as
**uint8** (4x fewer bytes to move to the accelerator than float32), and the
conversion, augmentation and ``preprocess_input`` scaling happen on the device
(``engine.data.augment`` and the model's stem).

Order and the augmentation run inside tf.data are pure functions of (seed,
epoch), the run's one seed keying both: epoch ``e`` is shuffled with a seed
derived from both, so a run resumed at epoch ``e`` sees exactly the batches an
uninterrupted run would, and every trial of a sweep sees the same order.
"""

from __future__ import annotations

import functools
import secrets
from pathlib import Path

import tensorflow as tf

from engine.config import PipelineConfig
from engine.data.manifest import check_batch_size, load_manifest, parse_fn, shard_paths
from engine.data.augment import run_epoch_key
from engine.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE


# Images augmented per call when the augmentation runs inside tf.data.
AUGMENT_CHUNK = 64


def split_bytes(manifest: dict, split: str) -> int:
    """Bytes of one split's decoded uint8 images."""
    height, width = manifest["image_size"]
    return manifest["splits"][split]["count"] * height * width * manifest["channels"]


def epoch_seed(seed: int, epoch: int) -> int:
    # Large odd multiplier: distinct (seed, epoch) pairs never share a seed in practice.
    return (seed * 1_000_003 + epoch) % (2 ** 31 - 1)


def read_examples(files: list[str], manifest: dict, deterministic: bool,
                  file_seed: int | None = None) -> tf.data.Dataset:
    """Decoded (uint8 image, int32 label) examples, shards read in parallel."""
    names = tf.data.Dataset.from_tensor_slices(files)
    if file_seed is not None:
        # Not reshuffled per iteration: the order stays a function of the seed.
        names = names.shuffle(len(files), seed=file_seed, reshuffle_each_iteration=False)
    ds = names.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                          num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.map(parse_fn(manifest), num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def dataset(folder: Path, split: str, batch_size: int, *, training: bool,
            config: PipelineConfig = PipelineConfig(), seed: int | None = None, start_epoch: int = 0,
            end_epoch: int | None = None, manifest: dict | None = None,
            augment_fn=None) -> tf.data.Dataset:
    """Batches of (uint8 images [B, H, W, C], int32 labels [B]).

    Training: epochs ``start_epoch`` to ``end_epoch`` (exclusive; default one
    epoch) laid end to end, each shuffled by (``seed``, epoch) (pass
    ``steps_per_epoch = count // batch_size`` to Keras), remainder dropped so
    every batch is full; ``seed`` None draws fresh orders and augmentations
    and lets tf.data deliver out of order. ``batch_size`` is >= 1 (the
    configs check it); a training batch larger than the split is a UserError
    (``manifest.check_batch_size``). The batch dimension is left unknown
    (``None``) in the element spec: Keras traces its training step for the
    spec it first sees, so one traced and optimized step then serves every
    batch size of a sweep (a static first batch size costs one more trace,
    ~30 s at 75 px on 2 cores, when the second batch size arrives).
    Evaluation: one pass in file order, every example exactly once, the last
    batch smaller (``seed`` is not used).

    ``augment_fn(images, epoch_key, chunk)`` (training only) augments inside
    tf.data, in parallel with the consumer, in chunks of at least
    ``AUGMENT_CHUNK`` images keyed by (``seed``, epoch, chunk index);
    batches then leave as float32.
    """
    manifest = manifest or load_manifest(folder)
    files = shard_paths(folder, split, manifest)
    count = manifest["splits"][split]["count"]
    if training:
        check_batch_size(batch_size, manifest, split)
    # Evaluation keeps file order whatever the seed: per-image scores are
    # matched to the records' ids by that order, and compared across runs.
    deterministic = seed is not None or not training
    cached = None
    if split_bytes(manifest, split) <= config.cache_mb * 2 ** 20:
        # Decoded once, on the first pass; every later epoch reads memory.
        cached = read_examples(files, manifest, deterministic).cache()
    if not training:
        examples = cached if cached is not None else read_examples(files, manifest, deterministic)
        ds = evaluation_batches(examples, count, batch_size)
    else:
        shuffled = functools.partial(epoch_examples, cached, files, manifest, config.shuffle_buffer, count,
                                     deterministic)
        ds = training_batches(shuffled, count, batch_size, seed, start_epoch, end_epoch, augment_fn, deterministic)
    return delivered(ds, config, training, deterministic)


def evaluation_batches(examples: tf.data.Dataset, count: int, batch_size: int) -> tf.data.Dataset:
    """One pass over ``examples`` in batches, the last one smaller, their number stated."""
    ds = examples.batch(batch_size, drop_remainder=False)
    # Interleaving hides the size; stating it lets Keras end an evaluation
    # pass cleanly, and a shard that lost records fails loudly.
    return ds.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))


def epoch_examples(cached: tf.data.Dataset | None, files: list[str], manifest: dict, shuffle_buffer: int,
                   count: int, deterministic: bool, order: int | None) -> tf.data.Dataset:
    """One epoch's examples shuffled by ``order`` (None: a fresh order each
    time): the ``cached`` split's, or else read again from the shards."""
    if cached is not None:
        return cached.shuffle(count, seed=order, reshuffle_each_iteration=False)
    ds = read_examples(files, manifest, deterministic, file_seed=order)
    return ds.shuffle(shuffle_buffer, seed=None if order is None else order + 1, reshuffle_each_iteration=False)


def training_batches(shuffled, count: int, batch_size: int, seed: int | None, start_epoch: int,
                     end_epoch: int | None, augment_fn, deterministic: bool) -> tf.data.Dataset:
    """Epochs ``start_epoch`` to ``end_epoch`` of whole batches laid end to
    end, repeated; ``shuffled(order)`` gives one epoch's examples."""
    def one_epoch(epoch: int) -> tf.data.Dataset:
        # Python-int seeds per epoch (tf.data rejects tensor seeds once a
        # global seed is set); without a seed each epoch draws fresh ones.
        order = epoch_seed(seed, epoch) if deterministic else None
        # Only whole batches (the remainder is dropped before batching,
        # so the batches' spec keeps an unknown batch dimension), and
        # batching inside each epoch: a batch never mixes two epochs.
        ds = shuffled(order).take(count // batch_size * batch_size)
        if augment_fn is None:
            return ds.batch(batch_size)
        return augmented_batches(ds, batch_size, augment_fn, run_epoch_key(augment_key, epoch), deterministic)

    # Without a seed, augmentations are as fresh as the order.
    augment_key = seed if seed is not None else secrets.randbits(31)
    ds = one_epoch(start_epoch)
    for epoch in range(start_epoch + 1, end_epoch or start_epoch + 1):
        ds = ds.concatenate(one_epoch(epoch))
    # Keras looks one batch past the last step; repeating keeps that look
    # from ending the iterator (the extra batch is never trained on).
    return ds.repeat()


def augmented_batches(ds: tf.data.Dataset, batch_size: int, augment_fn, key: tf.Tensor,
                      deterministic: bool) -> tf.data.Dataset:
    """One epoch's examples augmented inside tf.data under its ``key``, in training batches."""
    # Augment in chunks of at least AUGMENT_CHUNK images whatever the
    # training batch: one call per chunk amortises the per-call cost,
    # which dominates at the paper's batch of 5 (measured: 1,500 img/s
    # per batch of 5 against 6,000+ per chunk of 64 on 2 cores). The
    # key of an image is (seed, epoch, chunk index).
    chunks = ds.batch(max(batch_size, AUGMENT_CHUNK)).enumerate().map(
        lambda step, batch: (augment_fn(batch[0], key, tf.cast(step, tf.int32)), batch[1]),
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return chunks.rebatch(batch_size)


def delivered(ds: tf.data.Dataset, config: PipelineConfig, training: bool, deterministic: bool) -> tf.data.Dataset:
    """``ds`` as the pipeline hands it over: through the tf.data service if
    one is set, with the pipeline's options, prefetched."""
    if config.data_service:
        ds = ds.apply(tf.data.experimental.service.distribute(
            # Evaluation must see every example once: distributed_epoch splits one
            # epoch over the workers; parallel_epochs would repeat it per worker.
            processing_mode="parallel_epochs" if training else "distributed_epoch",
            service=config.data_service, job_name=None))
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    # No autotuning thread: destroying an iterator whose autotuner sleeps
    # between optimizations (up to 60 s once the iterator is a minute old)
    # waits for that sleep to end in TensorFlow 2.21, which stalled the end
    # of a training run by 20-60 s, idle (seen in native stacks: the main
    # thread in ~RootDataset::Iterator, the model thread in
    # Model::OptimizeLoop). AUTOTUNE parallelism then means one call per
    # core this process may use, and prefetch buffers still grow on demand.
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(AUTOTUNE)


def verify(folder: Path, split: str, manifest: dict | None = None) -> int:
    """Reads and decodes every record of a split, naming the file of any fault.

    Returns:
        the number of records, which must match the manifest.
    """
    manifest = manifest or load_manifest(folder)
    parse = parse_fn(manifest)
    total = 0
    for path in shard_paths(folder, split, manifest):
        ds = tf.data.TFRecordDataset(path).map(parse, num_parallel_calls=AUTOTUNE)
        seen = 0
        try:
            for _ in ds:
                seen += 1
        except tf.errors.OpError as err:
            message = err.message.splitlines()[0] if err.message else type(err).__name__
            raise UserError(f"{path}: record {seen} cannot be read ({message}); "
                            f"rebuild the records with `engine build-records`") from None
        total += seen
    expected = manifest["splits"][split]["count"]
    if total != expected:
        raise UserError(f"{folder}: the {split} shards hold {total} records, the manifest says {expected}")
    return total
