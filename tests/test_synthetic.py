"""Tests of the synthetic chest X-ray generator (engine.data.drawing and engine.data.synthetic)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import UserError
from engine.data.drawing import CLASSES, SOURCES, render
from engine.data.synthetic import FILENAME_PATTERN, SPLITS, generate

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(FILENAME_PATTERN + r"_view-(?P<view>[1-9][0-9]*)\.png")


def read_set(root: Path) -> dict[str, bytes]:
    """Every PNG under ``root``, keyed by its path relative to ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def lower_outer(img: np.ndarray) -> np.ndarray:
    """The lower zones of both lungs, toward the flanks (where the opacities go)."""
    size = img.shape[0]
    rows = slice(int(size * 0.5), int(size * 0.75))
    cols = np.r_[int(size * 0.125):int(size * 0.3), int(size * 0.7):int(size * 0.875)]
    return img[rows][:, cols]


def upper_inner(img: np.ndarray) -> np.ndarray:
    """The upper zones of both lungs, toward the mediastinum."""
    size = img.shape[0]
    rows = slice(int(size * 0.2), int(size * 0.4))
    cols = np.r_[int(size * 0.3):int(size * 0.45), int(size * 0.55):int(size * 0.7)]
    return img[rows][:, cols]


def test_module_does_not_load_tensorflow():
    code = ("import sys, engine.data.synthetic; "
            "loaded = [m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules]; "
            "sys.exit(f'loaded {loaded}' if loaded else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)
    assert result.returncode == 0, result.stderr


def test_layout_counts_and_image_format(tmp_path):
    progress = []
    summary = generate(tmp_path / "set", image_size=64, counts={"train": 7, "val": 4, "test": 3},
                       seed=1, workers=0, on_progress=progress.append)
    expected = {"train": {"covid": 3, "normal": 4}, "val": {"covid": 2, "normal": 2},
                "test": {"covid": 1, "normal": 2}}
    found = {split: {label: len(list((tmp_path / "set" / split / label).glob("*.png")))
                     for label in CLASSES} for split in SPLITS}
    assert found == expected
    assert summary["counts"] == expected
    assert summary["images"] == 14
    assert sum(progress) == 14
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == sorted(SPLITS)
    assert summary["images_per_second"] > 0
    for path in (tmp_path / "set").rglob("*.png"):
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "L", (64, 64))


def test_splits_left_out_are_not_created(tmp_path):
    summary = generate(tmp_path / "set", image_size=32, counts={"train": 2}, workers=0)
    assert [p.name for p in (tmp_path / "set").iterdir()] == ["train"]
    assert summary["counts"] == {"train": {"covid": 1, "normal": 1}}


def test_filenames_patients_and_sources(tmp_path):
    summary = generate(tmp_path / "set", image_size=24, counts={"train": 60, "val": 20, "test": 20},
                       seed=5, workers=0)
    splits, classes, sources, views = (defaultdict(set) for _ in range(4))
    for path in (tmp_path / "set").rglob("*.png"):
        match = NAME.fullmatch(path.name)
        assert match, path.name
        patient = match["patient"]
        splits[patient].add(path.parts[-3])
        classes[patient].add(path.parts[-2])
        sources[patient].add(match["source"])
        views[patient].add(int(match["view"]))
    assert all(len(s) == 1 for s in splits.values())  # no patient in two splits
    assert all(len(c) == 1 for c in classes.values())
    assert all(len(s) == 1 and s <= set(SOURCES) for s in sources.values())
    assert all(v == set(range(1, len(v) + 1)) and len(v) <= 3 for v in views.values())
    assert Counter(len(v) for v in views.values())[2] > 0  # some patients have follow-ups
    assert summary["patients"] == len(splits)
    assert sum(summary["patients_per_split"].values()) == len(splits)


def test_sources_have_different_class_balance(tmp_path):
    summary = generate(tmp_path / "set", image_size=16, counts={"train": 400}, seed=2, workers=0)
    share = {src: n["covid"] / (n["covid"] + n["normal"]) for src, n in summary["sources"].items()}
    assert share["siteA"] > 0.6
    assert share["siteC"] < 0.4


def test_same_seed_gives_identical_files_and_another_seed_different_ones(tmp_path):
    counts = {"train": 6, "val": 2, "test": 2}
    first = read_set(Path(generate(tmp_path / "a", image_size=48, counts=counts, seed=3,
                                   workers=0)["out"]))
    again = read_set(Path(generate(tmp_path / "b", image_size=48, counts=counts, seed=3,
                                   workers=0)["out"]))
    other = read_set(Path(generate(tmp_path / "c", image_size=48, counts=counts, seed=4,
                                   workers=0)["out"]))
    assert len(first) == 10
    assert first == again
    assert set(first.values()).isdisjoint(other.values())


