"""The README and the pages under docs/: every link resolves (its file, and
its #anchor among the target's headings), the picture is small, and
docs/options.md is the commands' options as --help gives them.

docs/options.md is written by this file: ``python tests/test_docs.py``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # a "# comment" in code is no heading
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not ours to check
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_file():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves(page):
    assert not broken_links(page)


def test_the_readme_links_every_docs_page_and_stays_short():
    readme = (ROOT / "README.md").read_text()
    linked = {Path(t.partition("#")[0]).name for t in LINK.findall(readme) if t.startswith("docs/")}
    assert linked >= {p.name for p in PAGES[1:]} | {"curves.png"}
    assert len(readme.splitlines()) <= 160
    assert (ROOT / "docs" / "curves.png").stat().st_size < 150_000


def test_the_link_check_finds_what_it_looks_for(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "# A page\n\n## Trial processes: `--parallel`\n\n```\n# not a heading\n```\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#trial-processes---parallel) [top](#the-top) [web](https://x.org/y)\n"
                    "[gone](docs/b.md) [no anchor](docs/a.md#not-a-heading)\n\n# The top\n")
    assert broken_links(page) == ["docs/b.md: no such file",
                                  "docs/a.md#not-a-heading: no heading #not-a-heading in a.md"]


def options_reference() -> str:
    """docs/options.md: every command's options, by help panel, from the command line itself."""
    import typer

    from engine.cli import app

    group = typer.main.get_command(app)
    lines = ["# Every option", "", "Back to the [README](../README.md). Generated from the command line "
             "(`python tests/test_docs.py`); `engine COMMAND --help` shows the same.", ""]
    for name, command in group.commands.items():
        lines += [f"## engine {name}", "", (command.help or "").strip().splitlines()[0], ""]
        panels: dict[str, list[str]] = {}
        for param in command.params:
            if not getattr(param, "help", None):
                continue
            default_match = re.search(r"\s*\[dim\]\\\[default: (.*)\]\[/dim\]$", param.help)
            text = param.help[:default_match.start()] if default_match else param.help
            default = default_match[1] if default_match else ""
            if not default and param.show_default and param.default is not None and param.default is not False \
                    and param.default != "":
                default = str(param.default)
            names = " / ".join(param.opts + param.secondary_opts) if param.param_type_name == "option" \
                else (param.metavar or param.name.upper())
            value = f"`{param.metavar}`" if param.param_type_name == "option" and param.metavar else ""
            panel = getattr(param, "rich_help_panel", None) or param.param_type_name.title() + "s"
            # (a table cell: its pipes escaped, even in code; an asterisk is no emphasis)
            cells = [f"`{names}`", value, text.replace("\\[", "[").replace("*", "\\*"), default]
            panels.setdefault(panel, []).append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        for panel, rows in panels.items():
            lines += [f"### {panel}", "", "| option | value | what it does | default |", "|---|---|---|---|", *rows, ""]
    return "\n".join(lines).rstrip() + "\n"


def test_the_options_page_is_the_command_line():
    written = (ROOT / "docs" / "options.md").read_text()
    assert written == options_reference(), "docs/options.md is out of date: python tests/test_docs.py rewrites it"


if __name__ == "__main__":
    (ROOT / "docs" / "options.md").write_text(options_reference())
