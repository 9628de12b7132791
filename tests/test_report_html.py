"""report.html (engine.study.webpage): a report's markdown as one self-contained page.

The page is parsed back with the standard library's HTMLParser into a small
tree, and its structure checked: lists, tables and their numeric cells,
embedded images in the sections that cite them, folded sections, escaping.
No TensorFlow: the module must not need it.
"""

from __future__ import annotations

import base64
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine.study import webpage

# Elements that have no end tag.
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                found += [child] * (child.tag == tag) + child.find_all(tag)
        return found

    def ancestors(self) -> list[Node]:
        node, chain = self.parent, []
        while node is not None:
            chain.append(node)
            node = node.parent
        return chain

    def nearest(self, tag: str) -> Node | None:
        return next((a for a in self.ancestors() if a.tag == tag), None)

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def elements(self) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node)]


class TreeBuilder(HTMLParser):
    """A tree of the page that fails on any end tag closing another element (the nesting must be valid)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Node(tag, dict(attrs), self.current))

    def handle_endtag(self, tag):
        assert self.current.tag == tag, f"</{tag}> closes <{self.current.tag}>"
        self.current = self.current.parent

    def handle_data(self, data):
        self.current.children.append(data)


def tree(page: str) -> Node:
    builder = TreeBuilder()
    builder.feed(page)
    builder.close()
    assert builder.current is builder.root, f"<{builder.current.tag}> never closed"
    return builder.root


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour, written by hand (no imaging library)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))  # filter byte 0, then the pixels
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>'

REPORT = """# lr study (quick preset)

What was run: 2 settings x 3 seeds.
- a bullet right after a paragraph line
- and a second one

| setting | runs | val loss | not finished | interval | p | share | comment |
|---|---|---|---|---|---|---|---|
| lr=1e-4 | 3/3 | 0.471 ± 0.058 | - | 0.91 (0.85-0.95) | - | 45% | <script>alert(1)</script> |
| lr=1e-3 | 3/3 | -0.12 | 2 diverged | +0.032 (-0.020 to +0.085; p = 0.23) | 0.04 | 7 % | a & b *stressed* |

## Ranking (validation only)

Best on validation: **lr=1e-4**.
- lr=1e-3: worse.

## Across splits

The spread of each setting, drawn in splits.png:

![splits](splits.png)

```
## not a section: code
```

## The paper's claims

1. the first claim
2. the second claim

## Test metrics (reported, never used to choose)

`calibration.svg` shows the reliability diagrams.

![calibration](calibration.svg)

## Figures

curves.png and missing.png, and one outside the folder.

![curves](curves.png)

![gone](missing.png)

