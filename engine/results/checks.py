"""The checks every metric function puts its arguments through (vectors of
matching length, labels of 0 and 1, a threshold and a level in range), and
the small numeric helpers they share."""

from __future__ import annotations

import numpy as np
from scipy import stats


# Resamples drawn and evaluated together: bounds the memory of one step to
# about _CHUNK x n integers whatever the number of resamples.
_CHUNK = 256


def _vector(x, name: str) -> np.ndarray:
    """A 1-D array; a column ``(n, 1)``, the shape of Keras predictions, is flattened."""
    a = np.asarray(x)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must have shape (n,) or (n, 1), got {a.shape}")
    return a


def _labels(x, name: str) -> np.ndarray:
    a = _vector(x, name)
    if a.size and not np.all((a == 0) | (a == 1)):
        raise ValueError(f"{name} must be 0 or 1, got values {np.unique(a)[:5].tolist()}")
    return a.astype(np.int64)


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"length mismatch: {a.shape[0]} versus {b.shape[0]}")


def _checked(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(y_true int64, scores float64)``; NaN scores would rank arbitrarily."""
    y = _labels(y_true, "y_true")
    s = _vector(scores, "scores").astype(np.float64)
    _same_length(y, s)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return y, s


def _threshold(threshold: float) -> float:
    t = float(threshold)
    if np.isnan(t):
        raise ValueError("threshold must be a number, got nan")
    return t


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, ``nan`` where ``den == 0`` and without warnings."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _positive_count(count: int, name: str) -> None:
    if int(count) != count or count < 1:
        raise ValueError(f"{name} must be a positive integer, got {count!r}")


def _count(k: int, n: int) -> int:
    if int(k) != k or int(n) != n or not 0 <= k <= n:
        raise ValueError(f"need integer counts with 0 <= k <= n, got k={k!r}, n={n!r}")
    return int(k)


def _level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(level)


def _z(level: float) -> float:
    """The two-sided normal quantile of ``level`` (1.96 at 0.95)."""
    return float(stats.norm.ppf(0.5 + _level(level) / 2))


def _json_float(x: float) -> float | None:
    return None if np.isnan(x) else float(x)
