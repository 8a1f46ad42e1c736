"""Horizontal bar charts as inline SVG: one row per layer, one or more bars per row.

Drawn in Python so the report needs no JavaScript and no network. Every chart of the
report (activation ranges, weight error, sensitivity) is this one chart with a
different axis, so they look alike and are read the same way. Colours are CSS classes,
styled by the page. Every text is escaped here: layer names come from users' models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 1000
LABEL_W = 190
VALUE_W = 24
ROW_H = 24
AXIS_H = 24
LABEL_CHARS = 26


@dataclass(frozen=True)
class Bar:
    """One bar from ``start`` to ``end`` in data units; ``css`` picks its colour, ``title`` its tooltip."""

    start: float
    end: float
    css: str
    title: str


@dataclass(frozen=True)
class Row:
    label: str
    bars: Sequence[Bar]


@dataclass(frozen=True)
class Axis:
    """Maps data values to 0..1 across the plot; values outside are drawn at the edge."""

    fraction: Callable[[float], float]
    ticks: Sequence[float]
    tick_label: Callable[[float], str]


def linear_axis(values: Sequence[float], *, include_zero: bool = True) -> Axis:
    """An axis over the finite ``values`` (and 0), with about five round ticks."""
    finite = [v for v in values if math.isfinite(v)] + ([0.0] if include_zero else [])
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    step = _round_step((hi - lo) / 5)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    ticks = [lo + i * step for i in range(round((hi - lo) / step) + 1)]
    return Axis(lambda v: _clamp((v - lo) / (hi - lo)), ticks, lambda v: f"{v:g}")


def log_axis(values: Sequence[float]) -> Axis:
    """A decade axis over the positive finite ``values``, one decade of room below the
    smallest so every bar shows; zeros are drawn at its left edge."""
    positive = [v for v in values if v > 0 and math.isfinite(v)] or [1.0]
    lo, hi = math.floor(math.log10(min(positive))) - 1, math.ceil(math.log10(max(positive)))

    def fraction(v: float) -> float:
        return 0.0 if v <= 0 else _clamp((math.log10(v) - lo) / (hi - lo))

    return Axis(fraction, [10.0**e for e in range(lo, hi + 1)], lambda v: f"1e{round(math.log10(v))}")


def bar_chart(rows: Sequence[Row], axis: Axis, legend: Sequence[tuple[str, str]], caption: str) -> str:
    """The SVG of ``rows`` on ``axis``; ``legend`` is (css class, text) per series."""
    plot_w = WIDTH - LABEL_W - VALUE_W
    legend_h = ROW_H
    height = legend_h + len(rows) * ROW_H + AXIS_H

    def x(value: float) -> float:
        return LABEL_W + axis.fraction(value) * plot_w

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="{escape(caption)}">',
        f"<title>{escape(caption)}</title>",
        _legend(legend),
    ]
    for tick in axis.ticks:
        tx = x(tick)
        parts.append(f'<line class="grid" x1="{tx:.1f}" y1="{legend_h}" x2="{tx:.1f}" y2="{height - AXIS_H}"/>')
        label = escape(axis.tick_label(tick))
        parts.append(f'<text class="tick" x="{tx:.1f}" y="{height - 8}" text-anchor="middle">{label}</text>')
    for i, row in enumerate(rows):
        top = legend_h + i * ROW_H
        parts.append(
            f'<text class="label" x="{LABEL_W - 8}" y="{top + ROW_H / 2 + 4:.1f}" text-anchor="end">'
            f"<title>{escape(row.label)}</title>{escape(_shorten(row.label))}</text>"
        )
        parts.extend(_bars(row.bars, top, x))
    parts.append("</svg>")
    return "\n".join(parts)


def _bars(bars: Sequence[Bar], top: float, x: Callable[[float], float]) -> list[str]:
    """The row's bars stacked in equal slices of its height, first series on top."""
    if not bars:
        return []
    slice_h = (ROW_H - 6) / len(bars)
    out = []
    for j, bar in enumerate(bars):
        x0, x1 = sorted((x(bar.start), x(bar.end)))
        y = top + 3 + j * slice_h
        out.append(
            f'<rect class="{escape(bar.css)}" x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 1.5):.1f}" '
            f'height="{max(slice_h - 1, 2):.1f}"><title>{escape(bar.title)}</title></rect>'
        )
    return out


def _legend(legend: Sequence[tuple[str, str]]) -> str:
    items, cursor = [], LABEL_W
    for css, text in legend:
        items.append(f'<rect class="{escape(css)}" x="{cursor}" y="6" width="12" height="12"/>')
        items.append(f'<text class="legend" x="{cursor + 18}" y="16">{escape(text)}</text>')
        cursor += 30 + 7 * len(text)
    return "".join(items)


def _shorten(label: str) -> str:
    """Long module paths keep their end (the distinctive part); the full name is the tooltip."""
    return label if len(label) <= LABEL_CHARS else "\u2026" + label[-(LABEL_CHARS - 1) :]


def _round_step(raw: float) -> float:
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _clamp(value: float) -> float:
    return min(max(value, 0.0), 1.0)