def test_two_workers_write_the_same_files_as_one_process(tmp_path):
    counts = {"train": 10, "val": 3, "test": 3}
    progress = []
    parallel = generate(tmp_path / "parallel", image_size=40, counts=counts, seed=9, workers=2,
                        on_progress=progress.append)
    serial = generate(tmp_path / "serial", image_size=40, counts=counts, seed=9, workers=0)
    assert parallel["workers"] == 2
    assert sum(progress) == 16
    assert read_set(tmp_path / "parallel") == read_set(tmp_path / "serial")
    assert parallel["counts"] == serial["counts"]


def test_a_split_does_not_depend_on_the_other_splits_counts(tmp_path):
    small = generate(tmp_path / "a", image_size=24, counts={"train": 4, "val": 4}, workers=0)
    large = generate(tmp_path / "b", image_size=24, counts={"train": 9, "val": 4}, workers=0)
    # Patient numbers shift, the pixels do not.
    val_a = sorted(read_set(Path(small["out"]) / "val").values())
    val_b = sorted(read_set(Path(large["out"]) / "val").values())
    assert val_a == val_b


def test_render_dtype_shape_and_determinism():
    img = render(7, "covid", 80, source="siteB")
    assert img.dtype == np.uint8
    assert img.shape == (80, 80)
    # Dark air around the body, bright tissue inside it.
    assert img[:, :4].mean() < 60
    assert img[-10:, 30:50].mean() > 150
    assert np.array_equal(img, render(7, "covid", 80, source="siteB"))
    assert not np.array_equal(img, render(8, "covid", 80, source="siteB"))


def test_lungs_are_darker_than_the_mediastinum():
    imgs = np.stack([render(seed, "normal", 64, source=SOURCES[seed % 3]) for seed in range(10)])
    size = 64
    lungs = imgs[:, int(size * 0.3):int(size * 0.5)][:, :, np.r_[12:20, 44:52]].mean()
    middle = imgs[:, int(size * 0.3):int(size * 0.5), 30:34].mean()
    assert middle - lungs > 40


def test_covid_adds_opacities_to_the_lower_outer_lung_zones():
    # Paired renders: the same patient and image seed, only the label differs.
    lower, upper = [], []
    for seed in range(20):
        covid = render(seed, "covid", 64, source=SOURCES[seed % 3]).astype(float)
        normal = render(seed, "normal", 64, source=SOURCES[seed % 3]).astype(float)
        diff = covid - normal
        assert np.array_equal(diff[:4], np.zeros_like(diff[:4]))  # nothing above the body
        lower.append(lower_outer(diff).mean())
        upper.append(upper_inner(diff).mean())
    assert np.mean(lower) > 8.0
    assert min(lower) > 0.0  # bilateral and lower-zone in every patient, even faint ones
    # Version 2 of the set: even the mildest patient is clearly visible (these
    # 20 measured a mean of 29 and a least of 14 grey levels; version 1: 19 and 7).
    assert np.mean(lower) > 24.0 and min(lower) > 11.0
    assert np.mean(lower) > 4 * np.mean(upper)  # peripheral and basal, not diffuse


def test_views_of_a_patient_share_anatomy():
    views = [render(seed, "normal", 64, patient=42).astype(float) for seed in (1, 2)]
    others = [render(seed, "normal", 64, patient=43 + seed).astype(float) for seed in (1, 2)]
    same = np.abs(views[0] - views[1]).mean()
    different = np.abs(others[0] - others[1]).mean()
    assert same < different


def test_refuses_a_non_empty_output_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError) as error:
        generate(out, image_size=32, counts={"train": 2}, workers=0)
    assert "\n" not in str(error.value)
    assert str(out) in str(error.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_accepts_an_existing_empty_output_folder(tmp_path):
    (tmp_path / "out").mkdir()
    summary = generate(tmp_path / "out", image_size=32, counts={"train": 2}, workers=0)
    assert summary["images"] == 2


@pytest.mark.parametrize("kwargs", [
    {"counts": {"training": 4}},
    {"counts": {"train": -1}},
    {"image_size": 8},
    {"seed": -1},
])
def test_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(UserError) as error:
        generate(tmp_path / "out", workers=0, **{"counts": {"train": 2}, **kwargs})
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_render_rejects_unknown_label_and_source():
    with pytest.raises(ValueError):
        render(0, "pneumonia", 32)
    with pytest.raises(ValueError):
        render(0, "covid", 32, source="siteZ")
