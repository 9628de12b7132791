"""The package's layers: every import in engine/ points down, never at another
package's private names, and no chain of imports comes back to where it
started (functions' own imports included, in every rule); training is used from
above only by its public names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "engine"
# results <- data <- model <- training <- study <- bench <- cli, over the base modules.
RANKS = {"engine.results": 0.5, "engine.data": 1, "engine.model": 2, "engine.training": 3, "engine.study": 4,
         "engine.bench": 5, "engine.cli": 6}
BASE = {"engine", "engine.config", "engine.errors", "engine.io", "engine.machine", "engine.options",
        "engine.presets", "engine.progress", "engine.serialise"}
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


def imports(source: str, name: str) -> list[tuple[str, str | None, int, str | None]]:
    """``(module, name imported from it or None, line, local name bound to
    the module or None)`` of every import of module ``name`` (its
    ``source``), those inside functions included: a submodule imported by
    ``from package import submodule`` is the module."""
    found = []
    for node in ast.walk(ast.parse(source)):  # functions' own imports included
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno, alias.asname) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(name.split(".")[:len(name.split(".")) - node.level + (name in BASE)] + [base])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if base.startswith("engine") and is_module(submodule):
                    found.append((submodule, None, node.lineno, alias.asname or alias.name))
                else:
                    found.append((base, alias.name, node.lineno, None))
    return found


def problems(source: str, name: str, public: set[str]) -> list[str]:
    """What is wrong with the imports of module ``name`` (its ``source``)."""
    found = []
    aliases: dict[str, str] = {}  # local name -> engine module it is bound to
    own = layer(name)

    def check(target: str, imported: str | None, line: int) -> None:
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

    for target, imported, line, local in imports(source, name):
        if target.startswith("engine"):
            check(target, imported, line)
            if local:
                aliases[local] = target
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


def import_graph(sources: dict[str, str]) -> dict[str, dict[str, int]]:
    """``module -> {engine module it imports: line}`` of modules given by their sources."""
    return {name: {target: line for target, _, line, _ in reversed(imports(source, name))
                   if target in sources and target != name}
            for name, source in sources.items()}


def circles(graph: dict[str, dict[str, int]]) -> list[str]:
    """One circle per group of modules that import each other (directly or
    through a chain), as ``a:3 -> b:7 -> a`` with each import's line.

    The groups are Tarjan's strongly connected components: one of two or more
    modules holds a circle; the shortest one through its first module is shown.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:  # the root of a group, whose other members sit above it on the stack
            group = set()
            while node not in group:
                group.add(stack.pop())
            groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found = []
    for group in (g for g in groups if len(g) > 1):
        path = shortest_circle(graph, group, min(group))
        found.append(" -> ".join(f"{a}:{graph[a][b]}" for a, b in zip(path, path[1:])) + f" -> {path[-1]}")
    return found


def shortest_circle(graph: dict[str, dict[str, int]], group: set[str], start: str) -> list[str]:
    """The modules of the shortest circle from ``start`` back to it within ``group``, ``start`` at both ends."""
    previous: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:  # breadth first
        following = []
        for node in frontier:
            for target in sorted(graph[node]):
                if target == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if target in group and target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is in no circle of {sorted(group)}")


def test_every_import_points_down_and_at_public_names():
    public = public_names()
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30
    found = [p for path in modules for p in problems(path.read_text(), module_name(path), public)]
    assert not found, "\n".join(found)


def test_no_import_circle():
    # Imports inside functions count: they only delay the circle to the first call.
    sources = {module_name(path): path.read_text() for path in PACKAGE.rglob("*.py")}
    found = circles(import_graph(sources))
    assert not found, "modules that import each other:\n" + "\n".join(found)


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


@pytest.mark.parametrize("graph,expected", [
    ({"a": {"b": 1}, "b": {"a": 2}}, ["a:1 -> b:2 -> a"]),
    ({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}, ["a:1 -> b:2 -> c:3 -> a"]),
    # Two circles through a: the shortest is shown; a separate group is its own line.
    ({"a": {"b": 1, "c": 2}, "b": {"c": 3}, "c": {"a": 4}, "x": {"y": 5}, "y": {"x": 6}},
     ["a:2 -> c:4 -> a", "x:5 -> y:6 -> x"]),
    ({"a": {"b": 1, "c": 2}, "b": {"c": 3}, "c": {}}, []),  # a diamond is no circle
    ({"a": {}}, []),
])
def test_the_circle_check_on_made_up_graphs(graph, expected):
    assert sorted(circles(graph)) == expected


def test_the_circle_check_reads_imports_inside_functions():
    sources = {"engine.study.launch": "def run():\n    from engine.study.sweep import trials\n",
               "engine.study.sweep": "import json\n\n\ndef plan():\n    from engine.study import launch\n",
               "engine.study.report": "from engine.study import sweep\n"}
    assert circles(import_graph(sources)) == ["engine.study.launch:2 -> engine.study.sweep:5 -> engine.study.launch"]


def test_an_import_of_a_higher_layer_inside_a_method_is_found():
    source = "class Run:\n    def fit(self):\n        if True:\n            import engine.study.sweep as s\n"
    assert problems(source, "engine.training.run", public_names()) == \
        ["engine.training.run:4 imports engine.study.sweep from a higher layer"]


def test_training_public_names_are_the_lazy_table():
    import engine.training as training

    assert training.__all__ == sorted(training._PUBLIC)  # noqa: SLF001 - the table the literal mirrors
    assert all(getattr(training, name) is not None for name in training.__all__)
