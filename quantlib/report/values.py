"""Numbers as report.json holds them, and as the page shows them.

JSON has no infinity, so report.json writes an SQNR of identical outputs as the string
``"inf"``; every reader of a report goes through :func:`number` to get a float back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def number(value: Any) -> float | None:
    """A float from a report value (``"inf"`` included); None when absent or not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def pct(value: Any) -> str:
    """A fraction as percent, 2 decimals; "-" when absent (top-1 without labels)."""
    return _measured(value, lambda v: f"{100 * v:.2f}")


def db(value: Any) -> str:
    """Decibels, 1 decimal; infinity (outputs identical to FP32) as the sign itself."""
    return _measured(value, lambda v: f"{v:.1f}")


def general(value: Any, digits: int = 4) -> str:
    """A measured value of any size: 4 significant digits, infinities as signs."""
    return _measured(value, lambda v: f"{v:.{digits}g}")


def _measured(value: Any, finite: Callable[[float], str]) -> str:
    v = number(value)
    if v is None or math.isnan(v):
        return "-"
    if math.isinf(v):
        return "\u221e" if v > 0 else "\u2212\u221e"
    return finite(v)


def plotted(value: Any) -> float:
    """A value for a chart: absent or NaN becomes 0 (the tables say what it was); an
    infinity stays, and the chart's axis draws it at its edge."""
    v = number(value)
    return 0.0 if v is None or math.isnan(v) else v
