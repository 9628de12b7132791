"""How the study's texts write a number: to the decimal the noise around it
allows (an SD, an interval's half width), never finer. The report and the
clinical tables share these rules."""

from __future__ import annotations

import math


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
