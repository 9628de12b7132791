"""Every command's --help speaks the user's words: no internal names, one way
of showing defaults, placeholders that say what to type, and a distinct help
text per option. The checks are patterns, so a new option is held to them the
moment it exists; each pattern is shown to catch a planted bad string."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from engine.cli import app

# What must never appear in help text, and why.
BAD = {
    # A constant's name from the code, not a word the user types ($VAR is an environment variable).
    "internal constant": re.compile(r"(?<![\w$])[A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9]\b"),
    # A module path (engine.training.x, images.HASH, tf.data); file names (bench.json) are fine.
    "module path": re.compile(r"\b[a-z_][a-z0-9_]+\.(?!(?:json|md|png|csv|toml|h5|keras|tfrecord|html|txt|jpe?g)\b)"
                              r"[A-Za-z_]\w*"),
    # Python keyword syntax (split_by="source", x=None) instead of the option that sets it.
    "python literal": re.compile(r"\b[a-z][a-z0-9]*_[a-z0-9_]*\s*=|\b\w+=(?:[\"']|None\b|True\b|False\b)"),
    "the word None": re.compile(r"\bNone\b"),
    "an empty default": re.compile(r"default:\s*[\])]"),
    "a default in parentheses": re.compile(r"\(default:"),
    "a raw type placeholder": re.compile(r"<[a-z]+(?:\[[^\]]*\])?>"),
}
BOX = re.compile(r"[│╭╮╰╯─]")
ENV_VAR = re.compile(r"\[env var: [^\]]*\]")  # typer's own note for an option read from the environment


def commands() -> list[list[str]]:
    group = typer.main.get_command(app)
    return [[]] + [[name] for name in group.commands]


def help_of(command: list[str]) -> str:
    """The command's --help on a wide terminal, flattened to one line: the
    panels' borders dropped, so text wrapped inside a cell reads on."""
    done = CliRunner().invoke(app, [*command, "--help"], prog_name="engine",
                              env={"COLUMNS": "200", "TERM": "dumb"})
    assert done.exit_code == 0, done.output
    return " ".join(BOX.sub(" ", done.output).split())


def problems(text: str) -> list[str]:
    text = ENV_VAR.sub("", text)
    return [f"{name}: {match.group(0)!r}" for name, pattern in BAD.items() for match in pattern.finditer(text)]


def option_texts(command: list[str]) -> list[str]:
    """Each option's and argument's help without its shown default, as written."""
    group = typer.main.get_command(app)
    params = group.commands[command[0]].params if command else group.params
    return [re.sub(r"\s*\[dim\].*$", "", p.help).replace("\\[", "[").strip().lower()
            for p in params if getattr(p, "help", None)]


def duplicates(texts: list[str]) -> list[str]:
    return sorted({t for t in texts if texts.count(t) > 1})


@pytest.mark.parametrize("command", commands(), ids=lambda c: " ".join(c) or "engine")
def test_help_speaks_the_users_words(command):
    text = help_of(command)
    assert "Usage: engine" in text
    assert not problems(text), problems(text)
    assert not duplicates(option_texts(command))


@pytest.mark.parametrize("planted,name", [
    ("a keras backbone (see MODEL_MIN_SIDE)", "internal constant"),
    ("bits, see images.HASH_SIDES", "module path"),
    ("statistics (engine.training.precise_bn)", "module path"),
    ('held out with split_by="source"', "python literal"),
    ("workers; None = all cores", "the word None"),
    ("a trial [default: ]", "an empty default"),
    ("a trial (default: )", "an empty default"),
    ("i/n slices (default: 0,1)", "a default in parentheses"),
    ("--dry-run <bool> Print", "a raw type placeholder"),
    ("IMAGES <list[Path]> files", "a raw type placeholder"),
    ("--split <str> train", "a raw type placeholder"),
])
def test_each_pattern_catches_what_it_names(planted, name):
    assert any(p.startswith(name + ":") for p in problems(planted)), problems(planted)


def test_the_patterns_let_the_users_words_through():
    fine = ("$SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX [env var: ENGINE_PARALLEL] writes bench.json and "
            "lr_find.png, e.g. 1e-3,1e-4 in mixed_bfloat16 from a *_notop.h5 file, \"COVID=covid\" "
            "[default: quick preset: 8,16,32] (also $ENGINE_VERBOSE=1)")
    assert problems(fine) == []
    assert duplicates(["a", "b", "a"]) == ["a"] and duplicates(["a", "b"]) == []
