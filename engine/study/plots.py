"""The study's figures and the one look they share: ``curves.png``,
``compare.png``, and the colours, sizes and fonts every study plot takes from
here (``clinical``'s ``calibration.png`` included).

A colour means one thing in every figure. The four curve kinds of
``curves.png`` keep the paper's colours (train accuracy yellow, val accuracy
blue, train loss red, val loss green); no setting ever takes one of them. A
setting takes ``SETTING_COLOURS`` by its place in the sweep, so it has the
same colour in ``compare.png`` and ``calibration.png``.

Sizes are for print: a figure is one paper column (``COLUMN`` inches) or a
page's width (``PAGE``), saved at ``DPI``; no text is under ``SMALLEST``
points at that size. Each figure has one legend, outside the data.

The functions take the histories to draw (setting to its runs' ``history.csv``
rows), write the PNG and return the (closed) figure, so a test can inspect
what was drawn.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
import warnings
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from engine.io import save_figure

# The paper's colours for the four curves of one setting.
CURVE_COLOURS = {"accuracy": "gold", "val_accuracy": "tab:blue", "loss": "tab:red", "val_loss": "tab:green"}
CURVE_LABELS = {"accuracy": "train acc", "val_accuracy": "val acc", "loss": "train loss", "val_loss": "val loss"}
# A setting's colour: none of CURVE_COLOURS (nor their near neighbours orange,
# olive and cyan), so "green" never means both val loss and a batch size.
SETTING_COLOURS = ("black", "tab:purple", "tab:brown", "tab:pink", "tab:gray")
# After the colours run out, the same colours again in these line styles.
SETTING_LINES = ("-", "--", "-.", ":")
# A loss above this is drawn at the top edge of curves.png (the paper's axis
# runs from 0 to 1, where accuracy lives) and marked.
CLIP = 1.0
CLIP_MARKER, CLIP_SYMBOL = "^", "▲"  # the marker, and the same shape as text for the caption

COLUMN, PAGE = 3.5, 7.0  # inches: one column of a two-column paper, the page's text width
DPI = 300
SMALLEST = 7  # points: the smallest text a printed column stays readable at
FONTS = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "figure.titlesize": 8,
         "xtick.labelsize": SMALLEST, "ytick.labelsize": SMALLEST, "legend.fontsize": SMALLEST,
         "legend.title_fontsize": SMALLEST}


@contextlib.contextmanager
def figure_style():
    """Agg (no display needed) and the print font sizes, for one figure's making and saving."""
    import matplotlib
    matplotlib.use("Agg")
    with matplotlib.rc_context(FONTS):
        yield


