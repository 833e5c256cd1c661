"""Small inline SVG line charts for the demo report: no JavaScript, no network.

>>> svg = line_chart("weight", [Line("canary", "#d62728", [(0, 0), (10, 20)], step=True)],
...                  x_max=20, y_label="%")
>>> svg.startswith("<svg") and "canary" in svg
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

W, H = 900, 250
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 28, 36
MARKER_COLOURS = {"ADVANCE": "#2ca02c", "ROLLBACK": "#d62728", "FINALIZE": "#1f77b4"}


@dataclass(frozen=True, slots=True)
class Line:
    """A named series; ``step`` draws a staircase (a value holds until the next point)."""

    name: str
    colour: str
    points: Sequence[tuple[float, float]]
    step: bool = False
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Marker:
    """A vertical line at ``t`` labelled ``text`` (a decision)."""

    t: float
    text: str
    colour: str = "#555"


@dataclass(frozen=True, slots=True)
class _Scale:
    x_max: float
    y_min: float
    y_max: float
    log: bool = False
    ticks: list[float] = field(default_factory=list)

    def x(self, t: float) -> float:
        return LEFT + (W - LEFT - RIGHT) * min(max(t, 0.0), self.x_max) / self.x_max

    def y(self, v: float) -> float:
        lo, hi, v = self.y_min, self.y_max, min(max(v, self.y_min), self.y_max)
        if self.log:
            lo, hi, v = math.log10(lo), math.log10(hi), math.log10(v)
        return TOP + (H - TOP - BOTTOM) * (1 - (v - lo) / ((hi - lo) or 1.0))


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value``.

    >>> nice_max(0.0), nice_max(7.3), nice_max(130)
    (1.0, 10.0, 200.0)
    """
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return float(next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value))


def _scale(lines: Sequence[Line], x_max: float, log_y: bool, y_max: float | None) -> _Scale:
    values = [v for line in lines for _, v in line.points]
    if log_y:
        positive = [v for v in values if v > 0] or [1.0]
        lo = 10 ** math.floor(math.log10(min(positive)))
        hi = 10 ** math.ceil(math.log10(max(positive) * 1.0001))
        hi = hi if hi > lo else lo * 10
        ticks = [10**e for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]
        return _Scale(x_max, lo, hi, True, ticks)
    top = y_max if y_max is not None else nice_max(max(values, default=0.0))
    return _Scale(x_max, 0.0, top, False, [top * i / 4 for i in range(5)])


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) >= 0.01 or v == 0 else f"{v:.1e}"


def _path(line: Line, s: _Scale) -> str:
    coords: list[str] = []
    previous: tuple[float, float] | None = None
    for t, v in line.points:
        if line.step and previous is not None:
            coords.append(f"{s.x(t):.1f},{s.y(previous[1]):.1f}")
        coords.append(f"{s.x(t):.1f},{s.y(v):.1f}")
        previous = (t, v)
    if line.step and previous is not None:
        coords.append(f"{s.x(s.x_max):.1f},{s.y(previous[1]):.1f}")
    dash = ' stroke-dasharray="6 3"' if line.dashed else ""
    return (
        f'<polyline fill="none" stroke="{line.colour}" stroke-width="2"{dash} '
        f'points="{" ".join(coords)}"/>'
    )


def line_chart(
    title: str,
    lines: Sequence[Line],
    *,
    x_max: float,
    y_label: str,
    markers: Sequence[Marker] = (),
    log_y: bool = False,
    y_max: float | None = None,
) -> str:
    """An SVG chart of ``lines`` over seconds 0..``x_max`` with decision ``markers``."""
    s = _scale(lines, max(x_max, 1.0), log_y, y_max)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
        f'height="{H}" font-family="sans-serif" font-size="11" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<text x="12" y="{TOP - 8}" fill="#444">{escape(y_label)}</text>',
    ]
    for v in s.ticks:
        y = s.y(v)
        out.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v)}</text>'
        )
    step = nice_max(s.x_max / 6)
    for i in range(int(s.x_max // step) + 1):
        x = s.x(i * step)
        out.append(
            f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{i * step:g}s</text>'
        )
    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
        'fill="none" stroke="#999"/>'
    )
    for i, m in enumerate(markers):
        x = s.x(m.t)
        # Labels near the right edge go left of their line, clear of the legend; successive
        # labels are staggered so close decisions stay readable.
        right = x > LEFT + 0.75 * (W - LEFT - RIGHT)
        tx, anchor = (x - 3, "end") if right else (x + 3, "start")
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{H - BOTTOM}" stroke="{m.colour}" '
            f'stroke-dasharray="4 3"><title>{escape(m.text)}</title></line>'
            f'<text x="{tx:.1f}" y="{TOP + 11 + 12 * (i % 3)}" text-anchor="{anchor}" '
            f'fill="{m.colour}">{escape(m.text)}</text>'
        )
    for i, line in enumerate(lines):
        if line.points:
            out.append(_path(line, s))
        if line.step:  # a staircase's levels are few: print each one
            out += [
                f'<text x="{s.x(t) + 3:.1f}" y="{s.y(v) - 4:.1f}" fill="{line.colour}">{v:g}</text>'
                for t, v in line.points
                if v > 0
            ]
        y = TOP + 8 + 16 * i
        out.append(
            f'<line x1="{W - RIGHT + 10}" x2="{W - RIGHT + 28}" y1="{y}" y2="{y}" '
            f'stroke="{line.colour}" stroke-width="2"/>'
            f'<text x="{W - RIGHT + 33}" y="{y + 4}">{escape(line.name)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
