"""Command-line options and ``--config`` keys, generated from the config dataclasses.

Every field of a config becomes one flat option: ``TrainConfig.lr`` is
``--lr``, the nested ``ModelConfig.hidden`` is ``--hidden`` (``ModelConfig.name``
is ``--model``), and the same names are the keys of a ``--config`` TOML file.
Their help is the field's line in its class docstring, so a new field is an
option the moment it exists (a test fails if it has no documentation). That
line is written for the user: what to type and what it does, no internal
names. A field unset by default ends its line with ``Default: TEXT.``, which
``--help`` shows as its default. Each option also gets a help panel (the
part of the work it sets: ``TRAIN_PANELS`` and its kin, in ``PANEL_ORDER``)
and a placeholder that says what to type (``METAVARS``). The typer side,
``with_fields``, turns the fields into a command's options.

Values arrive as text from the command line or as TOML values, and are
turned into the field's type here, with a one-line error otherwise. For
``engine compare`` the precedence is: command line > ``--config`` file >
preset > default.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.config import AXES, TRIAL_FIELDS, BenchConfig, RecordsConfig, SweepConfig, TrainConfig
from engine.errors import UserError
from engine.presets import PRESETS


@dataclass(frozen=True)
class Field:
    """One flat option: its name, where it lives in the config, its type and help."""

    name: str
    path: tuple[str, ...]
    type: object
    help: str
    panel: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def text(self) -> str:
        """The help as ``--help`` shows it: the docstring's line without its
        ``Default:`` sentence or Sphinx quotes."""
        text = split_default(self.help)[0].replace("``", "")
        return text[:1].upper() + text[1:]

    @property
    def metavar(self) -> str:
        """What to type, e.g. ``N``, ``i/n``, ``1e-3,1e-4``."""
        is_list = typing.get_origin(self.base) is tuple
        if is_list and self.name in LIST_METAVARS:
            return LIST_METAVARS[self.name]
        if self.name in METAVARS:
            return METAVARS[self.name]
        if is_list:
            item = typing.get_args(self.base)[0]
            return {int: "N,N", float: "X,Y"}.get(item, "A,B")
        return {int: "N", float: "NUMBER", Path: "PATH"}.get(self.base, "TEXT")

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


def split_default(text: str) -> tuple[str, str | None]:
    """A field's docstring line split into its help and the default its
    closing ``Default: TEXT.`` sentence states (None without one)."""
    found = re.match(r"^(.*?)\s*Default: (.+?)\.?$", text)
    return (found[1], found[2]) if found else (text, None)


def fields(cls, *, rename: dict[str, str] | None = None, exclude: set[str] = frozenset(),
           prefix: tuple[str, ...] = (), panels: dict[str, str] | None = None, panel: str = "") -> dict[str, Field]:
    """The flat fields of a config class, nested configs included (dotted
    paths in ``rename`` and ``exclude``); each in the help panel ``panels``
    names for it, else ``panel``."""
    rename, panels = rename or {}, panels or {}
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    out: dict[str, Field] = {}
    for f in dataclasses.fields(cls):
        path = prefix + (f.name,)
        dotted = ".".join(path)
        if dotted in exclude or not f.compare:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(fields(hints[f.name], rename=rename, exclude=exclude, prefix=path, panels=panels,
                              panel=panel))
            continue
        name = rename.get(dotted, f.name)
        if name in out:
            raise AssertionError(f"two fields would be --{name}")  # a config change to resolve by a rename
        out[name] = Field(name, path, hints[f.name], docs.get(f.name, ""), panels.get(name, panel))
    return out


# The help panels, in the order ``--help`` shows them: each option sits in
# the one that names the part of the work it sets.
PANEL_ORDER = ("Study", "Range test", "Source", "Measure", "Data", "Splits", "Images", "Duplicates", "Model",
               "Training", "Scoring", "Protocol", "Study mode", "Output", "Run")
TRAIN_PANELS = {
    **dict.fromkeys(("subset", "image_size", "augment", "augment_placement", "cache_mb", "shuffle_buffer",
                     "data_service"), "Data"),
    **dict.fromkeys(("model", "weights", "hidden", "dropout", "freeze_base", "trainable_from", "fused_bn",
                     "bn_momentum", "bn_stats"), "Model"),
    **dict.fromkeys(("positive_class", "threshold", "select", "bootstrap"), "Scoring"),
    "keep_checkpoints": "Run",
}
RECORDS_PANELS = {
    **dict.fromkeys(("recipe", "layout", "list", "classes"), "Source"),
    **dict.fromkeys(("split", "split_by", "test_source", "resplit", "patient_pattern", "source_pattern", "subset",
                     "seed"), "Splits"),
    **dict.fromkeys(("image_size", "resize", "encoding", "channels", "max_pixels"), "Images"),
    **dict.fromkeys(("allow_duplicates", "dedupe", "near_duplicate_bits"), "Duplicates"),
    **dict.fromkeys(("name", "shard_mb", "min_shards", "overwrite"), "Output"),
    "workers": "Run",
}
BENCH_PANELS = {
    **dict.fromkeys(("repeats", "step_images", "input_images", "outlier_ratio"), "Protocol"),
    **dict.fromkeys(("lrs", "epochs", "train_images", "val_images", "budget_minutes", "parallel"), "Study mode"),
}
# Placeholders of options whose type alone does not say what to type.
METAVARS = {
    "axis": "lr|batch|grid|optimizer", "preset": "quick|robust|paper", "repeats": "N", "budget": "epochs|steps",
    "lr_scaling": "none|linear|sqrt", "shard": "i/n", "trial": "INDEX|NAME|auto", "model": "NAME",
    "weights": "imagenet|none|PATH", "trainable_from": "LAYER", "bn_momentum": "auto|keras|NUMBER",
    "bn_stats": "moving|precise", "optimizer": "NAME", "schedule": "constant|cosine|step", "augment": "POLICY",
    "augment_placement": "auto|data|step", "data_service": "grpc://HOST:PORT", "precision": "PRECISION",
    "xla": "auto|on|off", "class_weight": "none|auto", "positive_class": "CLASS|auto",
    "threshold": "NUMBER|val-youden", "select": "best|last", "recipe": "NAME|PATH", "layout": "LAYOUT",
    "list": "FILE", "classes": "SRC=dst,...", "split_by": "patient|source", "test_source": "SOURCE",
    "patient_pattern": "REGEX", "source_pattern": "REGEX", "resize": "nearest|bilinear|area",
    "encoding": "png|raw|jpeg", "channels": "auto|1|3", "name": "NAME", "cache_mb": "MB", "shard_mb": "MB",
    "budget_minutes": "MINUTES", "outlier_ratio": "RATIO", "paper_stack": "", "splits": "K",
    "split_mode": "holdout|kfold", "split_seed": "N", "margin": "LOSS",
}
LIST_METAVARS = {
    "lrs": "1e-3,1e-4", "batch_sizes": "8,16,32", "optimizers": "adam,sgd", "subset": "TRAIN,VAL,TEST",
    "split": "0.8,0.1,0.1", "near_duplicate_bits": "N,N", "precision": "float32,auto", "xla": "off,auto",
    "mode": "input,step,e2e", "split_sizes": "TRAIN,VAL",
}


# Fields derived from the records or from another field, not set by hand.
DERIVED = {"records", "out", "model.channels", "model.bn_momentum"}
TRAIN = fields(TrainConfig, rename={"model.name": "model"}, exclude=DERIVED, panels=TRAIN_PANELS, panel="Training")
# A study's own fields, then every training field its trials do not set
# themselves (``--seed`` is the sweep's first seed).
SWEEP = {**fields(SweepConfig, exclude={"base"},
                  panels={"shard": "Run", "trial": "Run",
                          **dict.fromkeys(("splits", "split_mode", "split_sizes", "split_seed"), "Splits")},
                  panel="Study"),
         **{name: replace(f, path=("base",) + f.path) for name, f in TRAIN.items() if name not in TRIAL_FIELDS}}
BENCH = fields(BenchConfig, rename={"precisions": "precision", "xlas": "xla", "modes": "mode"},
               exclude={"records"}, panels=BENCH_PANELS, panel="Measure")
RECORDS = fields(RecordsConfig, rename={"fractions": "split", "list_files": "list"}, exclude={"src", "out"},
                 panels=RECORDS_PANELS)


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


def value_text(value, separator: str = ",") -> str:
    return separator.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


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
    """``field -> text`` of its value in ``config``: the default a command
    shows ("" shows none: an unset field without a ``Default:`` sentence)."""
    def default(f: Field) -> str:
        value = config
        for name in f.path:
            value = getattr(value, name)
        if value in (None, (), ""):
            return split_default(f.help)[1] or ""
        if isinstance(value, bool):
            return "on" if value else "off"
        return value_text(value, "/" if f.name == "shard" else ",")
    return default


def sweep_default(f: Field) -> str:
    """Shown default of an ``engine compare`` option: the quick preset's
    (per axis where the axes differ), or the config's."""
    if f.name == "splits":  # resolved from --repeats when not given (sweep_config)
        return f"--repeats, one seed each (quick preset: {PRESETS['quick'].values['repeats']})"
    by_axis: dict[str, list[str]] = {}
    for axis in AXES:
        value = PRESETS["quick"].fields_for(axis).get(f.name)
        if value is not None:
            by_axis.setdefault(value_text(value), []).append(axis)
    if not by_axis:
        return default_of(SweepConfig())(f)
    (tried, axes), *rest = sorted(by_axis.items(), key=lambda item: -len(item[0]))
    if not rest:
        return f"quick preset: {tried}"
    where = f"the {axes[0]} axis" if len(axes) == 1 else f"the {' and '.join(axes)} axes"
    return f"quick preset: {tried} on {where}, else {rest[0][0]}"


