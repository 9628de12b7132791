"""Finding the images of a source folder: known layouts, recipes, class mapping.

Label convention, used everywhere in the engine: after ``--classes`` mapping the
two class names are sorted alphabetically, as Keras ``flow_from_directory``
sorts them, and numbered 0 and 1. For the chest X-ray study that is
covid = 0, normal = 1, so the model's sigmoid output is P(normal), exactly as
in the paper.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from engine.errors import UserError

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
# Folders that never hold the images of a class (segmentation masks of the
# COVID-19 Radiography Database, macOS zip debris).
SKIP_DIRS = {"masks", "__macosx"}


@dataclass(frozen=True)
class Candidate:
    """One file that may become an example."""

    path: Path
    rel: str  # path relative to the source folder: the example id
    class_name: str  # the source's own class name, before mapping
    split: str | None = None  # the split the source assigns, if any
    patient: str | None = None
    source: str | None = None
    skipped: str | None = None  # why this path is no example (a link not followed), for rejects.csv


@dataclass(frozen=True)
class Recipe:
    """A known public source: where to get it, its layout and its licence."""

    name: str
    title: str = ""
    url: str = ""
    licence: str = ""
    layout: str = "auto"
    classes: str | None = None
    patient_pattern: str | None = None
    source_pattern: str | None = None
    notes: str = ""


def recipes_dir():
    """The folder of shipped recipes: ``datasets/`` of a source checkout (and of
    an editable install), else the copy a wheel installs as ``engine/recipes``."""
    checkout = Path(__file__).resolve().parents[2] / "datasets"
    if checkout.is_dir():
        return checkout
    return resources.files("engine") / "recipes"


def recipe_names() -> list[str]:
    """Names of the recipes shipped with the engine."""
    return sorted(p.name[:-5] for p in recipes_dir().iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str) -> Recipe:
    """Loads a recipe by shipped name or from a TOML file path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        text = path.read_text()
    else:
        entry = recipes_dir() / f"{name_or_path}.toml"
        if not entry.is_file():
            raise UserError(f"unknown recipe {name_or_path!r}; known: {', '.join(recipe_names())}")
        text = entry.read_text()
    try:
        data = tomllib.loads(text)
        return Recipe(**data)
    except (tomllib.TOMLDecodeError, TypeError) as err:
        raise UserError(f"recipe {name_or_path!r} is not valid: {err}") from None


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in SKIP_DIRS or name == "Thumbs.db"


def visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))


def visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not is_hidden(p.name))


