"""Reading one source image safely and turning it into the bytes a record holds.

Runs in worker processes: imports only Pillow and numpy (never TensorFlow, so
spawned workers start in a fraction of a second).

Whatever can be read correctly is converted: 16-bit scaled to 8, alpha dropped,
palette and CMYK converted, EXIF rotation applied. Everything else comes back
as a rejection with a one-line reason; nothing raises.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

RESAMPLE = {
    # PIL's own filters, as Keras' load_img uses them: "nearest" is what the
    # paper's flow_from_directory applied; "bilinear" and "area" (box) filter
    # over the whole footprint when shrinking, so they do not alias.
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
}
# RGB files whose channels differ by less than this (JPEG chroma noise) are
# grayscale content stored as colour.
GRAY_MEAN_DIFF = 1.0
GRAY_MAX_DIFF = 24
# Difference hashes at two scales (16 x 16 = 256 bits, 32 x 32 = 1024 bits).
# Chest X-rays share their coarse anatomy, so one coarse hash calls many
# different patients near-duplicates; requiring both scales to agree keeps
# re-encoded, rescaled or re-exposed copies (measured: 94 % of JPEG q70-95,
# 0.5-1x rescale, +-10 % exposure copies) and drops nearly all false pairs
# (3 of 245,000 pairs of different synthetic patients).
HASH_SIDES = (16, 32)


@dataclass(frozen=True)
class Task:
    """What a worker needs to process one file."""

    index: int
    path: str
    image_size: int
    resize: str
    encoding: str
    max_pixels: int


@dataclass(frozen=True)
class Processed:
    """A worker's answer: either ``reason`` (rejected) or the encoded image."""

    index: int
    reason: str | None = None
    sha256: str = ""
    data: bytes = b""
    channels: int = 0
    source_size: tuple[int, int] = (0, 0)
    source_mode: str = ""
    dhash: bytes = b""


def to_8bit(array: np.ndarray) -> np.ndarray:
    """Scales high-bit-depth gray levels to 0-255 by the bit depth in use.

    X-ray PNGs are often 12 bits stored in 16; dividing by 257 would leave them
    nearly black, so the scale is the smallest power of two above the maximum
    (at least 8 bits). Negative values (signed 'I' images) are clipped.
    """
    array = np.clip(array.astype(np.float64), 0, None)
    top = float(array.max()) if array.size else 0.0
    bits = max(8, int(np.ceil(np.log2(top + 1)))) if top > 0 else 8
    return np.round(array * (255.0 / (2 ** bits - 1))).astype(np.uint8)


def normalise_mode(image: Image.Image) -> Image.Image:
    """Converts any mode to ``L`` or ``RGB``."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "LA":
        return image.getchannel("L")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(to_8bit(np.asarray(image)), mode="L")
    if mode == "P":
        # Transparency is dropped like alpha: convert through RGBA only to
        # resolve the palette.
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")  # RGBA, PA, CMYK, YCbCr, LAB, HSV, RGBX, ...


def is_gray(rgb: np.ndarray) -> bool:
    """True when an RGB array is grayscale content (equal channels but for noise)."""
    diff = np.abs(rgb[..., :1].astype(np.int16) - rgb[..., 1:].astype(np.int16))
    return float(diff.mean()) < GRAY_MEAN_DIFF and int(diff.max(initial=0)) <= GRAY_MAX_DIFF


def difference_hash(gray: Image.Image) -> bytes:
    """Perceptual hashes: signs of horizontal gradients at each of HASH_SIDES."""
    parts = []
    for side in HASH_SIDES:
        small = np.asarray(gray.resize((side + 1, side), Image.Resampling.BOX), np.int16)
        parts.append(np.packbits(small[:, 1:] > small[:, :-1]).tobytes())
    return b"".join(parts)


def encode(array: np.ndarray, encoding: str) -> bytes:
    """Encodes an (H, W) or (H, W, 3) uint8 array."""
    if encoding == "raw":
        return np.ascontiguousarray(array).tobytes()
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if encoding == "png":
        # Level 1: X-rays are noisy, higher levels buy a few % of size for 3-5x the time.
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def decode(data: bytes, encoding: str, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of ``encode`` (for converting channels after the fact), (H, W, C) uint8."""
    if encoding == "raw":
        return np.frombuffer(data, np.uint8).reshape(shape)
    array = np.asarray(Image.open(io.BytesIO(data)))
    return array.reshape(array.shape[:2] + (-1,))


def is_dicom(data: bytes) -> bool:
    return data[128:132] == b"DICM"


def load_dicom(data: bytes, max_pixels: int) -> Image.Image:
    """A DICOM radiograph as 8-bit grayscale (needs the ``dicom`` extra).

    The modality and VOI LUTs (window centre/width) are applied as a viewer
    would, then the window is scaled to 0-255; MONOCHROME1 (bright = air) is
    inverted so that every image has air dark, like the rest of the data.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise ValueError("DICOM file: install the dicom extra (pip install 'engine[dicom]')") from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        rows, cols = int(ds.Rows), int(ds.Columns)
        if rows * cols > max_pixels:
            raise ValueError(f"too large: {cols}x{rows} pixels is over --max-pixels {max_pixels}")
        pixels = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for bad files
        raise ValueError(f"unreadable DICOM: {err}") from None
    if pixels.ndim != 2:
        raise ValueError(f"DICOM with {pixels.ndim} dimensions: only single-frame grayscale is supported")
    low, high = float(pixels.min()), float(pixels.max())
    scaled = np.round((pixels - low) * (255.0 / (high - low))) if high > low else np.zeros_like(pixels)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 255 - scaled
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def load(data: bytes, max_pixels: int) -> Image.Image:
    """Opens and fully decodes an image, EXIF rotation applied.

    Raises:
        ValueError: with a one-line reason, for anything unreadable.
    """
    if not data:
        raise ValueError("empty file")
    if is_dicom(data):
        return load_dicom(data, max_pixels)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a bomb
            # guard must refuse at the limit, so the warning becomes an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(f"too large: {width}x{height} pixels is over --max-pixels "
                                 f"{max_pixels} (decompression-bomb guard)")
            image.load()
            return ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(f"too large (decompression-bomb guard): {err}") from None
    except UnidentifiedImageError:
        raise ValueError("not an image Pillow can read") from None
    except (OSError, SyntaxError, EOFError, IndexError, TypeError, struct.error) as err:
        raise ValueError(f"corrupt or truncated image: {err}") from None


def process(task: Task) -> Processed:
    """Reads, converts, resizes, encodes and hashes one file; never raises."""
    try:
        data = Path(task.path).read_bytes()
    except OSError as err:
        return Processed(task.index, reason=f"cannot read: {err.strerror or err}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        image = load(data, task.max_pixels)
        size, mode = image.size, image.mode
        image = normalise_mode(image)
        if image.size != (task.image_size, task.image_size):
            image = image.resize((task.image_size, task.image_size), RESAMPLE[task.resize])
        array = np.asarray(image)
        if array.ndim == 3 and is_gray(array):
            image = image.convert("L")
            array = np.asarray(image)
        gray = image if image.mode == "L" else image.convert("L")
        return Processed(task.index, sha256=digest, data=encode(array, task.encoding),
                         channels=1 if array.ndim == 2 else 3, source_size=size,
                         source_mode=mode, dhash=difference_hash(gray))
    except ValueError as err:
        return Processed(task.index, reason=str(err), sha256=digest)
    except Exception as err:  # noqa: BLE001 - a broken file must never stop a build
        return Processed(task.index, reason=f"unreadable: {type(err).__name__}: {err}", sha256=digest)
