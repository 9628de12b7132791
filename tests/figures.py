"""The print rules every study figure is checked against in the tests."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from PIL import Image

from engine.study import plots


def texts(fig) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def check_reads_at_a_glance(fig, png: Path) -> None:
    """Print size, labelled axes, one legend outside every panel, no text under 7 pt."""
    with Image.open(png) as image:
        width, height = image.size
    assert plots.COLUMN * plots.DPI - 1 <= width <= plots.PAGE * plots.DPI + 1, width
    assert height <= 9.5 * plots.DPI
    assert fig.axes
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
        assert ax.get_legend() is None
    assert len(fig.legends) == 1
    canvas = FigureCanvasAgg(fig)  # the saved figure is closed: draw it again to measure where things are
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_window_extent(renderer)), "the legend covers a panel"
    small = [(t.get_text(), t.get_fontsize()) for t in texts(fig) if t.get_fontsize() < plots.SMALLEST]
    assert not small, small