def with_default(text: str, default: str = "") -> str:
    """Help text with its default shown as typer shows its own options'
    (rich markup: the text escaped, the default dim)."""
    from rich.markup import escape

    return escape(text) + (f" [dim]\\[default: {escape(default)}][/dim]" if default else "")


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
    if "splits" not in values and values.get("repeats", defaults.repeats) >= 2:
        # Replicates resample by default: N runs of a setting on one train/val
        # split share its validation images, so a setting that happens to suit
        # them wins at every seed; N splits of the pool with one seed each let
        # the comparisons speak of the task (one trial per split is the better
        # use of a fixed number of trials: engine.study.overlap). --splits 1
        # keeps every seed on the records' own split.
        values["splits"], values["repeats"] = values["repeats"], 1
    sweep = assemble(defaults, values, SWEEP)
    # The base's lr, batch size, optimizer and seed stay unset: each trial sets them.
    return replace(sweep, base=replace(sweep.base, records=records, out=out)).validate()


# --- the options as typer declares them ------------------------------------

def flag(name: str, help: str, panel: str | None = "Run"):
    """A hand-written on/off option: no value to type, so no type shown."""
    return typer.Option(name, help=help, metavar="", rich_help_panel=panel)


def option(help: str, metavar: str, panel: str = "Run", **kwargs):
    """A hand-written option with a value: what to type, in its panel."""
    return typer.Option(help=help, metavar=metavar, rich_help_panel=panel, **kwargs)


