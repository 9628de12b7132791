"""Small image files and source folders made on the fly for tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import keras
import numpy as np
from PIL import Image


def gray(seed: int, height: int = 40, width: int = 48) -> np.ndarray:
    """A distinct grayscale image: smooth gradient plus seeded noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width)[None, :] + np.linspace(0, 40, height)[:, None]
    return np.clip(ramp + rng.integers(0, 50, (height, width)), 0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def class_folder(root: Path, counts: dict[str, int], seed: int = 0, split: str | None = None,
                 pattern: str = "{cls}-{i}.png", per_patient: int = 1) -> Path:
    """Writes root/[split/]cls/<pattern> for each class."""
    base = root / split if split else root
    offset = seed * 10_000
    for ci, (cls, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            name = pattern.format(cls=cls, i=i, patient=f"{cls}{i // per_patient}", source=f"s{i % 3}")
            save(base / cls / name, gray(offset + ci * 1000 + i))
    return root


def split_folder(root: Path, counts: dict[str, dict[str, int]], **kwargs) -> Path:
    """root/{split}/{class}/*.png with distinct images everywhere."""
    for si, (split, per_class) in enumerate(counts.items()):
        class_folder(root, per_class, seed=si + 1, split=split, **kwargs)
    return root


def png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A tiny PNG whose header claims a huge 1-bit image (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
                     + chunk(b"IEND", b""))
    return path


def damage(path: Path, length: int = 64) -> Path:
    """Zeroes ``length`` bytes in the middle of a file (a torn write, a bad disk)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle: middle + length] = bytes(length)
    path.write_bytes(bytes(data))
    return path


def synthetic_records(root: Path, counts: dict[str, int], source_size: int, image_size: int | None = None,
                      **options) -> Path:
    """The embedded generator's X-rays at ``source_size`` px, built into records
    at ``image_size`` (default the same) in ``root/records``."""
    from engine.config import RecordsConfig
    from engine.data import records, synthetic

    synthetic.generate(root / "images", image_size=source_size, counts=counts, workers=0)
    records.build(RecordsConfig(src=root / "images", out=root / "records", image_size=image_size or source_size,
                                workers=0, **options), quiet=True)
    return root / "records"



class Killed(Exception):
    """What ``KillAtEpoch`` raises."""


class KillAtEpoch(keras.callbacks.Callback):
    """Stops the process' training as a kill would, after ``epoch`` epochs were checkpointed."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Killed()
