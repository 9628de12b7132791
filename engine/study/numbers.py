"""How the study's texts write a number: to the decimal the noise around it
allows (an SD, an interval's half width), never finer: ``pm`` a mean ± SD,
``significant`` a number to its significant digits, ``epochs_text`` the runs'
best epochs. The report and the clinical tables share these rules."""

from __future__ import annotations

import math
import statistics


def fmt(value: float | None, digits: int = 4) -> str:
    """``value`` to ``digits`` decimals; "-" for none."""
    return "-" if value is None else f"{value:.{digits}f}"


def decimals(spread: float | None, default: int = 3, most: int = 4, least: int = 0) -> int:
    """Decimal places that show ``spread`` (an SD, an interval's half width) to
    2 significant digits, between ``least`` and ``most``: a number is not
    shown finer than the noise around it. ``default`` without a spread."""
    if spread is None or not math.isfinite(spread) or spread <= 0:
        return default
    return min(most, max(least, 1 - math.floor(math.log10(spread))))


def pm(mean: float | None, sd: float | None, n: int, default: int = 3, most: int = 4) -> str:
    """"mean ± SD" over ``n`` runs, both to the decimals of ``decimals(sd)``; one run: its value alone."""
    if mean is None:
        return "-"
    if n < 2 or sd is None:
        return f"{mean:.{default}f}"
    places = decimals(sd, default, most)
    return f"{mean:.{places}f} ± {sd:.{places}f}"


def significant(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, written out (1650, 16.5, 0.165; never 1.65e+03)."""
    if value is None:
        return "-"
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.{max(0, digits - 1 - math.floor(math.log10(abs(value))))}f}"


def epochs_text(epochs: list[int]) -> str:
    """Each run's best epoch, or their median and range when there are many runs."""
    if not epochs:
        return "-"
    if len(epochs) <= 5:
        return ", ".join(str(e) for e in epochs)
    return f"{statistics.median_low(epochs)} (median; {min(epochs)}-{max(epochs)})"