def annotation(f: Field, default: str):
    """The typer option of a field: None when not given, its default shown in its help."""
    shown = dict(help=with_default(f.text, default), rich_help_panel=f.panel, show_default=False)
    if f.is_flag:
        return Annotated[Optional[bool], typer.Option(f"{f.flag}/--no-{f.flag[2:]}", metavar="", **shown)]
    kind = list[str] if f.name == "list" else str  # --list: a repeatable option
    return Annotated[Optional[kind], typer.Option(f.flag, metavar=f.metavar, **shown)]


def with_fields(flat: dict[str, Field], defaults, skip: tuple[str, ...] = ()):
    """Adds one option per field of ``flat`` to a command (its ``**given``
    receives them), its shown default ``defaults(field)``; the command's
    options are ordered by their help panel (``PANEL_ORDER``)."""
    def decorate(func):
        hints = typing.get_type_hints(func, include_extras=True)
        params = [p.replace(annotation=hints[p.name]) for p in inspect.signature(func).parameters.values()
                  if p.kind != p.VAR_KEYWORD]
        taken = {p.name for p in params} | set(skip)
        params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                     annotation=annotation(f, defaults(f)))
                   for name, f in flat.items() if name not in taken]
        arguments = [p for p in params if panel_of(p) is None]
        rest = sorted((p.replace(kind=p.KEYWORD_ONLY) for p in params if panel_of(p) is not None),
                      key=lambda p: PANEL_ORDER.index(panel_of(p)))
        func.__signature__ = inspect.Signature(arguments + rest)
        func.__annotations__ = {p.name: p.annotation for p in arguments + rest}
        return func
    return decorate


def panel_of(param: inspect.Parameter) -> str | None:
    """The help panel of a command's option (None: an argument, or an option without one)."""
    info = typing.get_args(param.annotation)[1:]
    return info[0].rich_help_panel if info and isinstance(info[0], typer.models.OptionInfo) else None


def tidy_help(option, params):
    """Leaves out of a command's help what typer adds besides the user's
    words: the Python type of ``--help`` and of each argument (an argument's
    name says what to give). ``--help`` sits in the last panel of the
    command's options."""
    for param in params:
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None
    if option is not None:
        option.metavar = ""
        option.rich_help_panel = next((p.rich_help_panel for p in reversed(params)
                                       if getattr(p, "rich_help_panel", None)), None)
    return option
