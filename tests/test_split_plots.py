"""``splits.png`` (``plots.plot_splits``): the forest plot of per-split
differences between settings, drawn from hand-written comparisons (no
training): page-wide PNG, one dot per split and per seed, "no data" and "no
interval" said rather than crashed on, and the figure's print rules."""

from __future__ import annotations

import math

from matplotlib.colors import to_rgba
from PIL import Image

from engine.study import plots
from figures import check_reads_at_a_glance, texts

NAN = float("nan")


def comparison(label: str, by_split, by_seed, interval=(-0.01, 0.03), verdict="cannot tell") -> dict:
    finite = [v for v in by_split if not math.isnan(v)]
    return {"label": label, "by_split": list(by_split), "by_seed": by_seed,
            "difference": sum(finite) / len(finite) if finite else NAN, "interval": interval, "verdict": verdict}


def collection(fig, gid: str):
    found = [c for c in fig.axes[0].collections if c.get_gid() == gid]
    return found[0] if found else None


def points(fig, gid: str) -> int:
    found = collection(fig, gid)
    return 0 if found is None else len(found.get_offsets())


def png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        return image.size


def four() -> list[dict]:
    """Three splits each: a full comparison, one with a NaN split, a ragged seed list and no
    interval, and one with nothing at all."""
    return [
        comparison("batch=16 − batch=8", [0.02, 0.03, 0.01], [[0.01, 0.03], [0.02, 0.04], [0.0, 0.02]],
                   interval=(0.0, 0.04), verdict="worse"),
        comparison("batch=32 − batch=8", [0.01, NAN, -0.02], [[0.0, 0.02], [], [-0.03, NAN, -0.01]],
                   interval=None, verdict=""),
        comparison("batch=64 − batch=8", [-0.03, -0.04, -0.02], [[-0.03]], verdict="better"),
        comparison("batch=128 − batch=8", [NAN, NAN, NAN], [[], [], []], interval=None, verdict=""),
    ]


def test_splits_png_draws_a_dot_per_split_and_per_seed(tmp_path):
    fig = plots.plot_splits(four(), tmp_path / "splits.png")
    assert png_size(tmp_path / "splits.png")[0] == plots.PAGE * plots.DPI
    check_reads_at_a_glance(fig, tmp_path / "splits.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [c["label"] for c in four()]
    assert ax.get_xlabel() == "difference in val loss of the last 3 epochs (other − reference); below 0: other better"
    # K split dots (the finite ones) and the finite seed dots per comparison.
    assert [points(fig, f"splits {i}") for i in range(4)] == [3, 2, 3, 0]
    assert [points(fig, f"seeds {i}") for i in range(4)] == [6, 4, 1, 0]
    # A seed sits on its split's line: comparison 1's split 3 seeds share that split dot's height.
    split_y = collection(fig, "splits 1").get_offsets()[:, 1]
    seed_y = collection(fig, "seeds 1").get_offsets()[:, 1]
    assert list(seed_y) == [split_y[0], split_y[0], split_y[1], split_y[1]]
    # The interval band spans low to high in the row; none where there is no interval.
    bands = [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches]
    assert [tuple(round(v, 6) for v in band) for band in bands] == [(0.0, 0.04), (-0.01, 0.03)]
    shown = [t.get_text() for t in texts(fig)]
    assert "worse\n+0.020 [+0.000, +0.040]" in shown
    assert "−0.005, no interval" in shown  # no verdict, no interval: the mean alone, said so
    assert "no data" in shown
    # Black and gray marks: never a curve's colour.
    marks = {tuple(c.get_facecolor()[0][:3]) for c in ax.collections}
    assert not marks & {to_rgba(c)[:3] for c in plots.CURVE_COLOURS.values()}
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "one split: difference of seed means", "one seed's difference", "mean over splits",
        "95 % interval (corrected resampled t)", "no difference"]
    assert "3 train/val splits" in fig.get_suptitle() and "up to 3 seeds" in fig.get_suptitle()


def test_splits_png_grows_with_the_comparisons(tmp_path):
    one = plots.plot_splits(four()[:1], tmp_path / "one.png", unit="val AUC")
    check_reads_at_a_glance(one, tmp_path / "one.png")
    assert "val AUC" in one.axes[0].get_xlabel()
    many = [comparison(f"lr={a} − lr={b}", [0.01 * (a - b) + 0.002 * k for k in range(10)],
                       [[0.01 * (a - b) + 0.002 * k + 0.001 * s for s in range(5)] for k in range(10)])
            for a in range(6) for b in range(a)]
    assert len(many) == 15
    fig = plots.plot_splits(many, tmp_path / "many.png")
    check_reads_at_a_glance(fig, tmp_path / "many.png")
    width, height = png_size(tmp_path / "many.png")
    assert width == plots.PAGE * plots.DPI
    assert png_size(tmp_path / "one.png")[1] < height <= 9.5 * plots.DPI
    assert [points(fig, f"splits {i}") for i in range(15)] == [10] * 15
    assert [points(fig, f"seeds {i}") for i in range(15)] == [50] * 15


def test_splits_png_without_any_number(tmp_path):
    nothing = [comparison("a − b", [NAN, NAN], [], interval=None, verdict="cannot tell"),
               {"label": "c − d", "by_split": [None, None], "by_seed": [None], "difference": None,
                "interval": (NAN, NAN), "verdict": None}]
    fig = plots.plot_splits(nothing, tmp_path / "nothing.png")
    assert png_size(tmp_path / "nothing.png")[0] == plots.PAGE * plots.DPI
    assert not fig.axes[0].collections and not fig.axes[0].patches
    assert [t.get_text() for t in texts(fig)].count("no data") == 2
    plots.plot_splits([], tmp_path / "empty.png")
    assert png_size(tmp_path / "empty.png")[0] == plots.PAGE * plots.DPI
