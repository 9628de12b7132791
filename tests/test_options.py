"""Options generated from the configs: every field, its type, and the precedence
command line > --config > preset > default."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from engine import options
from engine.config import PRESETS, SweepConfig, TrainConfig
from engine.errors import UserError


def leaf_paths(config, prefix=()) -> set[str]:
    """Dotted paths of every field of a config instance, nested configs opened."""
    out = set()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out |= leaf_paths(value, prefix + (f.name,))
        else:
            out.add(".".join(prefix + (f.name,)))
    return out


def test_every_training_field_is_an_option_with_help():
    covered = {".".join(f.path) for f in options.TRAIN.values()}
    assert covered | options.DERIVED == leaf_paths(TrainConfig())
    for flat in (options.TRAIN, options.SWEEP, options.BENCH, options.RECORDS):
        assert all(f.help for f in flat.values()), [n for n, f in flat.items() if not f.help]
    # compare takes every training field but those its axes set per trial (its seed is the first seed)
    assert set(options.TRAIN) - set(options.SWEEP) == {"lr", "batch_size", "optimizer"}
    assert options.SWEEP["seed"].path == ("seed",)
    assert {"bn_momentum", "schedule", "augment", "threshold", "warmup_epochs", "hidden", "dropout",
            "class_weight", "positive_class", "freeze_base", "trainable_from", "deterministic"} <= set(options.SWEEP)


def test_presets_name_only_fields():
    for preset in PRESETS.values():
        assert set(preset.fields_for("lr")) <= set(options.SWEEP)


def test_precedence_command_line_over_file_over_preset_over_default(tmp_path):
    (tmp_path / "sweep.toml").write_text('epochs = 5\nschedule = "cosine"\nbn_momentum = 0.97\nthreshold = 0.3\n'
                                         'augment = "none"\nlrs = [1e-3, 1e-4]\nfreeze_base = true\n')
    from_file = options.from_toml(tmp_path / "sweep.toml", options.SWEEP)
    cli = options.from_command_line({"epochs": "7", "preset": None, "hidden": None}, options.SWEEP)
    sweep = options.sweep_config(cli, from_file, None, Path("/x"))
    base = sweep.base
    assert base.epochs == 7  # command line over the file (and the quick preset's 3)
    assert base.schedule == "cosine" and base.bn_momentum == "0.97" and base.threshold == "0.3"  # file
    assert base.augment == "none" and base.model.freeze_base is True and sweep.lrs == (1e-3, 1e-4)
    assert sweep.repeats == PRESETS["quick"].values["repeats"] and base.model.image_size == 75  # preset
    assert base.subset == (160, 40, 40)  # the preset's subset of the embedded set (no RECORDS given)
    assert base.model.hidden == 256 and base.warmup_epochs == 0.0  # defaults
    assert base.lr == 1e-3 and base.batch_size == 16  # the first setting of each axis
    # The file's axis and preset count, and the command line still wins over them.
    (tmp_path / "paper.toml").write_text('preset = "paper"\naxis = "batch"\n')
    paper = options.sweep_config({}, options.from_toml(tmp_path / "paper.toml", options.SWEEP), None, Path("/x"))
    assert paper.batch_sizes == (5, 10, 15) and paper.base.model.weights == "imagenet"
    lr_axis = options.sweep_config({"axis": "lr"}, options.from_toml(tmp_path / "paper.toml", options.SWEEP), None,
                                   Path("/x"))
    assert lr_axis.lrs == PRESETS["paper"].lrs and lr_axis.batch_sizes == (5,)


@pytest.mark.parametrize("text,message", [
    ('axes = "lr"\n', "unknown fields axes"),
    ('epochs = "x"\n', "--epochs takes a whole number, not 'x'"),
    ('lrs = ["a"]\n', "--lrs takes comma-separated numbers, not 'a'"),
    ('epochs = 2.5\n', "--epochs takes a whole number, not '2.5'"),
    ('epochs = \n', "--config"),
])
def test_bad_config_file_is_one_line(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(UserError, match=message) as err:
        options.sweep_config({}, options.from_toml(tmp_path / "bad.toml", options.SWEEP), None, Path("/x"))
    assert "\n" not in str(err.value)


def test_coercion_of_each_kind():
    f = options.SWEEP
    assert options.coerce(f["lrs"], "1e-2, 1e-3") == (1e-2, 1e-3)
    assert options.coerce(f["batch_sizes"], [5, 10]) == (5, 10)
    assert options.coerce(f["shard"], "1/4") == (1, 4)
    assert options.coerce(f["deterministic"], "true") is True and options.coerce(f["freeze_base"], False) is False
    assert options.coerce(f["dropout"], 0) == 0.0 and options.coerce(f["threshold"], 0.4) == "0.4"
    assert options.coerce(options.RECORDS["subset"], "500,100,100") == (500, 100, 100)
    with pytest.raises(UserError, match=r"--subset takes comma-separated whole numbers, not '500,100'"):
        options.coerce(options.RECORDS["subset"], "500,100")
    with pytest.raises(UserError, match="--shard takes"):
        options.coerce(f["shard"], "x/2")


def test_sweep_fields_are_the_config_fields():
    own = {f.name for f in dataclasses.fields(SweepConfig)} - {"base"}
    assert own <= set(options.SWEEP)


def test_compare_takes_the_new_fields_on_the_command_line_and_in_a_file(tmp_path):
    from typer.testing import CliRunner

    from engine.cli import app

    flags = ["--bn-momentum", "keras", "--schedule", "cosine", "--augment", "none", "--threshold", "val-youden"]
    base = ["compare", "--out", str(tmp_path / "c"), "--dry-run", "--json", "--epochs", "4"]
    done = CliRunner().invoke(app, base + flags)
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["count"] == 6  # quick preset, lr axis: 3 lrs x 2 repeats
    (tmp_path / "sweep.toml").write_text('bn_momentum = "keras"\nschedule = "cosine"\naugment = "none"\n'
                                         'threshold = "val-youden"\nrepeats = 1\n')
    done = CliRunner().invoke(app, base + ["--config", str(tmp_path / "sweep.toml")])
    assert done.exit_code == 0, done.output
    assert [t["epochs"] for t in json.loads(done.output)["trials"]] == [4, 4, 4]
    bad = CliRunner().invoke(app, base + ["--schedule", "sometimes"])
    assert isinstance(bad.exception, UserError)
    assert str(bad.exception) == "--schedule must be one of constant, cosine, step, not 'sometimes'"


def test_the_quick_presets_subset_is_for_the_embedded_set_only(tmp_path):
    given = options.sweep_config({}, {}, tmp_path / "records", tmp_path / "out")
    assert given.base.subset is None and given.base.model.image_size == 75
    embedded = options.sweep_config({"subset": (100, 20, 0)}, {}, None, tmp_path / "out")
    assert embedded.base.subset == (100, 20, 0)
