"""Configs to and from JSON: the plain values a config dataclass is stored as,
reading a stored config back, the fields where a stored config differs from
a new one (a run resumes only when none do), and writing a config next to its
outputs. Works on any config dataclass of ``engine.config``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from engine.errors import UserError
from engine.io import atomic_json


def plain(value):
    """A config value as JSON stores it (nested configs as dicts, paths as strings)."""
    if dataclasses.is_dataclass(value):
        return to_json(value)
    if isinstance(value, Path):
        # Absolute, so that a stored config means the same from any folder;
        # symlinks are kept (a shared folder may be mounted through another
        # link on another machine).
        return os.path.abspath(value)
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


def same_path(stored, path: Path | None) -> bool:
    """Whether a stored path names ``path``: the same absolute, normalised
    spelling, or the same file where both exist (another mount, another link)."""
    if stored is None or path is None:
        return stored is None and path is None
    if os.path.abspath(stored) == os.path.abspath(path):
        return True
    try:
        return os.path.samefile(stored, path)
    except (OSError, TypeError, ValueError):
        return False


def to_json(config) -> dict:
    """A JSON-ready dict of a config dataclass, nested ones included (without
    the fields of a nested config that another part sets, ``per_trial``)."""
    out = {}
    for f in dataclasses.fields(config):
        value = plain(getattr(config, f.name))
        for name in f.metadata.get("per_trial", ()):
            del value[name]
        out[f.name] = value
    return out


def from_json(cls, data: dict):
    """Inverse of ``to_json`` for the config classes: unknown keys are an
    error, fields a class retired (``RETIRED``) are skipped and missing ones
    take their default."""
    hints = {f.name: f for f in dataclasses.fields(cls)}
    retired = set(getattr(cls, "RETIRED", ()))
    unknown = set(data) - set(hints) - retired
    if unknown:
        raise UserError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    values = {}
    for name, value in data.items():
        if name in retired:
            continue
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            value = from_json(type(default), value)
        elif name in ("records", "out", "src") and value is not None:
            value = Path(value)
        elif "tuple" in str(hints[name].type) and value is not None:
            value = tuple(Path(v) if name == "list_files" else v for v in value)
        values[name] = value
    return cls(**values)


def differences(old: dict, config) -> list[str]:
    """Fields where a stored config (``to_json`` of an earlier run) differs from
    ``config``, nested ones as ``model.hidden``. A field missing from ``old``
    (written before the field existed) stands for its default; one the class
    retired (``RETIRED``), or a nested field another part sets
    (``per_trial``), is not compared."""
    out = []
    defaults = type(config)()
    for f in dataclasses.fields(config):
        if not f.compare or f.metadata.get("resumes"):  # a field any value of which resumes the run
            continue
        value, default = getattr(config, f.name), getattr(defaults, f.name)
        stored = old.get(f.name, plain(default))
        if dataclasses.is_dataclass(value):
            set_elsewhere = f.metadata.get("per_trial", ())
            out += [f"{f.name}.{name}" for name in differences(stored, value) if name not in set_elsewhere]
        elif isinstance(value, Path) or (value is None and f.name in ("records", "out", "src")):
            if not same_path(stored, value):
                out.append(f.name)
        elif isinstance(value, tuple) and value and all(isinstance(v, Path) for v in value):
            if not isinstance(stored, list) or len(stored) != len(value) or \
                    not all(same_path(a, b) for a, b in zip(stored, value)):
                out.append(f.name)
        elif stored != plain(value):
            out.append(f.name)
    kept = {f.name for f in dataclasses.fields(config)} | set(getattr(config, "RETIRED", ()))
    return out + sorted(set(old) - kept)


def dump(config, path: Path) -> None:
    """Writes the resolved config as JSON, atomically."""
    atomic_json(path, config.to_json(), indent=2)
