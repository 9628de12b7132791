"""report.md as one self-contained HTML page (the sweep's report.html).

The report is written once, as markdown (``engine.study.report``); this module
renders that text with markdown-it-py (CommonMark plus tables) into a single
HTML file a reader can open or mail anywhere: the images are embedded as
``data:`` URIs and the style is inline, so the page loads nothing else.

On top of plain rendering it adds what a long report needs to be read:
sections after the first two fold away (``<details>``), numbers in tables are
right-aligned in tabular figures, and an image whose file is missing says so
in the text instead of showing a broken picture.

Pure Python: imports no TensorFlow, so ``engine report`` stays fast.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token

# How many "## " sections are shown open before the rest fold away.
OPEN_FIRST = 2

# The image types a page can show from a data: URI, by file suffix.
MEDIA = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".gif": "image/gif", ".webp": "image/webp"}

# A number as the report writes one: a sign, decimals, an exponent, a percent sign; or an unbounded end.
NUMBER = re.compile(r"[+\-−]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+\-]?\d+)?%?|[+\-−]?∞|\b(?:inf|nan)\b")
# The words an interval or a test may carry beside its numbers: "0.91 (0.85 to 0.95; p = 0.03)",
# "0.12 (no p-value†)", "3 (median; 2-5)".
NUMBER_WORDS = {"to", "p", "no", "p-value", "median"}
# What may stand between those numbers and words.
NUMBER_SYMBOLS = set(" ±%()[],;:/=<>≤≥≈~†–—-")
WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
# A cell that says "no value", aligned as its column is.
DASHES = {"-", "–", "—"}

STYLE = """
body{margin:0;padding:1rem;color:#1b1b1b;background:#fff;
 font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:60rem;margin:0 auto}
