"""The embedded dataset: synthetic chest X-rays generated and built into records
once, cached in the user's cache folder, used whenever no RECORDS are given
(``engine.study.inputs.records_folder``, above training, is where a command
turns "no RECORDS" into these records)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from engine.config import RecordsConfig
from engine.data.manifest import MANIFEST
from engine.io import FolderLock, cache_dir

# Bump when the generator's output changes, so stale caches are not reused
# (2: denser opacities, engine.data.drawing._sample_disease).
SYNTHETIC_VERSION = 2


def synthetic_root(seed: int = 0) -> Path:
    """Cache folder of the synthetic set of ``seed``: ``images/`` and ``records-<size>/``."""
    return cache_dir() / f"synthetic-v{SYNTHETIC_VERSION}-seed{seed}"


def records_folder(image_size: int, seed: int = 0, subset: tuple[int, int, int] | None = None) -> Path:
    """Where the records of the synthetic set at ``image_size`` (or of its
    ``subset``: train, val, test images) are cached."""
    name = f"records-{image_size}" + ("" if subset is None else "-" + "-".join(map(str, subset)))
    return synthetic_root(seed) / name


def synthetic_records(image_size: int = 299, seed: int = 0, quiet: bool = False,
                      workers: int | None = None, subset: tuple[int, int, int] | None = None) -> tuple[Path, bool]:
    """Records of the synthetic set at ``image_size`` (all of it, or a seeded,
    stratified ``subset``), built on first use.

    Returns:
        (records folder, whether it was built now).
    """
    root = synthetic_root(seed)
    out = records_folder(image_size, seed, subset)
    if (out / MANIFEST).is_file():
        return out, False
    # Several processes may start at once without records (the tasks of a job
    # array): one builds, the others wait for it.
    lock = FolderLock(root.parent / f".{root.name}.build-lock")
    waited = False
    while not lock.acquire():
        if not waited and not quiet:
            print(f"waiting for another process building the embedded set in {root}", file=sys.stderr, flush=True)
        waited = True
        time.sleep(1.0)
    try:
        if not (out / MANIFEST).is_file():
            build(root, out, image_size, seed, quiet, workers, subset)
            return out, True
        return out, False
    finally:
        lock.release()


def build(root: Path, out: Path, image_size: int, seed: int, quiet: bool, workers: int | None,
          subset: tuple[int, int, int] | None = None) -> None:
    """Generates the images (once, at full size) and their records at ``image_size``."""
    from engine.data import records, synthetic

    images = root / "images"
    if not (images / ".complete").is_file():
        # The images are generated at full size once; every image size is
        # resized from them, as a real folder would be.
        shutil.rmtree(images, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        from engine.progress import progress

        total = sum(synthetic.DEFAULT_COUNTS.values())
        with progress(total, "Generating synthetic X-rays", "images", quiet=quiet) as advance:
            synthetic.generate(images, seed=seed, workers=workers, on_progress=advance)
        (images / ".complete").touch()
    cfg = RecordsConfig(src=images, out=out, image_size=image_size, seed=seed, workers=workers, subset=subset,
                        patient_pattern=synthetic.FILENAME_PATTERN,
                        source_pattern=synthetic.FILENAME_PATTERN,
                        # Shrinking the generated 299-px images with nearest would
                        # alias away the faint opacities that carry the label.
                        resize="area" if image_size != 299 else "nearest",
                        command=f"(embedded synthetic set, seed {seed}, {image_size} px)")
    records.build(cfg, quiet=quiet)


def embedded_records(image_size: int, subset: tuple[int, int, int] | None = None) -> Path | None:
    """The embedded set's records at ``image_size`` if they are built, else None."""
    out = records_folder(image_size, subset=subset)
    return out if (out / MANIFEST).is_file() else None


def records_or_embedded(records: Path | None, image_size: int, quiet: bool = False,
                        subset: tuple[int, int, int] | None = None) -> Path:
    """``records``, or the embedded set's records at ``image_size`` (of its
    ``subset``) when none are given."""
    if records is not None:
        return records
    return synthetic_records(image_size=image_size, quiet=quiet, subset=subset)[0]
