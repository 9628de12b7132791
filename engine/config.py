"""The engine's typed configuration: one dataclass per command, every CLI option
one field, written next to every output so any result can be re-run exactly."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import UserError

SPLITS = ("train", "val", "test")
RESIZE_METHODS = ("nearest", "bilinear", "area")
ENCODINGS = ("png", "raw", "jpeg")
SPLIT_BY = ("patient", "source")
LAYOUTS = ("auto", "split-class", "class", "list")


@dataclass(frozen=True)
class RecordsConfig:
    """How ``engine build-records`` turns an image folder into TFRecord shards.

    Attributes:
        src: the image folder (or the folder a list file's paths are relative to).
        out: the records folder to create.
        recipe: a recipe name under ``datasets/`` or a path to a recipe TOML.
        layout: ``auto`` detects ``split-class`` (SRC/split/class/*), ``class``
            (SRC/class/**) or ``list`` (COVIDx-style list files).
        list_files: list files ``patientId filename label source`` (layout list).
        classes: ``SRC=dst`` pairs selecting, renaming and merging classes.
        fractions: train/val/test fractions for splits the engine makes.
        split_by: ``patient`` (grouped by patient when known) or ``source``
            (leave ``test_source`` out as the test split).
        test_source: the source held out with ``split_by="source"``.
        resplit: pool the folder's own splits and split again without leakage.
        patient_pattern / source_pattern: regexes with a named group
            ``patient`` / ``source``, searched in each file name.
        subset: images per split (train, val, test), drawn stratified and seeded.
        image_size: side of the square images written.
        resize: interpolation for that resize (nearest is what the paper's
            ``flow_from_directory`` used).
        encoding: ``png`` (lossless, smaller), ``raw`` (uint8 bytes) or ``jpeg``.
        channels: ``auto`` keeps 1 channel when every image is grayscale.
        seed: seed of every random choice (splits, subset, shard order).
        workers: decode processes; None = all cores, 0 = in-process.
        allow_duplicates: keep identical files found in two splits.
        dedupe: drop the later copies (val/test) of identical files instead.
        overwrite: replace an existing OUT (atomically, at the end).
        name: dataset name used in shard file names.
        shard_mb: size cap of one shard.
        min_shards: shards per split at least (parallel reads), if it has examples enough.
        max_pixels: larger images are rejected (decompression-bomb guard).
        near_duplicate_bits: Hamming distance (of 256) under which two images
            in different splits are reported as near-duplicates.
    """

    src: Path | None = None
    out: Path | None = None
    recipe: str | None = None
    layout: str = "auto"
    list_files: tuple[Path, ...] = ()
    classes: str | None = None
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_by: str = "patient"
    test_source: str | None = None
    resplit: bool = False
    patient_pattern: str | None = None
    source_pattern: str | None = None
    subset: tuple[int, int, int] | None = None
    image_size: int = 299
    resize: str = "nearest"
    encoding: str = "png"
    channels: str = "auto"
    seed: int = 0
    workers: int | None = None
    allow_duplicates: bool = False
    dedupe: bool = False
    overwrite: bool = False
    name: str = "chestxray"
    shard_mb: float = 100.0
    min_shards: int = 4
    max_pixels: int = 64_000_000
    near_duplicate_bits: int = 12
    command: str = field(default="", compare=False)

    def validate(self) -> "RecordsConfig":
        """Checks every field; raises UserError with a one-line message."""
        if self.layout not in LAYOUTS:
            raise UserError(f"--layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if self.resize not in RESIZE_METHODS:
            raise UserError(f"--resize must be one of {', '.join(RESIZE_METHODS)}, not {self.resize!r}")
        if self.encoding not in ENCODINGS:
            raise UserError(f"--encoding must be one of {', '.join(ENCODINGS)}, not {self.encoding!r}")
        if self.channels not in ("auto", "1", "3"):
            raise UserError(f"--channels must be auto, 1 or 3, not {self.channels!r}")
        if self.split_by not in SPLIT_BY:
            raise UserError(f"--split-by must be one of {', '.join(SPLIT_BY)}, not {self.split_by!r}")
        if not 32 <= self.image_size <= 4096:
            raise UserError(f"--image-size must be between 32 and 4096, not {self.image_size}")
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions) or self.fractions[0] <= 0 \
                or abs(sum(self.fractions) - 1) > 1e-6:
            raise UserError(f"--split needs three fractions summing to 1 with train > 0, "
                            f"not {','.join(map(str, self.fractions))}")
        if self.subset is not None and (len(self.subset) != 3 or any(n < 0 for n in self.subset)
                                        or self.subset[0] <= 0):
            raise UserError("--subset needs three counts train,val,test (e.g. 500,100,100)")
        if self.workers is not None and self.workers < 0:
            raise UserError(f"--workers must be >= 0, not {self.workers}")
        if self.shard_mb <= 0 or self.min_shards < 1:
            raise UserError("--shard-mb must be > 0 and --min-shards >= 1")
        if self.allow_duplicates and self.dedupe:
            raise UserError("--allow-duplicates and --dedupe exclude each other: pick one")
        return self

    def to_json(self) -> dict:
        """A JSON-ready dict of every field (paths as strings)."""
        def plain(value):
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """``"500,100,100"`` -> (500, 100, 100), with a one-line error otherwise."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"{what} takes comma-separated whole numbers, not {text!r}") from None


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """``"0.8,0.1,0.1"`` -> (0.8, 0.1, 0.1), with a one-line error otherwise."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"{what} takes comma-separated numbers, not {text!r}") from None


def dump(config: RecordsConfig, path: Path) -> None:
    """Writes the resolved config as JSON."""
    path.write_text(json.dumps(config.to_json(), indent=2) + "\n")
