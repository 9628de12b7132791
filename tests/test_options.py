"""Options generated from the configs: every field, its type, and the precedence
command line > --config > preset > default; each setting stored in one field
(older stored configs still load and resume); the configs' rules fail in one
line before any work."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from pathlib import Path

import pytest

from engine import config, options, serialise
from engine.config import MODEL_MIN_SIDE, BenchConfig, SweepConfig, TrainConfig
from engine.errors import UserError
from engine.presets import PRESETS


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
    # The preset's repeats, drawn as that many splits with one seed each (--splits not given).
    assert (sweep.splits, sweep.repeats) == (PRESETS["quick"].values["repeats"], 1) and base.model.image_size == 75
    # --splits given keeps the repeats as seeds of each split; --repeats 1 keeps one split.
    assert options.sweep_config({"splits": 1}, {}, None, Path("/x")).repeats == PRESETS["quick"].values["repeats"]
    assert (options.sweep_config({"repeats": 3, "splits": 2}, {}, None, Path("/x")).repeats,
            options.sweep_config({"repeats": 1}, {}, None, Path("/x")).splits) == (3, 1)
    assert options.sweep_config({"repeats": 4}, {}, None, Path("/x")).splits == 4
    assert base.subset == (160, 40, 40)  # the preset's subset of the embedded set (no RECORDS given)
    assert base.model.hidden == 256 and base.warmup_epochs == 0.0  # defaults
    assert sweep.batch_sizes == (16,)  # the quick preset's one batch size on the lr axis
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


def test_a_sweep_holds_each_trial_setting_once():
    sweep = options.sweep_config({"lrs": (1e-3, 1e-4), "seed": 7}, {}, None, Path("/x"))
    assert sweep.lrs == (1e-3, 1e-4) and sweep.seed == 7
    # The base's lr, batch size, optimizer and seed are the trials': not copied, stored or compared.
    assert (sweep.base.lr, sweep.base.seed) == (TrainConfig().lr, TrainConfig().seed)
    stored = sweep.to_json()
    assert not set(config.TRIAL_FIELDS) & set(stored["base"])
    assert serialise.from_json(SweepConfig, stored) == sweep
    # A sweep.json written when the base held copies of the first setting resumes.
    stored["base"].update(lr=1e-3, batch_size=16, optimizer="adam", seed=7)
    assert serialise.differences(stored, sweep) == []
    assert serialise.from_json(SweepConfig, stored).to_json() == sweep.to_json()
    stored["base"]["epochs"] = 99  # a base field the trials do not set still counts
    assert serialise.differences(stored, sweep) == ["base.epochs"]


def test_a_config_stored_with_the_retired_data_seed_still_loads_and_resumes(tmp_path):
    cfg = TrainConfig(records=tmp_path / "records", out=tmp_path / "run", seed=3)
    stored = cfg.to_json()
    assert "seed" not in stored["data"]  # the run's seed keys the pipeline: one field
    stored["data"]["seed"] = 3  # as a run folder from before holds it
    assert serialise.differences(stored, cfg) == []
    assert serialise.from_json(TrainConfig, stored) == cfg
    stored["data"]["buffer"] = 1  # an unknown field is still an error
    assert serialise.differences(stored, cfg) == ["data.buffer"]
    with pytest.raises(UserError, match="unknown PipelineConfig fields: buffer"):
        serialise.from_json(TrainConfig, stored)


@pytest.mark.parametrize("values,message", [
    ({"model": "Nope"}, f"unknown --model 'Nope'; choose one of {', '.join(MODEL_MIN_SIDE)}"),
    ({"model": "InceptionV3", "image_size": 74}, "InceptionV3 needs --image-size >= 75, not 74"),
    ({"model": "TinyCNN", "image_size": 15}, "TinyCNN needs --image-size >= 16, not 15"),
    ({"augment": "mixup"}, "--augment must be one of none, paper, randaugment, augmix, not 'mixup'"),
    ({"batch_size": 0}, "--batch-size must be >= 1, not 0"),
])
def test_each_training_rule_is_one_line(values, message):
    flat = options.from_command_line({k: str(v) for k, v in values.items()}, options.TRAIN)
    with pytest.raises(UserError) as err:
        options.assemble(TrainConfig(), flat, options.TRAIN).validate()
    assert str(err.value) == message


def test_bench_and_the_model_layer_check_the_model_by_the_same_rule():
    from engine.model import BACKBONES, backbone

    with pytest.raises(UserError, match="^InceptionV3 needs --image-size >= 75, not 50$"):
        BenchConfig(image_size=50).validate()
    with pytest.raises(UserError, match="^unknown --model 'Nope'"):
        BenchConfig(model="Nope").validate()
    BenchConfig(model="TinyCNN", image_size=16).validate()
    assert set(BACKBONES) == set(MODEL_MIN_SIDE)
    # A size taken from the records after the command line's config was checked: refused before Keras builds.
    with pytest.raises(UserError, match="^InceptionV3 needs --image-size >= 75, not 50$"):
        backbone(config.ModelConfig(image_size=50))


@pytest.mark.parametrize("command,message", [
    (["compare", "--model", "Nope"], f"unknown --model 'Nope'; choose one of {', '.join(MODEL_MIN_SIDE)}"),
    (["train", "--model", "InceptionV3", "--image-size", "50"], "InceptionV3 needs --image-size >= 75, not 50"),
])
def test_a_bad_model_fails_in_one_line_before_any_work(tmp_path, monkeypatch, capsys, command, message):
    from engine import cli

    records, out = tmp_path / "records", tmp_path / "out"  # neither may be read, built or created
    monkeypatch.setattr(sys, "argv", ["engine", command[0], str(records), *command[1:], "--out", str(out)])
    previous = signal.getsignal(signal.SIGTERM)  # main() installs its own handler
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert list(tmp_path.iterdir()) == []
