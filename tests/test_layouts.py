"""Finding images in the known layouts, class mapping and the label convention."""

import pytest

from engine.errors import UserError
from engine.data.layouts import apply_classes, label_map, parse_class_map, scan
from factories import class_folder, save, gray, split_folder


def classes_of(candidates):
    return sorted({c.class_name for c in candidates})


def test_split_class_layout_inside_zip_wrapper(tmp_path):
    root = tmp_path / "chest_xray" / "chest_xray"
    split_folder(root, {"train": {"NORMAL": 3, "PNEUMONIA": 2}, "test": {"NORMAL": 1, "PNEUMONIA": 1}})
    (tmp_path / "chest_xray" / "__MACOSX").mkdir()
    (root / "train" / "NORMAL" / ".DS_Store").write_text("x")
    layout, found_root, candidates = scan(tmp_path)
    assert layout == "split-class"
    assert found_root == root
    assert sorted((c.split, c.class_name) for c in candidates).count(("train", "NORMAL")) == 3
    assert {c.split for c in candidates} == {"train", "test"}
    assert all(c.rel.startswith(("train/", "test/")) for c in candidates)


def test_class_layout_with_images_and_masks(tmp_path):
    # COVID-19 Radiography Database: class/images/*.png beside class/masks/*.png.
    for cls, n in {"COVID": 2, "Normal": 3, "Viral Pneumonia": 1, "Lung_Opacity": 1}.items():
        for i in range(n):
            save(tmp_path / cls / "images" / f"{cls}-{i}.png", gray(i))
            save(tmp_path / cls / "masks" / f"{cls}-{i}.png", gray(100 + i))
    layout, _, candidates = scan(tmp_path)
    assert layout == "class"
    assert len(candidates) == 7 and not any("masks" in c.rel for c in candidates)
    assert classes_of(candidates) == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    with pytest.raises(UserError, match=r'binary: choose two with --classes "COVID=covid,Normal=normal"'):
        apply_classes(candidates, None)
    kept, labels = apply_classes(candidates, "COVID=covid,Normal=normal")
    assert labels == {"covid": 0, "normal": 1}
    assert len(kept) == 5
    merged, labels = apply_classes(candidates, "COVID=covid,Normal=normal,Viral Pneumonia=covid")
    assert sum(c.class_name == "covid" for c in merged) == 3


def test_list_layout_covidx(tmp_path):
    for split, rows in {"train": [("p1", "a.png", "positive", "cohen"), ("p1", "b.png", "positive", "cohen"),
                                  ("p2", "c.png", "negative", "rsna")],
                        "test": [("p3", "d.png", "negative", "rsna")]}.items():
        lines = []
        for i, (patient, name, label, source) in enumerate(rows):
            save(tmp_path / split / name, gray(i + 10 * len(split)))
            lines.append(f"{patient} {name} {label} {source}")
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
    layout, _, candidates = scan(tmp_path)
    assert layout == "list"
    by_name = {c.path.name: c for c in candidates}
    assert by_name["a.png"].patient == "p1" and by_name["a.png"].source == "cohen"
    assert by_name["d.png"].split == "test" and by_name["c.png"].class_name == "negative"


def test_list_file_bad_line(tmp_path):
    (tmp_path / "train.txt").write_text("only-two fields\n")
    with pytest.raises(UserError, match=r"train.txt:1: expected"):
        scan(tmp_path)


def test_patient_and_source_from_file_names(tmp_path):
    class_folder(tmp_path, {"covid": 2, "normal": 2}, pattern="patient-{patient}_source-{source}_view-{i}.png")
    _, _, candidates = scan(tmp_path, patient_pattern=r"patient-(?P<patient>[^_.]+)",
                            source_pattern=r"source-(?P<source>[^_.]+)")
    assert sorted(c.patient for c in candidates) == ["covid0", "covid1", "normal0", "normal1"]
    assert {c.source for c in candidates} == {"s0", "s1"}


def test_label_convention_is_alphabetical():
    assert label_map({"normal", "covid"}) == {"covid": 0, "normal": 1}
    assert label_map(["PNEUMONIA", "NORMAL"]) == {"NORMAL": 0, "PNEUMONIA": 1}


def test_class_map_case_insensitive_and_unknown():
    assert parse_class_map("covid=c,NORMAL=n", ["COVID", "Normal"]) == {"COVID": "c", "Normal": "n"}
    with pytest.raises(UserError, match="'Flu', which is not a class here; found: COVID, Normal"):
        parse_class_map("Flu=flu", ["COVID", "Normal"])


def test_empty_class_folder_is_an_error(tmp_path):
    class_folder(tmp_path, {"covid": 2})
    (tmp_path / "normal").mkdir()
    _, _, candidates = scan(tmp_path)
    with pytest.raises(UserError, match="empty class folder: normal"):
        apply_classes(candidates, None)


def test_one_class_is_an_error(tmp_path):
    class_folder(tmp_path, {"covid": 2, "normal": 1})
    _, _, candidates = scan(tmp_path)
    with pytest.raises(UserError, match="need two classes, found 1"):
        apply_classes(candidates, "covid")


def test_missing_source_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        scan(tmp_path / "nowhere")


def test_folder_without_classes(tmp_path):
    save(tmp_path / "a.png", gray(0))
    with pytest.raises(UserError, match="no class folders"):
        scan(tmp_path)


def test_bad_pattern():
    with pytest.raises(UserError, match="needs a named group"):
        scan_pattern = r"person\d+"
        from engine.data.layouts import NameParser
        NameParser(scan_pattern, None)