![outside](../outside.png)
"""

SECTIONS = ["Ranking (validation only)", "Across splits", "The paper's claims",
            "Test metrics (reported, never used to choose)", "Figures"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "splits.png").write_bytes(png(3, 2, (200, 30, 30)))
    (tmp_path / "sweep" / "curves.png").write_bytes(png(2, 3, (30, 30, 200)))
    (tmp_path / "sweep" / "calibration.svg").write_bytes(SVG)
    (tmp_path / "outside.png").write_bytes(png(1, 1, (0, 0, 0)))
    return tmp_path / "sweep"


@pytest.fixture
def page(folder: Path) -> Node:
    return tree(webpage.render(REPORT, folder, "lr study <quick>"))


def sections(page: Node) -> list[Node]:
    return page.find_all("section")


def heading(section: Node) -> str:
    return section.find_all("h2")[0].text()


def test_the_page_is_a_whole_document_that_loads_nothing_else(folder: Path, page: Node):
    text = webpage.render(REPORT, folder, "lr study <quick>")
    assert text.lower().startswith("<!doctype html>")
    assert [m.attrs.get("charset") for m in page.find_all("meta") if "charset" in m.attrs] == ["utf-8"]
    assert [t.text() for t in page.find_all("title")] == ["lr study <quick>"]
    assert len(page.find_all("style")) == 1
    assert not page.find_all("script") and not page.find_all("link")
    for tag in ("img", "a", "source", "iframe"):
        for node in page.find_all(tag):
            assert all((node.attrs.get(k) or "data:").startswith("data:") for k in ("src", "href"))
    assert "url(" not in page.find_all("style")[0].text()


def test_every_list_item_is_in_a_list_even_right_after_a_paragraph_line(page: Node):
    items = page.find_all("li")
    assert len(items) == 5
    assert all(item.nearest("ul") or item.nearest("ol") for item in items)
    first = page.find_all("ul")[0]
    assert [li.text() for li in first.find_all("li")] == ["a bullet right after a paragraph line",
                                                          "and a second one"]
    assert page.find_all("p")[0].text() == "What was run: 2 settings x 3 seeds."
    ranking = next(s for s in sections(page) if heading(s) == "Ranking (validation only)")
    assert [li.text() for li in ranking.find_all("li")] == ["lr=1e-3: worse."]
    assert [len(o.find_all("li")) for o in page.find_all("ol")] == [2]


def test_tables_have_a_header_and_right_aligned_numbers(page: Node):
    tables = page.find_all("table")
    assert len(tables) == 1
    for table in tables:
        heads = table.find_all("thead")
        assert len(heads) == 1 and heads[0].find_all("th")
        assert not heads[0].find_all("td")
    body = tables[0].find_all("tbody")[0]
    cells = [[(td.text().strip(), "num" in td.classes()) for td in tr.find_all("td")] for tr in body.find_all("tr")]
    assert cells == [
        [("lr=1e-4", False), ("3/3", True), ("0.471 ± 0.058", True), ("-", False), ("0.91 (0.85-0.95)", True),
         ("-", True), ("45%", True), ("<script>alert(1)</script>", False)],
        [("lr=1e-3", False), ("3/3", True), ("-0.12", True), ("2 diverged", False),
         ("+0.032 (-0.020 to +0.085; p = 0.23)", True), ("0.04", True), ("7 %", True), ("a & b stressed", False)]]
    # A dash sits with its column: right in a column of numbers ("p"), left in one of prose ("not finished").
    header = {th.text(): "num" in th.classes() for th in tables[0].find_all("th")}
    assert header == {"setting": False, "runs": True, "val loss": True, "not finished": False, "interval": True,
                      "p": True, "share": True, "comment": False}


@pytest.mark.parametrize("text, kind", [
    ("0.91", "number"), ("+0.03", "number"), ("−1.5", "number"), ("1e-4", "number"), ("12%", "number"),
    ("0.91 (0.85-0.95)", "number"), ("0.912 ± 0.053 (0.875-0.950)", "number"), ("11.9 (2.4 to 40.0)", "number"),
    ("0.13 (-∞ to 0.98)", "number"), ("+0.1 (-0.2 to +0.4; no p-value†)", "number"), ("3 (median; 2-5)", "number"),
    ("3, 3", "number"), ("2/3", "number"), ("-", "dash"), ("—", "dash"), ("", "empty"),
    ("batch=8", "prose"), ("2 diverged", "prose"), ("ensemble of 2 models", "prose"), ("none (below)", "prose"),
    ("reference", "prose"), ("12 s", "prose"), ("5 x 3", "prose")])
def test_what_counts_as_a_number_in_a_cell(text: str, kind: str):
    assert webpage.cell_kind(text) == kind


def test_images_are_embedded_in_the_section_that_cites_them(folder: Path, page: Node):
    images = page.find_all("img")
    assert len(images) == 3
    embedded = {}
    for img in images:
        kind, _, data = img.attrs["src"].partition(";base64,")
        content = base64.b64decode(data, validate=True)
        name = next(p.name for p in folder.iterdir() if p.read_bytes() == content)
        assert kind == ("data:image/svg+xml" if name.endswith(".svg") else "data:image/png")
        assert img.attrs["alt"] == name.split(".")[0]
        section = img.nearest("section")
        assert name in section.text(), f"{name} is not in the section that cites it"
        embedded[name] = heading(section)
    assert embedded == {"splits.png": "Across splits", "calibration.svg": SECTIONS[3], "curves.png": "Figures"}


def test_a_missing_image_is_a_visible_note_not_a_broken_image(page: Node):
    notes = [n for tag in ("span", "p") for n in page.find_all(tag) if "missing" in n.classes()]
    assert [n.text() for n in notes if "missing.png" in n.text()] == ["missing image: missing.png"]
    # A file outside the report's folder is never read: the page is the folder's, nothing else.
    assert any("../outside.png" in n.text() and "not embedded" in n.text() for n in notes)
    assert len(notes) == 2
    assert all(n.nearest("section") is not None for n in notes)


def test_later_sections_fold_and_named_ones_stay_open(folder: Path, page: Node):
    found = sections(page)
    assert [heading(s) for s in found] == SECTIONS  # the "## " in the code block is no section
    assert not any(s.nearest("section") for s in found)  # sections are not nested
    for index, section in enumerate(found):
        details = [d for d in section.elements() if d.tag == "details"]
        if index < 2:
            assert not details and not section.find_all("summary")
        else:
            assert len(details) == 1 and section.elements() == details
            summary = details[0].elements()[0]
            assert summary.tag == "summary" and summary.text().strip() == heading(section)
            assert len(details[0].elements()) > 1  # the content folds with it
    # The title and the opening lines stand before any section, open.
    h1 = page.find_all("h1")[0]
    assert h1.text() == "lr study (quick preset)" and not h1.nearest("section") and not h1.nearest("details")
    assert not page.find_all("table")[0].nearest("section")

    opened = tree(webpage.render(REPORT, folder, "t", open_sections=("Test metrics (reported, never used to choose)",)))
    folded = [heading(s) for s in sections(opened) if s.find_all("details")]
    assert folded == ["The paper's claims", "Figures"]


def test_markdown_text_is_escaped_not_passed_through(page: Node):
    assert not page.find_all("script")
    cell = [td for td in page.find_all("td") if "alert" in td.text()]
    assert [td.text() for td in cell] == ["<script>alert(1)</script>"] and not cell[0].elements()
    assert [em.text() for em in page.find_all("em")] == ["stressed"]  # markdown itself still renders


def test_no_sections_and_no_images_is_still_a_page(tmp_path: Path):
    page = tree(webpage.render("# only a title\n\nand a line\n", tmp_path, "t"))
    assert not page.find_all("section") and [p.text() for p in page.find_all("p")] == ["and a line"]


def test_the_module_imports_no_tensorflow():
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
            "import engine.study.webpage")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_sweeps_report_html_has_every_figure_in_the_section_that_cites_it(tmp_path):
    """The page ``engine report`` writes for a finished sweep (made-up run folders, no training)."""
    from engine.study import report
    from test_report_output import epoch_rows, fake_sweep

    fake_sweep(tmp_path, lambda setting, seed: epoch_rows([0.7, 0.5 - 0.01 * seed, 0.4]),
               scores=lambda setting, seed: [0.9, 0.6, 0.5, 0.2, 0.3, 0.6 - 0.1 * seed])
    report.write(tmp_path)
    root = tree((tmp_path / "report.html").read_text())
    assert all(item.nearest("ul") or item.nearest("ol") for item in root.find_all("li"))
    for table in root.find_all("table"):
        head = table.find_all("thead")
        assert head and head[0].find_all("th"), "a table without a header row"
    images = root.find_all("img")
    assert {img.attrs["alt"] for img in images} == {"curves", "compare", "calibration"}
    for img in images:
        kind, data = img.attrs["src"].split(",", 1)
        assert kind == "data:image/png;base64"
        assert base64.b64decode(data) == (tmp_path / f"{img.attrs['alt']}.png").read_bytes()
        section = img.nearest("section")
        assert section is not None and f"{img.attrs['alt']}.png" in section.text(), img.attrs["alt"]
    # The answer and the claims stand open above the first section; the details fold.
    main = root.find_all("main")[0]
    assert "Answer (validation only):" in main.text().split(sections(root)[0].text())[0]
    assert any(s.find_all("details") for s in sections(root))