def walk_files(folder: Path, tree: Path | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every visible file below ``folder``, recursively (as ``flow_from_directory``
    follows sub-folders), skipping hidden folders and mask folders; and the
    folder links not followed, with why.

    A link to a folder is followed once: not when it leads to a folder of the
    source ``tree`` (its files are found under their own class folder, so a
    link such as ``normal/loop -> ..`` cannot relabel covid images), to an
    ancestor (a loop), or to a folder already visited by its real path. Links
    to folders elsewhere (another disk) are followed.
    """
    tree_real = os.path.realpath(tree or folder)
    visited = {os.path.realpath(folder)}
    found, skipped = [], []

    def walk(directory: str) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as err:
            skipped.append((Path(directory), f"folder cannot be read: {err.strerror}"))
            return
        for entry in entries:
            if is_hidden(entry.name):
                continue
            path = Path(entry.path)
            if not entry.is_dir():  # follows links: a link to a file is that file
                found.append(path)
                continue
            if entry.is_symlink():
                real = os.path.realpath(entry.path)
                why = link_skip_reason(real, os.path.realpath(directory), tree_real, visited)
                if why:
                    skipped.append((path, why))
                    continue
                visited.add(real)
            walk(entry.path)

    walk(str(folder))
    return found, skipped


def link_skip_reason(real: str, parent_real: str, tree_real: str, visited: set[str]) -> str | None:
    """Why a link to the folder ``real`` is not followed; None to follow it."""
    if parent_real == real or parent_real.startswith(real.rstrip(os.sep) + os.sep):
        return f"link to an ancestor folder ({real}): a loop"
    if real == tree_real or real.startswith(tree_real.rstrip(os.sep) + os.sep):
        return f"link into the source folder ({real}): its files are found there"
    if real in visited:
        return f"link to a folder already visited ({real})"
    return None


def find_root(src: Path) -> Path:
    """Descends through wrapper folders (``chest_xray/chest_xray/...`` in zips)."""
    root = src
    while True:
        dirs, files = visible_dirs(root), visible_files(root)
        if len(dirs) == 1 and not files and dirs[0].name.lower() not in SPLIT_ALIASES:
            inner = visible_dirs(dirs[0])
            # Only descend if the single folder itself holds folders, i.e. it is
            # a wrapper and not the only class folder.
            if inner:
                root = dirs[0]
                continue
        return root


def split_lists(root: Path) -> tuple[Path, ...]:
    """List files named after a split (train.txt, val.txt, test.txt) in ``root``."""
    return tuple(f for f in visible_files(root)
                 if f.suffix.lower() == ".txt" and f.stem.lower() in SPLIT_ALIASES)


def detect_layout(root: Path, list_files: tuple[Path, ...]) -> str:
    """Names the layout of ``root``: split-class, class or list."""
    # COVIDx keeps train/ and test/ image folders beside train.txt and
    # test.txt: list files win over split folders.
    if list_files or split_lists(root):
        return "list"
    dirs = visible_dirs(root)
    if any(d.name.lower() in SPLIT_ALIASES for d in dirs):
        return "split-class"
    if dirs:
        return "class"
    raise UserError(f"{root} has no class folders: expected SRC/train/<class>/*, SRC/<class>/* "
                    f"or list files (see --layout and --recipe)")


class NameParser:
    """Recovers patient and source from a file name with two optional regexes."""

    def __init__(self, patient_pattern: str | None, source_pattern: str | None):
        self.patient = self._compile(patient_pattern, "patient")
        self.source = self._compile(source_pattern, "source")

    @staticmethod
    def _compile(pattern: str | None, group: str) -> re.Pattern | None:
        if not pattern:
            return None
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise UserError(f"--{group}-pattern {pattern!r} is not a valid regex: {err}") from None
        if group not in regex.groupindex:
            raise UserError(f"--{group}-pattern {pattern!r} needs a named group (?P<{group}>...)")
        return regex

    def __call__(self, name: str) -> tuple[str | None, str | None]:
        found = []
        for regex, group in ((self.patient, "patient"), (self.source, "source")):
            match = regex.search(name) if regex else None
            found.append(match.group(group) if match else None)
        return found[0], found[1]


def scan_class_folders(folder: Path, root: Path, split: str | None,
                       names: NameParser) -> list[Candidate]:
    """Candidates of ``folder/<class>/**``."""
    candidates = []
    for class_dir in visible_dirs(folder):
        files, skipped = walk_files(class_dir, root)
        for path in files:
            patient, source = names(path.name)
            candidates.append(Candidate(path, path.relative_to(root).as_posix(), class_dir.name,
                                        split, patient, source))
        candidates += [Candidate(path, path.relative_to(root).as_posix(), class_dir.name, split, skipped=why)
                       for path, why in skipped]
        if not files:
            candidates.append(Candidate(class_dir, class_dir.relative_to(root).as_posix(),
                                        class_dir.name, split, None, "<empty>"))
    return candidates


def scan_list(root: Path, list_file: Path) -> list[Candidate]:
    """Candidates of a list file ``patientId filename label [source]`` (COVIDx)."""
    split = SPLIT_ALIASES.get(list_file.stem.lower())
    candidates = []
    lines = list_file.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise UserError(f"{list_file}:{number}: expected 'patientId filename label [source]', "
                            f"got {line.strip()!r}")
        patient, filename, label = parts[:3]
        source = parts[3] if len(parts) > 3 else None
        options = [root / split / filename] if split else []
        options += [root / filename, list_file.parent / filename]
        path = next((p for p in options if p.is_file()), options[0])
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        candidates.append(Candidate(path, rel, label, split, patient, source))
    return candidates


def scan(src: Path, layout: str = "auto", list_files: tuple[Path, ...] = (),
         patient_pattern: str | None = None, source_pattern: str | None = None
         ) -> tuple[str, Path, list[Candidate]]:
    """Finds every candidate file of a source folder.

    Returns:
        (layout, root, candidates); empty class folders appear as one
        candidate with source ``"<empty>"`` so the caller can name them once
        the classes that matter are known.
    """
    if not src.is_dir():
        raise UserError(f"source folder {src} does not exist or is not a folder")
    for list_file in list_files:
        if not list_file.is_file():
            raise UserError(f"list file {list_file} does not exist")
    root = find_root(src)
    if layout == "auto":
        layout = detect_layout(root, list_files)
    names = NameParser(patient_pattern, source_pattern)
    if layout == "list":
        files = list_files or split_lists(root)
        if not files:
            raise UserError(f"layout list needs --list FILE or train.txt/val.txt/test.txt in {root}")
        candidates = [c for f in files for c in scan_list(root, f)]
    elif layout == "split-class":
        candidates = []
        for split_dir in visible_dirs(root):
            split = SPLIT_ALIASES.get(split_dir.name.lower())
            if split is not None:
                candidates += scan_class_folders(split_dir, root, split, names)
    else:
        candidates = scan_class_folders(root, root, None, names)
    if not candidates:
        raise UserError(f"no image files found under {root}")
    return layout, root, candidates


def parse_class_map(text: str | None, found: list[str]) -> dict[str, str]:
    """Maps source class names to engine class names.

    ``"COVID=covid,Normal=normal"`` selects, renames and merges (two sources
    may map to one name); ``"covid,normal"`` selects; None keeps all classes.
    Source names match exactly, else case-insensitively.
    """
    if not text:
        return {name: name for name in found}
    by_lower = {name.lower(): name for name in found}
    mapping = {}
    for item in text.split(","):
        if not item.strip():
            continue
        source, _, target = item.partition("=")
        source, target = source.strip(), (target or source).strip()
        name = source if source in found else by_lower.get(source.lower())
        if name is None:
            raise UserError(f"--classes names {source!r}, which is not a class here; "
                            f"found: {', '.join(found)}")
        mapping[name] = target
    return mapping


def suggest_classes(found: list[str]) -> str:
    """A ``--classes`` value that keeps a COVID-like and a normal-like class."""
    covid = next((n for n in found if "covid" in n.lower()), None)
    normal = next((n for n in found if "normal" in n.lower()), None)
    if covid and normal:
        return f"{covid}=covid,{normal}=normal"
    return ",".join(found[:2])


def label_map(class_names: set[str] | list[str]) -> dict[str, int]:
    """The label convention: alphabetical order, 0 and 1 (as Keras orders folders)."""
    return {name: index for index, name in enumerate(sorted(class_names))}


def apply_classes(candidates: list[Candidate], classes: str | None) -> tuple[list[Candidate], dict[str, int]]:
    """Keeps the mapped classes, renames them, and checks the engine is binary."""
    found = sorted({c.class_name for c in candidates})
    mapping = parse_class_map(classes, found)
    targets = set(mapping.values())
    if len(targets) != 2:
        quoted = f'"{suggest_classes(found)}"'
        what = ", ".join(found)
        if len(targets) > 2:
            raise UserError(f"found {len(targets)} classes ({what}); the engine is binary: "
                            f"choose two with --classes {quoted}")
        raise UserError(f"need two classes, found {len(targets)} ({what or 'none'})")
    kept = []
    empty = []
    for c in candidates:
        if c.class_name not in mapping:
            continue
        if c.source == "<empty>":
            empty.append(c.rel)
            continue
        kept.append(Candidate(c.path, c.rel, mapping[c.class_name], c.split, c.patient, c.source))
    if empty:
        raise UserError(f"empty class folder{'s' if len(empty) > 1 else ''}: {', '.join(empty)}")
    return kept, label_map(targets)
