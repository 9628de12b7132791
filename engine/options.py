"""Command-line options and ``--config`` keys, generated from the config dataclasses.

Every field of a config becomes one flat option: ``TrainConfig.lr`` is
``--lr``, the nested ``ModelConfig.hidden`` is ``--hidden`` (``ModelConfig.name``
is ``--model``), and the same names are the keys of a ``--config`` TOML file.
Their help is the field's line in its class docstring, so a new field is an
option the moment it exists (a test fails if it has no documentation).

Values arrive as text from the command line or as TOML values, and are
turned into the field's type here, with a one-line error otherwise. For
``engine compare`` the precedence is: command line > ``--config`` file >
preset > default.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, replace
from pathlib import Path

from engine.config import PRESETS, BenchConfig, RecordsConfig, SweepConfig, TrainConfig
from engine.errors import UserError


@dataclass(frozen=True)
class Field:
    """One flat option: its name, where it lives in the config, its type and help."""

    name: str
    path: tuple[str, ...]
    type: object
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def base(self) -> object:
        """The type without ``| None``."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        if typing.get_origin(self.type) in (typing.Union, types.UnionType) and len(args) == 1:
            return args[0]
        return self.type

    @property
    def is_flag(self) -> bool:
        return self.base is bool


def attribute_docs(cls) -> dict[str, str]:
    """``name: text`` entries of the ``Attributes:`` section of a class docstring
    (``a / b: text`` and ``a, b: text`` document several fields at once)."""
    lines = (cls.__doc__ or "").split("Attributes:", 1)[-1].splitlines()
    docs: dict[str, str] = {}
    current: list[str] = []
    for line in lines:
        entry = re.match(r"^\s{8}(\w+(?:(?:, | / )\w+)*): (.*)$", line)
        if entry:
            current = re.split(r", | / ", entry[1])
            for name in current:
                docs[name] = entry[2].strip()
        elif line.strip() and current:
            for name in current:
                docs[name] += " " + line.strip()
        elif not line.strip():
            current = []
    return docs


def fields(cls, *, rename: dict[str, str] | None = None, exclude: set[str] = frozenset(),
           prefix: tuple[str, ...] = ()) -> dict[str, Field]:
    """The flat fields of a config class, nested configs included (dotted
    paths in ``rename`` and ``exclude``)."""
    rename = rename or {}
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    out: dict[str, Field] = {}
    for f in dataclasses.fields(cls):
        path = prefix + (f.name,)
        dotted = ".".join(path)
        if dotted in exclude or not f.compare:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(fields(hints[f.name], rename=rename, exclude=exclude, prefix=path))
            continue
        name = rename.get(dotted, f.name)
        if name in out:
            raise AssertionError(f"two fields would be --{name}")  # a config change to resolve by a rename
        out[name] = Field(name, path, hints[f.name], docs.get(f.name, ""))
    return out


# Fields derived from the records or from another field, not set by hand.
DERIVED = {"records", "out", "model.channels", "model.bn_momentum", "data.seed"}
TRAIN = fields(TrainConfig, rename={"model.name": "model"}, exclude=DERIVED)
# A study's own fields, then every training field it does not vary along an axis.
SWEEP = {**fields(SweepConfig, exclude={"base"}),
         **{name: replace(f, path=("base",) + f.path) for name, f in TRAIN.items()
            if name not in ("lr", "batch_size", "optimizer", "seed")}}
BENCH = fields(BenchConfig, rename={"precisions": "precision", "xlas": "xla", "modes": "mode"},
               exclude={"records"})
RECORDS = fields(RecordsConfig, rename={"fractions": "split", "list_files": "list"}, exclude={"src", "out"})


def describe(field: Field) -> str:
    """What a value of the field looks like, for error messages."""
    base = field.base
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        kinds = {int: "comma-separated whole numbers", float: "comma-separated numbers"}
        return kinds.get(item, "a comma-separated list")
    return {int: "a whole number", float: "a number", bool: "true or false"}.get(base, "a value")