def setting_styles(names: Sequence[str], best: Collection[str] = ()) -> dict[str, dict]:
    """Line properties per setting, by its place in ``names`` (the sweep's
    order, the same list for every figure): a colour of SETTING_COLOURS, then
    the colours again dashed, dash-dotted, dotted. The ``best`` settings are
    drawn thicker with round markers; colour never marks them, so a setting's
    colour does not change with the ranking."""
    out = {}
    for i, name in enumerate(names):
        style = dict(color=SETTING_COLOURS[i % len(SETTING_COLOURS)],
                     linestyle=SETTING_LINES[i // len(SETTING_COLOURS) % len(SETTING_LINES)])
        if name in best:
            style.update(linewidth=1.8, marker="o", markersize=3, zorder=3)
        else:
            style.update(linewidth=1.0, marker=".", markersize=4)
        out[name] = style
    return out


def caption(text: str, width_inches: float) -> str:
    """``text`` wrapped to the figure's width at 8 pt (about 15 characters an inch)."""
    return textwrap.fill(text, max(30, int(width_inches * 15)))


def curve(histories: list[list[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, min, max) of one curve over runs, up to the shortest run."""
    length = min(len(h) for h in histories)
    values = np.array([[np.nan if h[i].get(key) is None else h[i][key] for i in range(length)] for h in histories])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an epoch with no finite value stays a gap
        return np.arange(1, length + 1), np.nanmean(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)


def whole_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def runs_label(histories: list) -> str:
    return f"{len(histories)} run{'s' if len(histories) != 1 else ''}"


def plot_curves(histories: Mapping[str, list[list[dict]]], path: Path):
    """``curves.png``, the paper's layout: one panel per setting with its four
    curves (train/val accuracy and loss, the mean over the runs given, a
    min-max band across them) on one axis from 0 to 1.

    A loss above ``CLIP`` is drawn at the top edge and each such epoch marked
    with a triangle in the curve's colour; the legend and the caption say so,
    with the largest value clipped. One legend under the panels.

    Args:
        histories: Setting to its runs' histories, in sweep order; a setting
            with none gets an empty panel that says so.
        path: Where to write the PNG.

    Returns:
        The figure (already saved and closed).
    """
    with figure_style():
        import matplotlib.pyplot as plt

        settings = list(histories.items())
        cols = min(3, max(len(settings), 1))
        rows = math.ceil(max(len(settings), 1) / cols)
        width = COLUMN if cols == 1 else PAGE
        fig, axes = plt.subplots(rows, cols, figsize=(width, 2.2 * rows + 1.0), squeeze=False, layout="constrained")
        clipped = []  # (value, setting, curve) of each curve's largest clipped loss, in drawing order
        for ax, (setting, runs) in zip(axes.flat, settings):
            clipped += _curves_panel(ax, setting, runs)
        for ax in list(axes.flat)[len(settings):]:
            fig.delaxes(ax)  # a grid's empty cells: no axes without data
        # max keeps the first of equal values, so a tie names the setting drawn first.
        _curves_legend(fig, max(clipped, key=lambda c: c[0], default=None), width)
        save_figure(fig, path, dpi=DPI)
    return fig


def _curves_panel(ax, setting: str, runs: list[list[dict]]) -> list[tuple[float, str, str]]:
    """One setting's panel of ``curves.png``: its four curves, or "no data"
    without runs; returns (largest value, setting, curve label) of each curve
    it clipped."""
    ax.set_title(f"{setting} ({runs_label(runs)})")
    ax.set_ylim(0, CLIP + 0.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy / loss")
    whole_epochs(ax)
    if not runs:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return []
    clipped = []
    for key, colour in CURVE_COLOURS.items():
        top = _clipped_curve(ax, runs, key, colour)
        if top is not None:
            clipped.append((top, setting, CURVE_LABELS[key]))
    return clipped


def _clipped_curve(ax, runs: list[list[dict]], key: str, colour: str) -> float | None:
    """One curve's mean and min-max band, clipped to the axis; returns the
    largest value above ``CLIP``, None when nothing was clipped."""
    epochs, mean, low, high = curve(runs, key)
    ax.plot(epochs, np.clip(mean, 0, CLIP), color=colour, marker=".", markersize=3, linewidth=1.0)
    if len(runs) > 1:
        ax.fill_between(epochs, np.clip(low, 0, CLIP), np.clip(high, 0, CLIP), color=colour, alpha=0.2,
                        linewidth=0)
    # Marked where any run's value is beyond the axis, so a clipped band is never silent.
    clipped = np.nan_to_num(high, nan=-np.inf) > CLIP
    if not clipped.any():
        return None
    ax.scatter(epochs[clipped], np.full(clipped.sum(), CLIP), marker=CLIP_MARKER, color=colour,
               s=14, zorder=3, clip_on=False)
    return float(np.nanmax(high[clipped]))


def _curves_legend(fig, highest: tuple[float, str, str] | None, width: float) -> None:
    """The one legend under the panels and the caption above them; both name
    the clipping when a loss was clipped (``highest``: the largest)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker=".", linewidth=1.0) for c in CURVE_COLOURS.values()]
    labels = list(CURVE_LABELS.values())
    text = ("Training and validation curves per setting: the mean over its finished runs, the band from the "
            "lowest to the highest run.")
    if highest is not None:
        handles.append(Line2D([], [], color="0.3", marker=CLIP_MARKER, linestyle="none"))
        labels.append(f"loss above {CLIP:g}, clipped")
        text += (f" Losses above {CLIP:g} are drawn at the top edge and marked {CLIP_SYMBOL} "
                 f"(largest: {highest[1]} {highest[2]} {highest[0]:.3g}).")
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False,
               handlelength=1.5, columnspacing=1.0)
    fig.suptitle(caption(text, width))


def plot_compare(histories: Mapping[str, list[list[dict]]], path: Path, best: Collection[str] = ()):
    """``compare.png``: validation loss (left) and accuracy (right) of every
    setting on shared axes, the mean over the runs given with a min-max band;
    each setting in its colour of ``setting_styles``, the ``best`` ones
    thicker. One legend under both panels.

    Args:
        histories: Setting to its runs' histories, in sweep order.
        path: Where to write the PNG.
        best: The set of best settings (drawn thicker, "(best)" in the legend).

    Returns:
        The figure (already saved and closed).
    """
    with figure_style():
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D

        styles = setting_styles(list(histories), best)
        drawn = [name for name, runs in histories.items() if runs]
        legend_rows = math.ceil(max(len(drawn), 1) / 3)
        fig, (left, right) = plt.subplots(1, 2, figsize=(PAGE, 2.6 + 0.2 * legend_rows), layout="constrained")
        for name in drawn:
            for ax, key in ((left, "val_loss"), (right, "val_accuracy")):
                epochs, mean, low, high = curve(histories[name], key)
                ax.plot(epochs, mean, **styles[name])
                ax.fill_between(epochs, low, high, color=styles[name]["color"], alpha=0.12, linewidth=0)
        for ax, label in ((left, "validation loss"), (right, "validation accuracy")):
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            whole_epochs(ax)
            if not drawn:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        if drawn:
            handles = [Line2D([], [], **styles[name]) for name in drawn]
            labels = [f"{name} ({runs_label(histories[name])}{', best' if name in best else ''})" for name in drawn]
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(drawn), 3), frameon=False)
        fig.suptitle(caption("Validation loss and accuracy per setting: the mean over its finished runs, the band "
                             "from the lowest to the highest run.", PAGE))
        save_figure(fig, path, dpi=DPI)
    return fig


