"""Atomic writes: a failed write keeps the old file, and run and sweep files are
only ever written through engine.io."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from engine.io import atomic_json, atomic_open, atomic_write

ROOT = Path(__file__).resolve().parents[1]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "summary.json"
    atomic_json(path, {"rows": [1]})
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as f:
            f.write('{"rows": [')  # half written, then the process fails
            raise RuntimeError("killed")
    assert path.read_text() == '{\n "rows": [\n  1\n ]\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


WRITERS = {"write_text", "write_bytes", "savefig"}


def direct_writes(source: str) -> list[int]:
    """Lines that write a file other than through engine.io: ``Path.write_text``,
    ``write_bytes``, ``savefig(path)`` or ``open(..., "w")``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in WRITERS:
            lines.append(node.lineno)
        if name == "open" and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) \
                and set(str(node.args[1].value)) & set("wax"):
            lines.append(node.lineno)
    return lines


def test_run_and_sweep_files_are_written_atomically():
    found = {str(p.relative_to(ROOT)): direct_writes(p.read_text())
             for folder in ("training", "study") for p in (ROOT / "engine" / folder).glob("*.py")}
    assert not {k: v for k, v in found.items() if v}
    assert direct_writes("path.write_text('x')\nopen(p, 'w')\nfig.savefig(path)") == [1, 2, 3]
