"""Figures to text: percentiles, medians, the human table and the final JSON line.

>>> percentile([1.0, 2.0, 3.0, 4.0], 50)
2.5
>>> print(table([("rate", "1", "2")], ("", "a", "b")))
      a  b
rate  1  2
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` in 0..100, numpy's default); NaN when
    ``values`` is empty."""
    return float(np.percentile(values, pct)) if len(values) else math.nan


def median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else math.nan


def fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Left-aligned first column, right-aligned others, two spaces apart."""
    lines = [list(header), *(list(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for line in lines:
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def json_line(figures: Mapping[str, object]) -> str:
    """One line of JSON; floats rounded to 3 decimals, NaN written as null, in nested
    figures (per mode, per hop, intervals) too.

    >>> json_line({"p99": 1.23456, "ci": [float("nan"), 2.0], "modes": {"a": {"x": 0.5}}})
    '{"p99": 1.235, "ci": [null, 2.0], "modes": {"a": {"x": 0.5}}}'
    """

    def clean(v: object) -> object:
        if isinstance(v, float):
            return None if math.isnan(v) else round(v, 3)
        if isinstance(v, Mapping):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps({k: clean(v) for k, v in figures.items()}, separators=(", ", ": "))