h1{font-size:1.6rem;margin:.5rem 0 1rem}
h2{font-size:1.25rem;margin:1.25rem 0 .5rem}
section{border-top:1px solid #ddd}
summary{cursor:pointer;margin:1.25rem 0 .5rem}
summary h2{display:inline;margin:0}
div.table{overflow-x:auto;margin:1rem 0}
table{border-collapse:collapse;font-size:.9rem}
th,td{border:1px solid #c8c8c8;padding:.25rem .5rem;text-align:left;vertical-align:top}
thead th{background:#ececec}
tbody tr:nth-child(even){background:#f6f6f6}
th.num,td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}
pre{overflow-x:auto;background:#f6f6f6;padding:.5rem .75rem}
img{display:block;max-width:100%;height:auto;margin:1rem 0}
.missing{color:#a40000;font-style:italic}
"""


def render(markdown: str, folder: Path, title: str, open_sections: tuple[str, ...] = ()) -> str:
    """report.md's text -> a whole HTML document (str).

    Args:
        markdown: The report's markdown (CommonMark with tables; raw HTML in
            it is shown as text, never passed through).
        folder: Where the images the markdown names live (the sweep folder);
            each is read and embedded, so the page is one file.
        title: The page's ``<title>``.
        open_sections: Headings (their text, without "## ") of sections to
            show open wherever they stand.

    The layout: the text before the first top-level ``## `` heading (the
    title and the opening lines) is shown first, open. Each ``## `` heading
    starts a ``<section>``; the first ``OPEN_FIRST`` (2) sections and those
    named in ``open_sections`` are shown open, every other one folds:
    ``<details><summary><h2>heading</h2></summary>...</details>``.

    Table cells that hold a number (a sign, ±, %, an interval such as
    "0.91 (0.85-0.95)" or "+0.03 (-0.01 to +0.07; p = 0.2)") get
    ``class="num"`` and are right-aligned; a dash ("-", "—") does too unless
    its column holds prose; a header does when its column holds no prose.
    An image that is not a png/svg/jpeg/gif/webp file inside ``folder``
    (missing, elsewhere, or a URL) shows as a note in the text.
    """
    md = parser()
    env = {"folder": Path(folder)}
    tokens = md.parse(markdown, env)
    mark_numbers(tokens)
    preamble, sections = split_sections(tokens)
    body = [md.renderer.render(preamble, md.options, env)]
    for index, (heading, content) in enumerate(sections):
        shown = index < OPEN_FIRST or plain_text(heading[1].children or []).strip() in open_sections
        body.append(section_html(md.renderer.render(heading, md.options, env),
                                 md.renderer.render(content, md.options, env), shown))
    return page(title, "".join(body))


def parser() -> MarkdownIt:
    """CommonMark with tables, raw HTML off (so text is escaped), images embedded, tables scrollable."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.add_render_rule("image", image_rule)
    md.add_render_rule("table_open", table_open_rule)
    md.add_render_rule("table_close", table_close_rule)
    return md


def page(title: str, body: str) -> str:
    """The whole document around the rendered body."""
    return ('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
            f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n")


def section_html(heading: str, content: str, shown: bool) -> str:
    """One "## " section: open, or folded with its heading as the summary."""
    if shown:
        return f"<section>\n{heading}{content}</section>\n"
    return f"<section>\n<details>\n<summary>{heading.rstrip()}</summary>\n{content}</details>\n</section>\n"


def split_sections(tokens: list[Token]) -> tuple[list[Token], list[tuple[list[Token], list[Token]]]]:
    """The tokens before the first top-level h2, and each h2's (heading tokens, content tokens).

    Walking tokens rather than splitting the text on "## " lines: a "## " in
    a code block or a list item is no section."""
    preamble: list[Token] = []
    sections: list[tuple[list[Token], list[Token]]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.type == "heading_open" and token.tag == "h2" and token.level == 0:
            sections.append((tokens[i:i + 3], []))  # heading_open, inline, heading_close
            i += 3
            continue
        (sections[-1][1] if sections else preamble).append(token)
        i += 1
    return preamble, sections


def plain_text(tokens: list[Token]) -> str:
    """What inline tokens say, without their markup."""
    parts = []
    for token in tokens:
        if token.type in ("text", "code_inline"):
            parts.append(token.content)
        elif token.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif token.children:
            parts.append(plain_text(token.children))
    return "".join(parts)


def cell_kind(text: str) -> str:
    """"number", "dash", "prose" or "empty": how a table cell is aligned.

    A number must lead the cell; after it only numbers, the words of
    ``NUMBER_WORDS`` and the symbols of ``NUMBER_SYMBOLS`` may follow, so
    "0.91 ± 0.02 (0.88-0.95)" is a number and "2 diverged" or "ensemble of 2
    models" is prose."""
    text = " ".join(text.split())
    if not text:
        return "empty"
    if text in DASHES:
        return "dash"
    if not NUMBER.match(text):
        return "prose"
    rest = NUMBER.sub(" ", text)
    rest = WORD.sub(lambda word: " " if word[0].lower() in NUMBER_WORDS else word[0], rest)
    return "number" if set(rest) <= NUMBER_SYMBOLS else "prose"


def mark_numbers(tokens: list[Token]) -> None:
    """``class="num"`` on the table cells that hold numbers (see ``render``), in place."""
    headers: list[Token] = []
    cells: list[tuple[Token, int, str]] = []  # (td_open, column, kind)
    column = 0
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            headers, cells = [], []
        elif token.type == "tr_open":
            column = 0
        elif token.type in ("th_open", "td_open"):
            if token.type == "th_open":
                headers.append(token)
            else:
                cells.append((token, column, cell_kind(plain_text(tokens[i + 1].children or []))))
            column += 1
        elif token.type == "table_close":
            # A column is numeric when none of its cells is prose; its dashes then align with its numbers.
            prose = {c for _, c, kind in cells if kind == "prose"}
            for cell, c, kind in cells:
                if kind == "number" or (kind == "dash" and c not in prose):
                    cell.attrJoin("class", "num")
            for c, header in enumerate(headers):
                if c not in prose and any(kind != "empty" for _, col, kind in cells if col == c):
                    header.attrJoin("class", "num")


def local_image(folder: Path, src: str) -> Path | None:
    """The file ``src`` names inside ``folder``, if it is an image type a page can embed; else None.

    Only relative paths that stay inside the folder: the page must load nothing from elsewhere."""
    if "://" in src or src.startswith(("/", "data:")) or Path(src).suffix.lower() not in MEDIA:
        return None
    root = folder.resolve()
    path = (root / src).resolve()
    return path if path.is_relative_to(root) else None


def image_html(folder: Path, src: str, alt: str) -> str:
    """An ``<img>`` with the file embedded, or the note saying why there is none."""
    path = local_image(folder, src)
    if path is None:
        note = f"image not embedded (only png, svg, jpeg, gif or webp files in the report's folder are): {src}"
    else:
        try:
            data = path.read_bytes()
        except OSError:
            note = f"missing image: {src}"
        else:
            uri = f"data:{MEDIA[Path(src).suffix.lower()]};base64,{base64.b64encode(data).decode('ascii')}"
            return f'<img src="{uri}" alt="{html.escape(alt)}">'
    return f'<span class="missing">{html.escape(note)}</span>'


def image_rule(renderer: RendererHTML, tokens: list[Token], idx: int, options: Any, env: dict) -> str:
    """markdown-it's render rule for ``![alt](path)``."""
    token = tokens[idx]
    # markdown-it percent-encodes the destination ("my plot.png" -> "my%20plot.png"); the file has the plain name.
    src = unquote(str(token.attrGet("src") or ""))
    return image_html(env["folder"], src, plain_text(token.children or []))


def table_open_rule(renderer: RendererHTML, tokens: list[Token], idx: int, options: Any, env: dict) -> str:
    """A wide table scrolls in its own box instead of widening the page."""
    return '<div class="table">\n' + renderer.renderToken(tokens, idx, options, env)


def table_close_rule(renderer: RendererHTML, tokens: list[Token], idx: int, options: Any, env: dict) -> str:
    return renderer.renderToken(tokens, idx, options, env) + "</div>\n"