def plot_splits(comparisons: Sequence[Mapping], path: Path, unit: str = "val loss of the last 3 epochs"):
    """``splits.png``: a forest plot of the settings compared over K train/val
    splits of one image pool, one row per comparison, the same x axis for all.

    Why a forest plot rather than a panel per comparison with x = split: the
    question a reader brings is "how large is each difference, and is it
    clearly away from 0?", which is a position on one shared difference axis
    with one line at 0; panels with their own y scales would make every
    difference look alike, and one axis lets 15 pairs be read down a page.

    In a comparison's row each split has its own line, split 1 at the top (so
    a split that is off in every comparison shows as the same line in every
    row): a black dot is that split's difference of the two settings' seed
    means, the faint dots on its line are the seed-by-seed differences. A
    vertical bar across the row marks the mean over splits and a gray band
    its 95 % interval (the corrected resampled t, wider than the naive one
    since the splits share images); the dotted line is no difference. Right
    of the axis: the verdict, and the mean with its interval in numbers. A
    comparison without finite values says "no data"; one without an interval
    says "no interval". Marks are black and gray (``SETTING_COLOURS``' first
    and last): a row is a pair of settings, so no setting's colour fits it,
    and the curve colours are never used. Always a page wide (``PAGE``): the
    labels, the data and the numbers are three columns that a paper column
    cannot hold. The height grows with the number of comparisons and splits
    (about 9 inches for 15 pairs of 10 splits; rows shrink beyond that).

    Args:
        comparisons: One mapping per row, top to bottom: ``label`` (e.g.
            "batch=16 − batch=8", other − reference), ``by_split`` (K floats,
            NaN where a split has no value), ``by_seed`` (per split the list
            of that split's seed differences; shorter, empty or missing is
            fine), ``difference`` (the mean over splits), ``interval``
            ((low, high) or None when not testable), ``verdict`` (short text,
            may be "").
        path: Where to write the PNG.
        unit: What a difference is a difference in, for the axis label.

    Returns:
        The figure (already saved and closed). For a test: comparison ``i``'s
        split dots are the collection with gid ``"splits i"``, its seed dots
        ``"seeds i"`` (absent when there is nothing finite to draw).
    """
    rows = [_split_row(c) for c in comparisons]
    splits = max((len(r["by_split"]) for r in rows), default=0)
    low, high = _split_span(rows)
    # Decimals that resolve a fiftieth of the axis' span, so an interval's end
    # near 0 is not printed as a bare "0.00" and no digit is noise.
    decimals = max(0, math.ceil(math.log10(50 / (high - low))))
    with figure_style():
        from matplotlib.transforms import blended_transform_factory

        mark, band = SETTING_COLOURS[0], SETTING_COLOURS[-1]
        zero = dict(color="0.55", linewidth=0.8, linestyle=":")
        fig, ax = _split_figure(len(rows), splits)
        beside = blended_transform_factory(ax.transAxes, ax.transData)
        ax.axvline(0, **zero)
        for i, row in enumerate(rows):
            _split_row_marks(ax, i, row, (low + high) / 2, mark, band)
            ax.text(1.02, i, _split_verdict(row, decimals), transform=beside, ha="left", va="center")
        _split_axes(ax, rows, (low, high), unit)
        _split_legend(fig, mark, band, zero)
        fig.suptitle(caption(_split_caption(rows, splits, unit), PAGE))
        save_figure(fig, path, dpi=DPI)
    return fig


