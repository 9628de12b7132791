"""Writing records (``engine build-records``): image folders -> pre-resized
TFRecord shards + manifest (reading them back is ``engine.data.manifest``).

Format (the tensorflow/models convention, readable with plain ``tf.data``):
shards ``NAME-SPLIT.tfrecord-%05d-of-%05d``, one ``tf.train.Example`` per image
with ``image/encoded``, ``image/format``, ``image/height``, ``image/width``,
``image/channels``, ``image/class/label``, ``image/class/text``,
``image/source_id`` (the example id: its path in the source folder),
``image/patient_id`` and ``image/source``. ``manifest.json`` beside the shards
holds counts, the label map, image size, channels, encoding, every example's
id, patient, source, source path and sha256, and the command that built it.

The shard names are TFDS's own (``{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}``),
and TFDS's metadata is written beside them (``write_tfds_metadata``:
``dataset_info.json``, ``features.json``, the class names), so
``tfds.builder_from_directory(OUT).as_dataset(split="train")`` reads the
records as they are, every key above a feature of the same name.

A build happens in a hidden sibling folder that is renamed to OUT at the end:
a build killed at any moment leaves no OUT that looks complete, and the next
build removes the leftover.
"""

from __future__ import annotations

import collections
import csv
import math
import multiprocessing
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import engine
from engine.config import SPLITS, RecordsConfig
from engine.data import images
from engine.data.layouts import Candidate, apply_classes, load_recipe, scan
from engine.data.manifest import FORMAT, MANIFEST
from engine.data.splits import assign_splits, draw_order, patient_overlap, stable_rng
from engine.errors import UserError
from engine.io import atomic_json, atomic_write, needing
from engine.progress import progress

REJECTS = "rejects.csv"
# TFDS's default file template, which ``shard_name`` writes; TFDS parses a
# dataset name as a letter followed by letters, digits or _ (``DATASET_NAME``).
TFDS_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
DATASET_NAME = re.compile(r"[A-Za-z]\w*")


def shard_name(name: str, split: str, index: int, count: int) -> str:
    return f"{name}-{split}.tfrecord-{index:05d}-of-{count:05d}"


def with_recipe(cfg: RecordsConfig) -> RecordsConfig:
    """Fills the options a recipe knows and the user left unset."""
    if not cfg.recipe:
        return cfg
    recipe = load_recipe(cfg.recipe)
    return replace(
        cfg,
        layout=recipe.layout if cfg.layout == "auto" else cfg.layout,
        classes=cfg.classes or recipe.classes,
        patient_pattern=cfg.patient_pattern or recipe.patient_pattern,
        source_pattern=cfg.source_pattern or recipe.source_pattern,
    )


