"""The package's layers: every import in engine/ points down, never at another
package's private names, and training is used from above only by its public names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "engine"
# data <- model <- training <- study <- bench <- cli, over the base modules.
RANKS = {"engine.data": 1, "engine.model": 2, "engine.training": 3, "engine.study": 4, "engine.bench": 5,
         "engine.cli": 6}
BASE = {"engine", "engine.config", "engine.errors", "engine.io", "engine.machine", "engine.options",
        "engine.progress"}
GUARDED = "engine.training"  # used from outside only through its __all__


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer(name: str) -> str:
    """The layer a module belongs to: a base module, or its sub-package."""
    if name in BASE:
        return name
    return next((prefix for prefix in RANKS if name == prefix or name.startswith(prefix + ".")), name)


def rank(name: str) -> int:
    return 0 if layer(name) in BASE else RANKS[layer(name)]


def public_names() -> set[str]:
    tree = ast.parse((PACKAGE / "training" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("engine/training/__init__.py has no __all__")


def private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def problems(source: str, name: str, public: set[str]) -> list[str]:
    """What is wrong with the imports of module ``name`` (its ``source``)."""
    found = []
    aliases: dict[str, str] = {}  # local name -> engine module it is bound to
    own = layer(name)

    def check(target: str, imported: str | None, line: int) -> None:
        if not target.startswith("engine"):
            return
        where = f"{name}:{line}"
        if rank(target) > rank(name):
            found.append(f"{where} imports {target} from a higher layer")
        other = layer(target) != own
        last = (imported or target.rsplit(".", 1)[-1])
        if other and private(last):
            found.append(f"{where} imports the private {last} of {target}")
        if other and layer(target) == GUARDED:
            if target != GUARDED:
                found.append(f"{where} reaches into {target}: use engine.training's public names")
            elif imported is not None and imported not in public:
                found.append(f"{where} imports {imported}, not in engine.training.__all__")

    for node in ast.walk(ast.parse(source)):  # functions' own imports included
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(alias.name, None, node.lineno)
                if alias.asname and alias.name.startswith("engine"):
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(name.split(".")[:len(name.split(".")) - node.level + (name in BASE)] + [base])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if base.startswith("engine") and is_module(submodule):
                    check(submodule, None, node.lineno)
                    aliases[alias.asname or alias.name] = submodule
                else:
                    check(base, alias.name, node.lineno)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            target = aliases[node.value.id]
            if layer(target) == own:
                continue
            if private(node.attr):
                found.append(f"{name}:{node.lineno} uses the private {target}.{node.attr}")
            if target == GUARDED and node.attr not in public:
                found.append(f"{name}:{node.lineno} uses {target}.{node.attr}, not in engine.training.__all__")
    return found


def test_every_import_points_down_and_at_public_names():
    public = public_names()
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30
    found = [p for path in modules for p in problems(path.read_text(), module_name(path), public)]
    assert not found, "\n".join(found)


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        assert name in BASE or layer(name) in RANKS, f"{name} belongs to no layer"


@pytest.mark.parametrize("source,name,expected", [
    ("from engine.study import sweep", "engine.training.run", "imports engine.study.sweep from a higher layer"),
    ("def f():\n    from engine.bench import runner", "engine.study.sweep", "from a higher layer"),
    ("import engine.cli", "engine.config", "imports engine.cli from a higher layer"),
    ("from engine.data.pipeline import _private", "engine.model.networks", "imports the private _private"),
    ("from engine.training.run import prepare", "engine.study.sweep", "reaches into engine.training.run"),
    ("from engine.training import compiled_classifier", "engine.bench.runner", "not in engine.training.__all__"),
    ("from engine import training\ntraining.graph_key()", "engine.study.sweep", "uses engine.training.graph_key"),
    ("from engine.data import pipeline\npipeline._epoch()", "engine.training.run", "uses the private"),
])
def test_the_check_finds_what_it_looks_for(source, name, expected):
    found = problems(source, name, public_names())
    assert any(expected in p for p in found), found


def test_allowed_imports_pass():
    source = ("from engine import training\nfrom engine.data import pipeline\nimport engine.io\n"
              "training.prepare\nfrom engine.training import prepare, Run\n")
    assert problems(source, "engine.study.sweep", public_names()) == []