def coerce(field: Field, value):
    """``value`` (command-line text or a TOML value) as the field's type."""
    base = field.base
    if value is None:
        return None
    try:
        if typing.get_origin(base) is tuple:
            args = typing.get_args(base)
            if isinstance(value, str):
                separator = "/" if field.name == "shard" else ","
                value = [part.strip() for part in value.split(separator) if part.strip()]
            elif not isinstance(value, (list, tuple)):
                value = [value]
            kinds = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
            if len(kinds) != len(value):
                raise ValueError
            return tuple(scalar(kind, v) for kind, v in zip(kinds, value))
        return scalar(base, value)
    except (TypeError, ValueError):
        raise UserError(f"{field.flag} takes {describe(field)}, not {value_text(value)!r}") from None


def value_text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def scalar(kind, value):
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if kind is Path:
        return Path(value)
    return str(value)


def assemble(config, values: dict, flat: dict[str, Field]):
    """``config`` with the flat ``values`` (already coerced) set at their paths."""
    for name, value in values.items():
        config = set_path(config, flat[name].path, value)
    return config


def set_path(config, path: tuple[str, ...], value):
    if len(path) == 1:
        return replace(config, **{path[0]: value})
    return replace(config, **{path[0]: set_path(getattr(config, path[0]), path[1:], value)})


def default_of(config):
    """``field -> text`` of its value in ``config``: the default a command shows."""
    def default(f: Field) -> str:
        value = config
        for name in f.path:
            value = getattr(value, name)
        return value_text(value) if value not in (None, ()) else "none"
    return default


def sweep_default(f: Field) -> str:
    """Shown default of an ``engine compare`` option: the quick preset's, or the config's."""
    quick = PRESETS["quick"].fields_for("lr")
    if f.name in quick:
        return f"the preset's (quick: {value_text(quick[f.name])})"
    return default_of(SweepConfig())(f)


def from_command_line(given: dict, flat: dict[str, Field]) -> dict:
    """The options given on the command line (those not None), coerced."""
    return {name: coerce(flat[name], value) for name, value in given.items() if value is not None}


def from_toml(path: Path, flat: dict[str, Field]) -> dict:
    """A ``--config`` TOML file's keys (the flat option names), coerced; an
    unknown key or a bad file is a one-line error."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise UserError(f"--config {path}: {err}") from None
    unknown = sorted(set(data) - set(flat))
    if unknown:
        raise UserError(f"--config {path}: unknown fields {', '.join(unknown)}")
    return {name: coerce(flat[name], value) for name, value in data.items()}


def sweep_config(command_line: dict, from_file: dict, records: Path | None, out: Path) -> SweepConfig:
    """The study from its flat values: command line > ``--config`` > preset > default.

    Args:
        command_line: options given on the command line (coerced, None left out).
        from_file: the ``--config`` file's values (coerced), or {}.
        records, out: the records folder (None: the embedded set) and the sweep folder.
    """
    defaults = SweepConfig()
    layered = {**from_file, **command_line}
    axis, preset = layered.get("axis", defaults.axis), layered.get("preset", defaults.preset)
    if preset not in PRESETS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)}, not {preset!r}")
    # The preset's values are plain Python; the given ones arrive coerced already.
    # A preset's subset draws from the embedded set: with RECORDS, their own splits count.
    preset_values = {name: value for name, value in PRESETS[preset].fields_for(axis).items()
                     if not (name == "subset" and records is not None)}
    values = {**{name: coerce(SWEEP[name], value) for name, value in preset_values.items()}, **layered}
    sweep = assemble(defaults, values, SWEEP)
    base = replace(sweep.base, records=records, out=out, seed=sweep.seed,
                   lr=sweep.lrs[0] if sweep.lrs else sweep.base.lr,
                   batch_size=sweep.batch_sizes[0] if sweep.batch_sizes else sweep.base.batch_size)
    return replace(sweep, base=base).validate()
