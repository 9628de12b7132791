"""Reading one source image: every bad input is converted or rejected, never raised."""

import io

import numpy as np
import pytest
from PIL import Image

from engine.data import images
from factories import gray, png_bomb, save


def run(path, size=32, encoding="raw", max_pixels=64_000_000):
    return images.process(images.Task(0, str(path), size, "nearest", encoding, max_pixels))


def pixels(result, size=32):
    return images.decode(result.data, "raw", (size, size, result.channels))


def test_grayscale_png_is_resized_and_hashed(tmp_path):
    array = gray(1, 64, 64)
    result = run(save(tmp_path / "a.png", array))
    assert result.reason is None
    assert result.channels == 1
    assert result.source_size == (64, 64) and result.source_mode == "L"
    # Nearest from 64 to 32 keeps every second pixel, as PIL does.
    expected = np.asarray(Image.fromarray(array).resize((32, 32), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(pixels(result)[..., 0], expected)
    assert len(result.dhash) == (16 * 16 + 32 * 32) // 8
    assert len(result.sha256) == 64


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_encoding_is_lossless(tmp_path, encoding):
    array = gray(2, 32, 32)
    result = run(save(tmp_path / "a.png", array), encoding=encoding)
    decoded = images.decode(result.data, encoding, (32, 32, 1))
    np.testing.assert_array_equal(decoded[..., 0], array)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert run(path).reason == "empty file"


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("patient list\n")
    assert run(path).reason == "not an image Pillow can read"


@pytest.mark.parametrize("fmt,suffix", [("PNG", "png"), ("JPEG", "jpg")])
def test_truncated_file(tmp_path, fmt, suffix):
    buffer = io.BytesIO()
    Image.fromarray(gray(3, 128, 128)).save(buffer, format=fmt)
    path = tmp_path / f"cut.{suffix}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    result = run(path)
    assert result.reason is not None and result.reason.startswith("corrupt or truncated")


def test_corrupt_bytes_after_header(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(gray(4, 64, 64)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[60:200] = bytes(140)  # zero the compressed stream
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    assert run(path).reason is not None


def test_sixteen_bit_png_scaled_by_bit_depth(tmp_path):
    # 12-bit data in a 16-bit container, as many X-ray PNGs are.
    array = np.array([[0, 1024], [2048, 4095]], np.uint16).repeat(16, 0).repeat(16, 1)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    assert Image.open(path).mode.startswith("I")
    result = run(path)
    out = pixels(result)[..., 0]
    # 12 bits in use -> scale 255 / 4095.
    assert (out[0, 0], out[0, 31], out[31, 0], out[31, 31]) == (0, 64, 128, 255)
    assert result.channels == 1


def test_to_8bit_full_sixteen_bits():
    out = images.to_8bit(np.array([0, 32768, 65535], np.uint16))
    assert out.tolist() == [0, 128, 255]


def test_rgba_alpha_dropped(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 10, 10, 0
    result = run(save(tmp_path / "a.png", rgba))
    assert result.reason is None and result.channels == 3
    assert pixels(result)[0, 0].tolist() == [200, 10, 10]


def test_gray_rgba_becomes_one_channel(tmp_path):
    rgba = np.stack([gray(5, 32, 32)] * 3 + [np.full((32, 32), 255, np.uint8)], axis=-1)
    result = run(save(tmp_path / "a.png", rgba))
    assert result.channels == 1
    np.testing.assert_array_equal(pixels(result)[..., 0], rgba[..., 0])


def test_palette_png(tmp_path):
    image = Image.fromarray(gray(6, 32, 32)).convert("P")
    path = tmp_path / "p.png"
    image.save(path)
    result = run(path)
    assert result.reason is None and result.source_mode == "P"
    np.testing.assert_array_equal(pixels(result)[..., 0], np.asarray(image.convert("L")))


def test_cmyk_jpeg(tmp_path):
    image = Image.fromarray(gray(7, 32, 32)).convert("CMYK")
    path = tmp_path / "c.jpg"
    image.save(path, quality=95)
    result = run(path)
    assert result.reason is None and result.source_mode == "CMYK"
    assert pixels(result).shape[:2] == (32, 32)


def test_exif_rotation_applied(tmp_path):
    stored = np.zeros((20, 40), np.uint8)
    stored[:, 20:] = 255  # left black, right white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = tmp_path / "r.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    result = run(path, size=40)
    assert result.source_size == (20, 40)  # width, height after rotation
    shown = pixels(result, 40)[..., 0].astype(float)
    # Rotated clockwise, the stored left (black) is on top.
    assert shown[:18].mean() < 30 and shown[22:].mean() > 225


def test_decompression_bomb_header(tmp_path):
    result = run(png_bomb(tmp_path / "bomb.png"))
    assert result.reason is not None and "too large" in result.reason


def test_max_pixels_limit(tmp_path):
    result = run(save(tmp_path / "a.png", gray(8, 64, 64)), max_pixels=64 * 63)
    assert "too large" in result.reason
    assert run(tmp_path / "a.png", max_pixels=64 * 64).reason is None


def test_missing_file(tmp_path):
    assert run(tmp_path / "nope.png").reason.startswith("cannot read")


def test_is_gray_tolerates_jpeg_chroma_noise():
    base = gray(9, 16, 16)
    rgb = np.stack([base, base, base], -1).astype(np.int16)
    rgb[..., 0] += np.random.default_rng(0).integers(-1, 2, (16, 16))
    assert images.is_gray(np.clip(rgb, 0, 255).astype(np.uint8))
    rgb[..., 2] = 0
    assert not images.is_gray(np.clip(rgb, 0, 255).astype(np.uint8))


def write_dicom(path, values, photometric="MONOCHROME2", window=None):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = values.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_monochrome2_and_monochrome1(tmp_path):
    values = np.array([[0, 1000], [2000, 4000]], np.uint16).repeat(16, 0).repeat(16, 1)
    normal = run(write_dicom(tmp_path / "a.dcm", values))
    assert normal.reason is None and normal.channels == 1
    out = pixels(normal)[..., 0]
    assert (out[0, 0], out[0, 31], out[31, 0], out[31, 31]) == (0, 64, 128, 255)
    inverted = run(write_dicom(tmp_path / "b.dcm", values, "MONOCHROME1"))
    out1 = pixels(inverted)[..., 0]
    np.testing.assert_array_equal(out1, 255 - out)


def test_dicom_window_applied(tmp_path):
    values = np.array([[0, 1000], [2000, 4000]], np.uint16).repeat(16, 0).repeat(16, 1)
    out = pixels(run(write_dicom(tmp_path / "w.dcm", values, window=(1500, 1000))))[..., 0]
    # Window 1000..2000: 0 and 1000 at the bottom, 2000 and 4000 at the top.
    assert out[0, 0] == out[0, 31] == 0 and out[31, 0] == out[31, 31] == 255
