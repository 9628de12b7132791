"""Split replicates: K train/val splits drawn again from one records folder.

One train/val split is one draw of many: a setting that wins on it may lose on
another. A sweep with ``--splits K`` trains every setting on K splits drawn
from the *pool* of the records' train and val examples (the test split is
never part of any), and compares settings across them with a variance that
counts the split (Nadeau and Bengio's corrected t needs ``val_train_ratio``).

``draw`` says which examples each split holds (a ``Membership``); ``write``
turns one membership into a records folder that training reads as if
``engine build-records`` had built it, copying the pool's serialized examples
and pointing at the pool's own test shards.

Every split keeps each patient on one side (the leakage unit is the patient
when known, else the single file, as in ``engine.data.splits.group_key``),
follows the pool's class shares, and depends only on the pool's ids, patients
and classes and on (count, mode, sizes, seed): never on file or manifest order.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import json
import math
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.config import SPLIT_MODES, SPLITS
from engine.data.manifest import MANIFEST, shard_paths
from engine.data.splits import stable_rng, stratified_counts
from engine.errors import UserError
from engine.io import atomic_json

# The splits a replicate is drawn from; the test split stays as it is.
POOL = ("train", "val")
MEMBERS = "members.json"
# Size cap of one written shard: a split of a few thousand 299 px PNGs fits in a
# handful, and shards are read in parallel.
SHARD_MB = 64
# A partial folder of another machine (its process cannot be asked whether it
# lives) is left alone until it is this old.
STALE_SECONDS = 3600


@dataclass(frozen=True)
class Membership:
    """The examples of one split replicate.

    Attributes:
        index: the split's number, 1..K.
        train: the ids (``manifest["examples"][i]["id"]``) of its train examples, sorted.
        val: the ids of its val examples, sorted.
        per_class: images per class, ``{"train": {class: n}, "val": {class: n}}``.
        mode: how it was drawn (``SPLIT_MODES``).
        seed: the seed it was drawn with.
    """

    index: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    per_class: dict
    mode: str = "holdout"
    seed: int = 0

    @property
    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON of the two id lists: names the membership."""
        text = json.dumps({"train": list(self.train), "val": list(self.val)}, sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> dict:
        """Counts and digest (the id lists go in the written folder's ``members.json``)."""
        return {"index": self.index, "train": len(self.train), "val": len(self.val),
                "per_class": self.per_class, "sha256": self.digest}


@dataclass(frozen=True)
class _Pool:
    """The pool's groups laid out per class: the input of every draw."""

    classes: tuple[str, ...]         # every class of the pool's examples, sorted
    lines: dict                      # class -> group keys (sorted) of the groups whose majority it is
    sizes: dict                      # class -> np.ndarray of those groups' image counts
    ids: dict                        # group key -> its example ids
    class_of: dict                   # example id -> class
    own_val: int                     # images of the records' own val split


def _group_key(example: dict) -> str:
    # The same rule as engine.data.splits.group_key, on a manifest entry.
    patient = example.get("patient")
    return f"patient:{patient}" if patient else f"file:{example['id']}"


def _pool(manifest: dict) -> _Pool:
    examples = [e for e in manifest["examples"] if e.get("split") in POOL]
    if not examples:
        raise UserError("the records have no train or val examples to draw splits from; "
                        "build them with `engine build-records`")
    groups: dict[str, list[dict]] = collections.defaultdict(list)
    for e in examples:
        groups[_group_key(e)].append(e)
    lines: dict[str, list[str]] = collections.defaultdict(list)
    for key in sorted(groups):
        tally = collections.Counter(e["class"] for e in groups[key])
        # The group's majority class; a tie goes to the first class by name (not by file order).
        lines[min(tally, key=lambda c: (-tally[c], c))].append(key)
    return _Pool(
        classes=tuple(sorted({e["class"] for e in examples})),
        lines=dict(lines),
        sizes={c: np.array([len(groups[k]) for k in keys], dtype=np.int64) for c, keys in lines.items()},
        ids={k: sorted(e["id"] for e in members) for k, members in groups.items()},
        class_of={e["id"]: e["class"] for e in examples},
        own_val=sum(e["split"] == "val" for e in examples),
    )


def draw(manifest: dict, count: int, mode: str = "holdout", sizes: tuple[int, int] | None = None,
         seed: int = 0) -> list[Membership]:
    """Draws ``count`` train/val splits from the pool of the records' train and val examples.

    Every split is grouped (no patient, or file without one, on both sides),
    stratified by class and seeded. Groups are stratified by their majority
    class: each class's groups are laid end to end on that class's line.

    ``holdout`` (K repeated hold-outs): split k shuffles each class's groups
    with a generator keyed by (seed, k, class), so split k is the same
    whatever K. Each group goes to the segment of the line its midpoint falls
    in: the class's val target first, then its train target, then unused.
    Without ``sizes`` val has the size of the records' own val split and
    train the rest of the pool; with ``sizes=(TRAIN, VAL)`` the targets are
    those, and the rest of the pool is unused in that split. The per-class
    targets follow the pool's class shares (largest remainder).

    Tolerance (holdout): since whole groups move, each line's count before a
    boundary is within half its largest group's image count of the boundary.
    So each class's val count is within ``g/2`` of its target and its train
    count within ``g`` (``g/2`` without ``sizes``), ``g`` the largest group
    of that class (counted on its line: the images of a patient whose images
    span two classes count towards the patient's majority class).

    ``kfold``: each class's groups, largest first (ties in an order keyed by
    (seed, K, class)), go one by one to the fold that holds the fewest of that
    class so far, so every pool example is in exactly one split's val, and
    each fold's count of a class is within its largest group of the class's
    mean over folds. Split k's train is the pool minus fold k.

    Args:
        manifest: the records' manifest (``engine.data.manifest.load_manifest``).
        count: the number of splits K (at least 2).
        mode: one of ``SPLIT_MODES``.
        sizes: (TRAIN, VAL) images per split, holdout only.
        seed: the seed of every choice.

    Returns:
        the K memberships, ``index`` 1..K.

    Raises:
        UserError: (one line) when the splits cannot be drawn.
    """
    _check_request(count, mode, sizes)
    pool = _pool(manifest)
    patients = {c: len(pool.lines.get(c, ())) for c in pool.classes}
    if mode == "kfold":
        members = _kfold_members(pool, patients, count, mode, seed)
    else:
        members = _holdout_members(pool, patients, count, mode, sizes, seed)
    _check_members(members, pool, count, mode)
    return members


def _check_request(count, mode: str, sizes) -> None:
    """Refuses a count, mode or sizes ``draw`` cannot take, before the pool is read."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise UserError(f"split replicates need at least 2 splits, not {count}; "
                        f"--splits 1 trains on the records' own split")
    if mode not in SPLIT_MODES:
        raise UserError(f"--split-mode must be one of {', '.join(SPLIT_MODES)}, not {mode!r}")
    if mode == "kfold" and sizes is not None:
        raise UserError("--split-sizes cannot be given with kfold: K folds set the sizes (val is 1/K of the "
                        "pool); leave them out, or use holdout for fixed sizes")


def _kfold_members(pool: _Pool, patients: dict, count: int, mode: str, seed: int) -> list[Membership]:
    """The ``count`` splits of kfold: split k's val is fold k, its train the other folds."""
    short = [c for c in pool.classes if patients[c] < count]
    if short:
        raise UserError(f"class {short[0]} has {patients[short[0]]} patients (or images without one) in the "
                        f"pool of train and val, fewer than the {count} folds; ask for at most "
                        f"--splits {patients[short[0]]} or use --split-mode holdout")
    folds = _kfold(pool, count, seed)
    return [_membership(pool, k, [i for j, fold in enumerate(folds) if j != k - 1 for i in fold],
                        folds[k - 1], mode, seed) for k in range(1, count + 1)]


def _holdout_members(pool: _Pool, patients: dict, count: int, mode: str, sizes, seed: int) -> list[Membership]:
    """The ``count`` splits of holdout, at ``sizes`` or else the records' own val size."""
    short = [c for c in pool.classes if patients[c] < 2]
    if short:
        raise UserError(f"class {short[0]} has {patients[short[0]]} patient(s) (or images without one) in the "
                        f"pool of train and val; a hold-out split needs at least 2, one on each side")
    total = len(pool.class_of)
    if sizes is None:
        if pool.own_val == 0:
            raise UserError("the records have no val split, so a hold-out split has no size to follow; "
                            "give --split-sizes TRAIN,VAL or use --split-mode kfold")
        train, val = total - pool.own_val, pool.own_val
    else:
        train, val = _check_sizes(sizes, total)
    return [_holdout(pool, k, train, val, sizes is None, mode, seed) for k in range(1, count + 1)]


def _check_members(members: list[Membership], pool: _Pool, count: int, mode: str) -> None:
    """Refuses splits with a class missing from their train or val."""
    for m in members:
        for part in POOL:
            empty = [c for c in pool.classes if not m.per_class[part][c]]
            if empty:
                fix = "ask for fewer splits" if mode == "kfold" else "give larger split sizes"
                raise UserError(f"split {m.index} of {count} has no {empty[0]} images in its {part}: the pool's "
                                f"{empty[0]} patients are too few or too large for it; {fix}")


def _check_sizes(sizes, total: int) -> tuple[int, int]:
    try:
        train, val = (int(n) for n in sizes)
    except (TypeError, ValueError):
        raise UserError(f"--split-sizes must be two counts TRAIN,VAL, not {sizes!r}") from None
    if train < 1 or val < 1:
        raise UserError(f"--split-sizes needs at least 1 train and 1 val image, not {train},{val}")
    if train + val > total:
        raise UserError(f"--split-sizes {train},{val} asks for {train + val} images but the pool of train and "
                        f"val has {total}; ask for at most {total} in all")
    return train, val


def _holdout(pool: _Pool, k: int, train: int, val: int, rest: bool, mode: str, seed: int) -> Membership:
    """Split k: each class's shuffled groups go to val, train or unused by their midpoints."""
    line_sizes = {c: int(s.sum()) for c, s in pool.sizes.items()}
    val_targets = stratified_counts(line_sizes, val)
    # The end of train on each line: the whole line, or the targets of train and val together
    # (one rounding, so the train targets sum to TRAIN).
    ends = line_sizes if rest else stratified_counts(line_sizes, train + val)
    val_ids, train_ids = [], []
    for c in sorted(pool.lines):
        keys, sizes = pool.lines[c], pool.sizes[c]
        order = stable_rng(seed, "holdout", str(k), c).permutation(len(keys))
        laid = sizes[order]
        # Twice each midpoint against twice each boundary: integers, no rounding. A midpoint on a
        # boundary goes to the later segment, as in engine.data.splits.grouped_split.
        twice_mid = 2 * np.cumsum(laid) - laid
        bounds = [2 * val_targets[c], 2 * max(val_targets[c], ends[c])]
        segment = np.searchsorted(bounds, twice_mid, side="right")
        for i, s in zip(order, segment):
            if s < 2:
                (val_ids if s == 0 else train_ids).extend(pool.ids[keys[i]])
    return _membership(pool, k, train_ids, val_ids, mode, seed)


def _kfold(pool: _Pool, count: int, seed: int) -> list[list[str]]:
    """The K folds' ids: per class, largest groups first, each to the fold with the fewest so far."""
    folds: list[list[str]] = [[] for _ in range(count)]
    for c in sorted(pool.lines):
        keys, sizes = pool.lines[c], pool.sizes[c]
        rng = stable_rng(seed, "kfold", str(count), c)
        tie = rng.permutation(len(keys))
        # Which fold wins a tie of loads: random per class, so no fold collects every remainder.
        heap = [(0, int(p), j) for j, p in enumerate(rng.permutation(count))]
        heapq.heapify(heap)
        for i in np.lexsort((tie, -sizes)):
            load, priority, j = heapq.heappop(heap)
            folds[j].extend(pool.ids[keys[i]])
            heapq.heappush(heap, (load + int(sizes[i]), priority, j))
    return folds


def _membership(pool: _Pool, k: int, train: list[str], val: list[str], mode: str, seed: int) -> Membership:
    per_class = {}
    for part, ids in (("train", train), ("val", val)):
        tally = collections.Counter(pool.class_of[i] for i in ids)
        per_class[part] = {c: tally[c] for c in pool.classes}
    return Membership(k, tuple(sorted(train)), tuple(sorted(val)), per_class, mode, seed)


def val_train_ratio(members: list[Membership]) -> float:
    """Mean val size over mean train size: the n_test/n_train of Nadeau and
    Bengio's corrected resampled t (the variance of the mean difference over
    K splits is inflated by ``1/K + ratio`` instead of ``1/K``)."""
    if not members:
        raise ValueError("val_train_ratio needs at least one membership")
    return float(np.mean([len(m.val) for m in members]) / np.mean([len(m.train) for m in members]))


def write(records: Path, manifest: dict, member: Membership, out: Path) -> Path:
    """Writes one split replicate as a records folder at ``out``; returns ``out``.

    ``out`` holds the member's train and val examples as shards of their own
    (the pool's serialized ``tf.train.Example`` bytes, copied, in a seeded
    order), a manifest with the pool's keys (``splits`` and ``examples`` of
    this split; ``split_of`` naming the pool, the index, the digest, mode and
    seed) whose test split lists the pool's own test shards by absolute path,
    and ``members.json`` with the id lists.

    Idempotent: an ``out`` already holding this member (same digest) is
    returned as it is. The folder is built in a hidden sibling and renamed to
    ``out`` at the end, so a killed write leaves no ``out`` that looks
    complete (the next write removes the leftover), and two processes writing
    the same member at once both end with the same valid folder.

    Raises:
        UserError: if ``out`` is something else than a split folder, or the
            pool no longer holds one of the member's examples.
    """
    records, out = Path(records).resolve(), Path(out).absolute()
    digest = member.digest
    if _written(out, digest):
        return out
    _check_replaceable(out)
    pool = {e["id"]: e for e in manifest["examples"] if e.get("split") in POOL}
    for part, ids in (("train", member.train), ("val", member.val)):
        lost = [i for i in ids if i not in pool]
        if lost:
            raise UserError(f"{lost[0]} of split {member.index}'s {part} is not a train or val example of "
                            f"{records} ({len(lost)} such): the records changed since the splits were "
                            f"drawn; draw them again in a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_partials(out)
    tmp = out.parent / f".{out.name}.partial-{_tag()}"
    tmp.mkdir()
    try:
        shards, shard_of = _copy_examples(records, manifest, member, tmp, digest)
        atomic_json(tmp / MANIFEST, _manifest(records, manifest, member, shards, shard_of))
        atomic_json(tmp / MEMBERS, {"index": member.index, "sha256": digest,
                                    "train": list(member.train), "val": list(member.val)})
        if (records / "rejects.csv").is_file():  # the pool's: the manifest's rejects count refers to it
            shutil.copyfile(records / "rejects.csv", tmp / "rejects.csv")
        _publish(tmp, out, digest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _copy_examples(records: Path, manifest: dict, member: Membership, tmp: Path, digest: str
                   ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Copies the member's serialized examples from the pool's shards into
    shards of ``tmp``; returns split -> shard names, and id -> shard."""
    import tensorflow as tf  # only writing reads records: importing this module stays light

    from engine.data.records import shard_name

    wanted = {i: part for part, ids in (("train", member.train), ("val", member.val)) for i in ids}
    files = []
    for split in POOL:
        if split in manifest["splits"]:
            names = manifest["splits"][split]["shards"]
            files += zip(names, shard_paths(records, split, manifest))
    # Only the shards the manifest says hold a wanted example (all of them if it does not say).
    holding = {e.get("shard") for e in manifest["examples"] if e["id"] in wanted}
    if holding <= {name for name, _ in files}:
        files = [(name, path) for name, path in files if name in holding]
    spec = {"image/source_id": tf.io.FixedLenFeature([], tf.string, default_value="")}
    where: dict[str, tuple[int, int]] = {}
    with open(tmp / "spool.bin", "w+b") as spool:
        # The copies wait in a file on disk, not in memory, until their order is known.
        for _, path in files:
            ds = tf.data.TFRecordDataset(path).batch(256).map(
                lambda s: (s, tf.io.parse_example(s, spec)["image/source_id"]))
            try:
                for data, ids in ds.as_numpy_iterator():
                    for serialized, raw in zip(data, ids):
                        i = raw.decode()
                        if i in wanted and i not in where:
                            where[i] = (spool.tell(), len(serialized))
                            spool.write(serialized)
            except tf.errors.OpError as err:
                message = err.message.splitlines()[0] if err.message else type(err).__name__
                raise UserError(f"{path} cannot be read ({message}); rebuild the records with "
                                f"`engine build-records`") from None
        lost = [i for i in sorted(wanted) if i not in where]
        if lost:
            raise UserError(f"{lost[0]} of split {member.index} is in {records}'s manifest but not in its "
                            f"shards ({len(lost)} such): the records changed; rebuild them")
        shards: dict[str, list[str]] = {}
        shard_of: dict[str, str] = {}
        for part, ids in (("train", member.train), ("val", member.val)):
            # A seeded order so that every shard mixes the classes (the ids are sorted).
            order = [ids[j] for j in stable_rng(0, "resample-shards", digest, part).permutation(len(ids))]
            size = sum(where[i][1] for i in order)
            count = max(1, min(len(order), math.ceil(size / (SHARD_MB * 2 ** 20))))
            shards[part] = [shard_name(manifest["name"], part, j, count) for j in range(count)]
            for name, chunk in zip(shards[part], np.array_split(np.arange(len(order)), count)):
                with tf.io.TFRecordWriter(str(tmp / name)) as writer:
                    for j in chunk:
                        offset, length = where[order[j]]
                        spool.seek(offset)
                        writer.write(spool.read(length))
                        shard_of[order[j]] = name
    (tmp / "spool.bin").unlink()
    return shards, shard_of


def _manifest(records: Path, manifest: dict, member: Membership, shards: dict[str, list[str]],
              shard_of: dict[str, str]) -> dict:
    """The pool's manifest with this split's splits and examples (and the pool's test split)."""
    labels = manifest["label_map"]
    part_of = {i: part for part, ids in (("train", member.train), ("val", member.val)) for i in ids}
    examples = []
    for e in manifest["examples"]:
        if e["id"] in part_of and e.get("split") in POOL:
            examples.append({**e, "split": part_of[e["id"]], "shard": shard_of[e["id"]]})
        elif e.get("split") == "test":  # read from the pool's own shards, where they are
            examples.append({**e, "shard": str(records / e["shard"])} if e.get("shard") else dict(e))
    examples.sort(key=lambda e: (SPLITS.index(e["split"]), e["id"]))
    splits = {}
    for part in POOL:
        tally = collections.Counter(e["class"] for e in examples if e["split"] == part)
        splits[part] = {"count": sum(tally.values()), "per_class": {c: tally[c] for c in labels},
                        "shards": shards[part]}
    if "test" in manifest["splits"]:
        test = manifest["splits"]["test"]
        splits["test"] = {**test, "shards": [str(records / name) for name in test["shards"]]}
    out = dict(manifest)
    out.update({
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "splits": splits,
        "examples": examples,
        "notes": list(manifest.get("notes", [])) + [
            f"split replicate {member.index} ({member.mode}, seed {member.seed}) drawn from the train and val "
            f"examples of {records}; its test split is that folder's own"],
        "split_of": {"records": str(records), "name": manifest.get("name"), "index": member.index,
                     "sha256": member.digest, "mode": member.mode, "seed": member.seed,
                     "train": len(member.train), "val": len(member.val),
                     "pool": {s: manifest["splits"].get(s, {}).get("count", 0) for s in POOL},
                     "members": MEMBERS},
    })
    where = {e["id"]: e["split"] for e in examples}
    if "duplicates_across_splits" in manifest:
        # The pool's groups of identical files, with this split's splits: those still across splits.
        groups = []
        for group in manifest["duplicates_across_splits"]:
            named = [(where[i], i) for i in (entry.split(":", 1)[-1] for entry in group) if i in where]
            if len({s for s, _ in named}) > 1:
                groups.append([f"{s}:{i}" for s, i in named])
        out["duplicates_across_splits"] = groups
    if isinstance(manifest.get("near_duplicates"), dict):
        listed = manifest["near_duplicates"].get("pairs", [])
        pairs = [{**p, "a_split": where[p["a"]], "b_split": where[p["b"]]} for p in listed
                 if p.get("a") in where and p.get("b") in where and where[p["a"]] != where[p["b"]]]
        out["near_duplicates"] = {"count": len(pairs), "pairs": pairs}
        if manifest["near_duplicates"].get("count", 0) > len(listed):
            out["near_duplicates"]["note"] = (f"among the {len(listed)} pairs the pool listed, of "
                                              f"{manifest['near_duplicates']['count']} it found")
    return out


def _written(out: Path, digest: str) -> bool:
    """Whether ``out`` is a finished split folder of the membership ``digest``."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    split_of = manifest.get("split_of") if isinstance(manifest, dict) else None
    return isinstance(split_of, dict) and split_of.get("sha256") == digest and (out / MEMBERS).is_file()


def _check_replaceable(out: Path) -> None:
    """An existing ``out`` may be replaced only if it is a split folder (or empty):
    never a folder of the user's."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not out.is_symlink():
        if not any(out.iterdir()):
            return
        try:
            manifest = json.loads((out / MANIFEST).read_text())
            if isinstance(manifest, dict) and isinstance(manifest.get("split_of"), dict):
                return
        except (OSError, ValueError):
            pass
    raise UserError(f"{out} exists and is not a split replicate's folder (no split_of in its manifest); "
                    f"move it away or choose another folder")


def _tag() -> str:
    # Host, process and a random part: two writers (or threads) never share a partial folder.
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


PARTIAL = re.compile(r"(?:old-)?(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]+")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid at all)
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _clean_partials(out: Path) -> list[Path]:
    """Removes what killed writes of ``out`` left: partial folders of dead
    processes of this machine, and any other partial folder older than
    ``STALE_SECONDS`` (a live writer of another machine is left alone)."""
    removed = []
    prefix = f".{out.name}.partial-"
    for path in out.parent.glob(f"{prefix}*"):
        match = PARTIAL.fullmatch(path.name[len(prefix):])
        if match and match["host"] == socket.gethostname():
            stale = not _alive(int(match["pid"]))
        else:
            try:
                stale = time.time() - path.stat().st_mtime > STALE_SECONDS
            except OSError:
                continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _publish(tmp: Path, out: Path, digest: str) -> None:
    """Renames the finished ``tmp`` to ``out``, replacing a split folder of
    another membership; a writer that lost the race to one of the same
    membership discards its own copy."""
    os.chmod(tmp, 0o755)
    old = None
    if out.exists():
        if _written(out, digest):  # another writer finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = out.parent / f".{out.name}.partial-old-{_tag()}"
        try:
            os.rename(out, old)
        except FileNotFoundError:  # another writer moved it away first
            old = None
    try:
        os.rename(tmp, out)  # fails on a non-empty out: another writer renamed its copy first
    except OSError:
        if not _written(out, digest):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