def _split_figure(comparisons: int, splits: int):
    """The figure and axes of ``splits.png``: a page wide, as tall as its rows need."""
    import matplotlib.pyplot as plt

    # Inches per row: room for K split lines and two lines of text, but
    # rows shrink (to 0.3) before the figure outgrows a page's 9 inches.
    per_row = max(0.3, min(0.5, 0.26 + 0.025 * splits, 7.0 / max(comparisons, 1)))
    return plt.subplots(figsize=(PAGE, 1.9 + per_row * max(comparisons, 1)), layout="constrained")


def _split_span(rows: list[dict]) -> tuple[float, float]:
    """The x axis of ``splits.png``: every finite value and 0, padded by 6 %
    of the span (-1 to 1, padded, when nothing is finite)."""
    finite = [v for r in rows for v in (*r["by_split"], *(x for s in r["by_seed"] for x in s), r["difference"],
                                        *(r["interval"] or ())) if math.isfinite(v)]
    low, high = (min(finite + [0.0]), max(finite + [0.0])) if finite else (-1.0, 1.0)
    pad = 0.06 * (high - low or 1.0)
    return low - pad, high + pad


def _split_row_marks(ax, i: int, row: dict, middle: float, mark: str, band: str) -> None:
    """Row ``i`` of ``splits.png``: the interval band, the bar at the mean,
    the seed and split dots on one line per split (split 1 at the top), or
    "no data" at ``middle`` when no dot is finite."""
    from matplotlib.patches import Rectangle

    k = len(row["by_split"])
    lines = i + (np.linspace(-0.3, 0.3, k) if k > 1 else np.zeros(k))
    if i:
        ax.axhline(i - 0.5, color="0.9", linewidth=0.5)
    if row["interval"] is not None:
        a, b = row["interval"]
        ax.add_patch(Rectangle((a, i - 0.42), b - a, 0.84, facecolor=band, alpha=0.25, linewidth=0))
    if math.isfinite(row["difference"]):
        ax.plot([row["difference"]] * 2, [i - 0.42, i + 0.42], color=mark, linewidth=1.4)
    seed_x = [x for s in row["by_seed"] for x in s]
    seed_y = [y for s, y in zip(row["by_seed"], lines) for _ in s]
    if seed_x:
        ax.scatter(seed_x, seed_y, s=5, color=mark, alpha=0.3, linewidths=0, gid=f"seeds {i}")
    shown = np.isfinite(row["by_split"])
    if shown.any():
        ax.scatter(np.asarray(row["by_split"])[shown], lines[shown], s=12, color=mark, zorder=3,
                   linewidths=0, gid=f"splits {i}")
    if not shown.any() and not seed_x:
        ax.text(middle, i, "no data", ha="center", va="center", color="0.3",
                bbox=dict(facecolor="white", edgecolor="none", pad=1))