def run_tasks(tasks: list[images.Task], workers: int | None) -> Iterator[images.Processed]:
    """Processes tasks in order, over a process pool unless ``workers`` is 0 or 1.

    The pool is spawned, not forked: the parent may hold TensorFlow's threads,
    and a forked copy of those can deadlock.
    """
    workers = os.cpu_count() or 1 if workers is None else workers
    if workers <= 1 or len(tasks) < 4:
        yield from map(images.process, tasks)
        return
    chunk = max(1, min(16, len(tasks) // (workers * 8)))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(images.process, tasks, chunksize=chunk)


class Spool:
    """Encoded images parked on disk until the splits are final (keeps memory flat)."""

    def __init__(self, path: Path):
        self.file = open(path, "w+b")  # noqa: SIM115 - closed by close()
        self.where: dict[int, tuple[int, int]] = {}

    def put(self, index: int, data: bytes) -> None:
        self.file.seek(0, os.SEEK_END)
        self.where[index] = (self.file.tell(), len(data))
        self.file.write(data)

    def get(self, index: int) -> bytes:
        offset, size = self.where[index]
        self.file.seek(offset)
        return self.file.read(size)

    def close(self) -> None:
        self.file.close()


def process_all(cfg: RecordsConfig, order: dict, spool: Spool, quiet: bool
                ) -> tuple[list[tuple[Candidate, images.Processed]], list[tuple[Candidate, str]]]:
    """Decodes what each (split, class) needs, drawing reserves for rejects."""
    accepted: list[tuple[Candidate, images.Processed]] = []
    rejected: list[tuple[Candidate, str]] = []
    taken = {cell: 0 for cell in order}
    short = {cell: need for cell, (need, _) in order.items()}
    first = True
    while any(short.values()):
        batch: list[Candidate] = []
        for cell, missing in short.items():
            members = order[cell][1]
            pick = members[taken[cell]: taken[cell] + missing]
            taken[cell] += len(pick)
            batch += pick
        if not batch:
            break
        tasks = [images.Task(i, str(c.path), cfg.image_size, cfg.resize, cfg.encoding, cfg.max_pixels)
                 for i, c in enumerate(batch)]
        label = "Decoding images" if first else "Replacing rejected images"
        offset = len(accepted) + len(rejected)
        with progress(len(tasks), label, quiet=quiet) as advance:
            for result in run_tasks(tasks, cfg.workers):
                candidate = batch[result.index]
                cell = (candidate.split, candidate.class_name)
                if result.reason:
                    rejected.append((candidate, result.reason))
                else:
                    spool.put(offset + result.index, result.data)
                    accepted.append((candidate, replace(result, index=offset + result.index, data=b"")))
                    short[cell] -= 1
                advance(1)
        first = False
    return accepted, rejected


def exact_duplicates(accepted: list[tuple[Candidate, images.Processed]]) -> list[list[Candidate]]:
    """Groups of identical files (sha256) that span more than one split."""
    by_hash: dict[str, list[Candidate]] = collections.defaultdict(list)
    for candidate, result in accepted:
        by_hash[result.sha256].append(candidate)
    return [sorted(g, key=lambda c: (SPLITS.index(c.split), c.rel)) for g in by_hash.values()
            if len({c.split for c in g}) > 1]


def near_duplicates(accepted: list[tuple[Candidate, images.Processed]], max_bits: tuple[int, int],
                    limit: int = 1000) -> tuple[int, list[dict]]:
    """Pairs of images in different splits whose perceptual hashes are within
    ``max_bits`` at every scale. Returns (count, first ``limit`` pairs)."""
    if not accepted:
        return 0, []
    all_bits = np.unpackbits(np.frombuffer(b"".join(r.dhash for _, r in accepted), np.uint8)
                             .reshape(len(accepted), -1), axis=1).astype(np.float32)
    sizes = [side * side for side in images.HASH_SIDES]
    scales = np.split(all_bits, np.cumsum(sizes)[:-1], axis=1)
    split_ids = np.array([SPLITS.index(c.split) for c, _ in accepted])
    count, pairs = 0, []
    for start in range(0, len(accepted), 1024):
        close = split_ids[start:start + 1024, None] < split_ids[None, :]
        distances = []
        for bits, limit_bits in zip(scales, max_bits):
            block = bits[start:start + 1024]
            # Hamming distance as two matrix products: bits that are 1 in a and 0 in b, and vice versa.
            dist = block @ (1 - bits).T + (1 - block) @ bits.T
            close &= dist <= limit_bits
            distances.append(dist)
        rows, cols = np.nonzero(close)
        count += len(rows)
        for r, c in zip(rows[: max(0, limit - len(pairs))], cols):
            a, b = accepted[start + r][0], accepted[c][0]
            pairs.append({"a": a.rel, "a_split": a.split, "b": b.rel, "b_split": b.split,
                          "bits": [int(d[r, c]) for d in distances]})
    return count, pairs


def convert_channels(data: bytes, encoding: str, size: int, have: int, want: int) -> bytes:
    """Re-encodes an image stored with ``have`` channels to ``want`` channels."""
    array = images.decode(data, encoding, (size, size, have))
    if want == 3:
        array = np.repeat(array.reshape(size, size, 1), 3, axis=2)
    else:
        from PIL import Image
        array = np.asarray(Image.fromarray(array).convert("L"))
    return images.encode(array.reshape(size, size) if want == 1 else array, encoding)


def write_shards(folder: Path, cfg: RecordsConfig, examples: list[tuple[Candidate, images.Processed]],
                 spool: Spool, labels: dict[str, int], channels: int,
                 advance: Callable[[int], None]) -> tuple[dict[str, list[str]], dict[int, str]]:
    """Writes every split's shards; returns split -> shard names, and example -> shard."""
    import tensorflow as tf  # only the writer needs it; workers never import it

    def feature(value):
        if isinstance(value, int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        if isinstance(value, str):
            value = value.encode()
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    shards: dict[str, list[str]] = {}
    shard_of: dict[int, str] = {}
    size = cfg.image_size
    for split in SPLITS:
        members = [e for e in examples if e[0].split == split]
        if not members:
            continue
        # Seeded shuffle so every shard holds both classes and any source order is lost.
        stable_rng(cfg.seed, "shards", split).shuffle(members)
        total = sum(spool.where[r.index][1] for _, r in members)
        count = min(len(members), max(math.ceil(total / (cfg.shard_mb * 2 ** 20)), cfg.min_shards))
        names = [shard_name(cfg.name, split, i, count) for i in range(count)]
        for name, part in zip(names, np.array_split(np.arange(len(members)), count)):
            with tf.io.TFRecordWriter(str(folder / name)) as writer:
                for i in part:
                    candidate, result = members[i]
                    shard_of[result.index] = name
                    data = spool.get(result.index)
                    if result.channels != channels:
                        data = convert_channels(data, cfg.encoding, size, result.channels, channels)
                    example = tf.train.Example(features=tf.train.Features(feature={
                        "image/encoded": feature(data),
                        "image/format": feature(cfg.encoding),
                        "image/height": feature(size),
                        "image/width": feature(size),
                        "image/channels": feature(channels),
                        "image/class/label": feature(labels[candidate.class_name]),
                        "image/class/text": feature(candidate.class_name),
                        "image/source_id": feature(candidate.rel),
                        "image/patient_id": feature(candidate.patient or ""),
                        "image/source": feature(candidate.source or ""),
                    }))
                    writer.write(example.SerializeToString())
                    advance(1)
        shards[split] = names
    return shards, shard_of


def write_tfds_metadata(folder: Path, manifest: dict) -> None:
    """TFDS's metadata for the shards in ``folder``, so that
    ``tfds.builder_from_directory(folder)`` reads them without a builder of
    their own: one feature per ``tf.train.Example`` key, under the key's own
    name; ``image/encoded`` a decoded uint8 image of the records' shape (a
    ``Tensor`` of raw bytes for ``raw``, an ``Image`` for png and jpeg),
    ``image/class/label`` a ``ClassLabel`` with the class names; the splits
    with their shard lengths (from ``manifest``, not by reading the shards);
    ``as_supervised=True`` gives (image, label)."""
    import tensorflow_datasets as tfds  # imported here only: a build is its one user

    size, channels, encoding = manifest["image_size"][0], manifest["channels"], manifest["encoding"]
    if encoding == "raw":
        image = tfds.features.Tensor(shape=(size, size, channels), dtype=np.uint8,
                                     encoding=tfds.features.Encoding.BYTES)
    else:
        image = tfds.features.Image(shape=(size, size, channels), encoding_format=encoding)
    labels = manifest["label_map"]
    features = {"image/encoded": image, "image/class/label": tfds.features.ClassLabel(
        names=sorted(labels, key=labels.get))}
    for key in ("image/height", "image/width", "image/channels"):
        features[key] = tfds.features.Scalar(np.int64)
    for key in ("image/format", "image/class/text", "image/source_id", "image/patient_id", "image/source"):
        features[key] = tfds.features.Text()
    template = tfds.core.ShardedFileTemplate(data_dir=tfds.core.Path(folder), template=TFDS_TEMPLATE,
                                             dataset_name=manifest["name"], filetype_suffix="tfrecord")
    lengths = collections.Counter(e["shard"] for e in manifest["examples"])
    splits = [tfds.core.SplitInfo(name=split, shard_lengths=[lengths[name] for name in info["shards"]],
                                  num_bytes=sum((folder / name).stat().st_size for name in info["shards"]),
                                  filename_template=template)
              for split, info in manifest["splits"].items()]
    tfds.folder_dataset.write_metadata(
        data_dir=folder, features=tfds.features.FeaturesDict(features), split_infos=splits,
        filename_template=template, version="1.0.0", check_data=False,  # read back by the tests instead
        supervised_keys=("image/encoded", "image/class/label"),
        description="Written by `engine build-records`; manifest.json beside the shards holds every "
                    "example's provenance (path, patient, source, sha256) and the build command.")


def clean_stale(out: Path) -> list[Path]:
    """Removes folders left by builds of ``out`` that were killed."""
    stale = sorted(out.parent.glob(f".{out.name}.partial-*"))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def build(cfg: RecordsConfig, quiet: bool = False) -> dict:
    """Builds the records of ``cfg``; returns the manifest.

    Structural problems raise UserError before any file is decoded; unreadable
    files are skipped and listed in ``rejects.csv`` with their reason.
    """
    cfg = checked_config(cfg)
    out = cfg.out
    layout, root, found = scan(cfg.src, cfg.layout, cfg.list_files, cfg.patient_pattern,
                               cfg.source_pattern)
    links = [c for c in found if c.skipped]  # folder links not followed: listed in rejects.csv
    candidates, labels = apply_classes([c for c in found if not c.skipped], cfg.classes)
    candidates, notes = assign_splits(candidates, cfg.fractions, cfg.seed, cfg.split_by,
                                      cfg.test_source, cfg.resplit)
    order = draw_order(candidates, cfg.subset, cfg.seed)
    overlap = patient_overlap([c for _, (need, m) in order.items() for c in m[:need]])
    if overlap:
        notes.append(f"{len(overlap)} patients appear in more than one split of the source "
                     f"folder (e.g. {next(iter(overlap))}); --resplit splits by patient")
    if clean_stale(out):
        notes.append("removed the leftover of an interrupted build")

    import tensorflow  # noqa: F401 - loaded before the clock starts: start-up is not build time

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    spool = Spool(tmp / "spool.bin")
    try:
        start = time.perf_counter()
        with needing(build_mb(cfg, len(candidates))):
            accepted, rejected = process_all(cfg, order, spool, quiet)
        rejected += [(c, c.skipped) for c in links]
        if not accepted:
            raise UserError(f"none of the {len(rejected)} files could be read as an image "
                            f"(first: {rejected[0][0].rel}: {rejected[0][1]})")
        accepted, rejected, duplicates = settle_duplicates(cfg, accepted, rejected, notes)
        near_count, near_pairs = near_duplicates(accepted, cfg.near_duplicate_bits)
        if near_count:
            notes.append(f"{near_count} near-duplicate pairs across splits (perceptual hashes within "
                         f"{cfg.near_duplicate_bits[0]}/256 and {cfg.near_duplicate_bits[1]}/1024 bits), "
                         f"listed in the manifest")
        channels = int(cfg.channels) if cfg.channels != "auto" else \
            (1 if all(r.channels == 1 for _, r in accepted) else 3)
        with progress(len(accepted), "Writing shards", "records", quiet=quiet) as advance, \
                needing(build_mb(cfg, len(accepted))):
            shards, shard_of = write_shards(tmp, cfg, accepted, spool, labels, channels, advance)
        seconds = time.perf_counter() - start
        spool.close()
        (tmp / "spool.bin").unlink()
        manifest = make_manifest(cfg, layout, root, labels, channels, accepted, rejected, shards,
                                 shard_of, duplicates, near_count, near_pairs, notes, seconds)
        write_beside_shards(tmp, manifest, rejected)
        publish(tmp, out)
        return manifest
    except BaseException:
        spool.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checked_config(cfg: RecordsConfig) -> RecordsConfig:
    """``cfg`` with its recipe applied, validated and its paths made absolute;
    a build that cannot be done (no SRC or OUT, a bad name, an OUT in the way
    or without a parent folder) raises UserError before anything is read."""
    cfg = with_recipe(cfg).validate()
    if cfg.src is None or cfg.out is None:
        raise UserError("build-records needs SRC and OUT")
    if not DATASET_NAME.fullmatch(cfg.name):
        raise UserError(f"--name must be a letter followed by letters, digits or _ (TFDS reads the records "
                        f"by it), not {cfg.name!r}")
    out = cfg.out.resolve()
    cfg = replace(cfg, src=cfg.src.resolve(), out=out)
    if out.exists() and not cfg.overwrite:
        raise UserError(f"{out} exists; use --overwrite to replace it or choose another OUT")
    if not out.parent.is_dir():
        raise UserError(f"the parent folder of OUT, {out.parent}, does not exist")
    return cfg


def settle_duplicates(cfg: RecordsConfig, accepted: list[tuple[Candidate, images.Processed]],
                      rejected: list[tuple[Candidate, str]], notes: list[str]) -> tuple[list, list, list]:
    """Identical files in more than one split: ``--dedupe`` drops the later
    copies into ``rejected`` (with a line in ``notes``), ``--allow-duplicates``
    keeps them, and otherwise they are listed beside OUT and refused.
    Returns the accepted and rejected files, and the groups of identical ones."""
    duplicates = exact_duplicates(accepted)
    if duplicates and cfg.dedupe:
        drop = {c.rel: g[0].rel for g in duplicates for c in g[1:] if c.split != g[0].split}
        rejected += [(c, f"duplicate of {drop[c.rel]}") for c, _ in accepted if c.rel in drop]
        accepted = [(c, r) for c, r in accepted if c.rel not in drop]
        notes.append(f"dropped {len(drop)} copies of files already in an earlier split")
    elif duplicates and not cfg.allow_duplicates:
        out = cfg.out
        listing = out.parent / f"{out.name}.duplicates.txt"
        atomic_write(listing, "".join(" = ".join(f"{c.split}:{c.rel}" for c in g) + "\n"
                                   for g in duplicates))
        # One line of bounded length: the first few, the whole list in the file.
        first = duplicates[0]
        example = " = ".join(c.rel[-80:] for c in first[:3]) + (f" and {len(first) - 3} more copies"
                                                               if len(first) > 3 else "")
        raise UserError(f"{len(duplicates)} identical files are in more than one split "
                        f"(e.g. {example}; all in {listing}); use --dedupe to drop the later "
                        f"copies or --allow-duplicates to keep them")
    return accepted, rejected, duplicates


def write_beside_shards(folder: Path, manifest: dict, rejected: Iterable[tuple[Candidate, str]]) -> None:
    """The files beside a build's shards: ``rejects.csv``, TFDS's metadata and the manifest."""
    write_rejects(folder / REJECTS, rejected)
    write_tfds_metadata(folder, manifest)
    atomic_json(folder / MANIFEST, manifest)


def build_mb(cfg: RecordsConfig, images: int) -> float:
    """Roughly the space a build of ``images`` needs at its peak: the encoded
    images twice (parked while splits are drawn, then in the shards), at the
    size of raw uint8 (PNG of an X-ray is seldom smaller than half of it)."""
    return 2 * images * cfg.image_size ** 2 * (1 if cfg.channels in ("auto", "1") else 3) / 2 ** 20


def publish(tmp: Path, out: Path) -> None:
    """Moves the finished build into place; an old OUT is replaced only now."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    if out.exists():
        old = out.parent / f".{out.name}.partial-old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def make_manifest(cfg, layout, root, labels, channels, accepted, rejected, shards, shard_of,
                  duplicates, near_count, near_pairs, notes, seconds) -> dict:
    """The manifest: everything needed to read, trust and rebuild the records."""
    counts: dict[str, dict[str, int]] = {s: {k: 0 for k in labels} for s in shards}
    for candidate, _ in accepted:
        counts[candidate.split][candidate.class_name] += 1
    return {
        "format": FORMAT,
        "name": cfg.name,
        "engine_version": engine.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": cfg.command,
        "config": cfg.to_json(),
        "source": {"folder": str(root.resolve()), "layout": layout, "recipe": cfg.recipe},
        "label_map": labels,
        "label_convention": "classes sorted alphabetically as Keras flow_from_directory does; "
                            "the model's sigmoid output is P(class with label 1)",
        "image_size": [cfg.image_size, cfg.image_size],
        "channels": channels,
        "encoding": cfg.encoding,
        "resize": cfg.resize,
        "splits": {s: {"count": sum(counts[s].values()), "per_class": counts[s], "shards": shards[s]}
                   for s in shards},
        "rejects": len(rejected),
        "duplicates_across_splits": [[f"{c.split}:{c.rel}" for c in g] for g in duplicates],
        "near_duplicates": {"count": near_count, "pairs": near_pairs},
        "notes": notes,
        "seconds": round(seconds, 2),
        "images_per_second": round((len(accepted) + len(rejected)) / max(seconds, 1e-9), 1),
        "examples": [{"id": c.rel, "split": c.split, "class": c.class_name,
                      "label": labels[c.class_name], "patient": c.patient, "source": c.source,
                      "path": str(c.path.resolve()), "sha256": r.sha256, "shard": shard_of[r.index],
                      "source_size": list(r.source_size), "source_mode": r.source_mode}
                     for c, r in sorted(accepted, key=lambda e: (SPLITS.index(e[0].split), e[0].rel))],
    }


def write_rejects(path: Path, rejected: Iterable[tuple[Candidate, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "split", "class", "reason"])
        for candidate, reason in sorted(rejected, key=lambda r: r[0].rel):
            writer.writerow([candidate.rel, candidate.split, candidate.class_name, reason])