def _split_axes(ax, rows: list[dict], span: tuple[float, float], unit: str) -> None:
    """The axes of ``splits.png``: the shared x span, one labelled row per comparison, the first on top."""
    ax.set_xlim(*span)
    ax.set_ylim(max(len(rows), 1) - 0.5, -0.5)  # the first comparison on top
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.tick_params(axis="y", length=0)
    ax.set_ylabel("pair of settings (other − reference)")
    ax.set_xlabel(f"difference in {unit} (other − reference); below 0: other better")


def _split_legend(fig, mark: str, band: str, zero: dict) -> None:
    """The one legend of ``splits.png``, under the axes: what each mark means."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color=mark, marker="o", markersize=3.5, linestyle="none"),
               Line2D([], [], color=mark, marker="o", markersize=2, alpha=0.3, linestyle="none"),
               Line2D([], [], color=mark, marker="|", markersize=8, markeredgewidth=1.4, linestyle="none"),
               Patch(facecolor=band, alpha=0.25, linewidth=0), Line2D([], [], **zero)]
    labels = ["one split: difference of seed means", "one seed's difference", "mean over splits",
              "95 % interval (corrected resampled t)", "no difference"]
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False, columnspacing=1.2)


def _split_caption(rows: list[dict], splits: int, unit: str) -> str:
    """The caption of ``splits.png`` (unwrapped): the design (``splits`` at
    most per row, the seeds the sweep ran) and how to read a row."""
    seeds = max((n for r in rows for n in r["seeds"]), default=0)
    size = (f"{splits} train/val splits of one image pool" if len({len(r['by_split']) for r in rows}) <= 1
            else f"up to {splits} train/val splits of one image pool")
    if seeds:
        size += f", up to {seeds} seeds each" if _uneven_seeds(rows) else f", {seeds} seeds each"
    return (f"Differences between settings per split ({size}), in {unit}: each row is one "
            "pair, other − reference, below 0 the other setting is better; one line per split, "
            "split 1 at the top. The interval is the corrected resampled t interval of the mean "
            "over splits, which allows for the splits sharing images.")


def _split_row(comparison: Mapping) -> dict:
    """One comparison with floats throughout: None is NaN, ``by_seed`` as long as
    ``by_split`` and finite only (what is drawn), ``seeds`` the seeds given per
    split, NaN ones included (what the sweep ran, for the caption)."""
    def number(v) -> float:
        return math.nan if v is None else float(v)

    by_split = [number(v) for v in comparison.get("by_split") or []]
    given = list(comparison.get("by_seed") or [])
    given = [[number(v) for v in (given[j] if j < len(given) and given[j] is not None else [])]
             for j in range(len(by_split))]
    by_seed = [[v for v in split if math.isfinite(v)] for split in given]
    interval = comparison.get("interval")
    if interval is not None:
        interval = (number(interval[0]), number(interval[1]))
        if not all(math.isfinite(v) for v in interval):
            interval = None
    return {"label": str(comparison.get("label", "")), "by_split": by_split, "by_seed": by_seed,
            "seeds": [len(split) for split in given],
            "difference": number(comparison.get("difference")), "interval": interval,
            "verdict": str(comparison.get("verdict") or "")}


def _uneven_seeds(rows: list[dict]) -> bool:
    return len({n for r in rows for n in r["seeds"] if n}) > 1


def _split_verdict(row: dict, decimals: int) -> str:
    """The text right of a row: the verdict, then the mean [interval] in numbers."""
    def signed(v: float) -> str:
        return f"{v:+.{decimals}f}".replace("-", "−")

    numbers = ""
    if math.isfinite(row["difference"]):
        numbers = signed(row["difference"])
        numbers += (f" [{signed(row['interval'][0])}, {signed(row['interval'][1])}]" if row["interval"]
                    else ", no interval")
    elif any(math.isfinite(v) for v in row["by_split"]):
        numbers = "no interval"
    return "\n".join(t for t in (row["verdict"], numbers) if t)
