"""RSS taken at marks of labelled requests (``canary bench evaluator --rss-labelled``), and
what they say against the target: the resident memory of the processes that hold label
state (the evaluator, each joiner) flat, within :data:`RSS_FLAT_TOLERANCE`, from the first
mark (1 million labelled requests by default) to the last (5 million).

Growth alone cannot tell a process that settles from one that keeps what it has seen, so
the summary also fits a line through the marks from the first one on: the MB each process
gains per million labelled requests (state kept per request shows here as a steady slope;
about 900 MB per million for the first evaluator's per-request table).

>>> marks = {
...     "0": {"evaluator": 140.0, "joiners": [150.0]},
...     "1000": {"evaluator": 180.0, "joiners": [160.0]},
...     "2000": {"evaluator": 184.0, "joiners": [158.0]},
...     "3000": {"evaluator": 190.0, "joiners": [162.0]},
... }
>>> s = rss_summary(marks, every=1000)
>>> round(s["evaluator_rss_growth_from_1m"], 4), round(s["joiner_rss_growth_from_1m"], 4)
(1.0556, 1.0125)
>>> round(s["rss_mb_per_million_labelled"]["evaluator"]), s["rss_flat_met"]
(5000, True)
>>> rss_summary({"0": {"evaluator": 140.0, "joiners": [150.0]}}, every=1000)["rss_flat_met"] is None
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: The target: RSS from the first mark to the last grows by at most this share.
RSS_FLAT_TOLERANCE = 0.10
#: Labelled requests between two marks unless told (``--rss-every``).
RSS_EVERY = 1_000_000

Marks = Mapping[str, Mapping[str, object]]


def rss_summary(marks: Marks, every: int = RSS_EVERY) -> dict[str, object]:
    """From ``marks`` (labelled requests joined, as text -> ``{"evaluator": MB, "joiners":
    [MB, ...]}``; ``"0"`` is the start): the growth of the evaluator and of the joiner that
    grew most from the first mark (``every``) to the last, each process's slope in MB per
    million labelled requests over the marks from the first on, and ``rss_flat_met``
    (every growth within :data:`RSS_FLAT_TOLERANCE`; None without two marks to compare or
    a reading missing)."""
    keys = sorted(int(k) for k in marks if int(k) >= every)
    out: dict[str, object] = {
        "evaluator_rss_growth_from_1m": None,
        "joiner_rss_growth_from_1m": None,
        "rss_mb_per_million_labelled": None,
        "rss_flat_target": RSS_FLAT_TOLERANCE,
        "rss_flat_met": None,
    }
    if len(keys) < 2:
        return out
    evaluator = [_mb(marks[str(k)].get("evaluator")) for k in keys]
    joiners = [_mbs(marks[str(k)].get("joiners")) for k in keys]
    growths: list[float | None] = []
    e_growth = _growth(evaluator)
    out["evaluator_rss_growth_from_1m"] = e_growth
    growths.append(e_growth)
    widths = {len(j) for j in joiners}
    slopes: dict[str, object] = {"evaluator": _slope(keys, evaluator)}
    if len(widths) == 1:
        per_joiner = [[j[i] for j in joiners] for i in range(widths.pop())]
        j_growths = [_growth(series) for series in per_joiner]
        growths.extend(j_growths)
        known = [g for g in j_growths if g is not None]
        if per_joiner and len(known) == len(per_joiner):
            out["joiner_rss_growth_from_1m"] = max(known)
        slopes["joiners"] = [_slope(keys, series) for series in per_joiner]
    else:
        growths.append(None)  # a joiner's readings do not line up: no verdict
    out["rss_mb_per_million_labelled"] = slopes
    if all(g is not None for g in growths):
        out["rss_flat_met"] = all(g is not None and g <= 1 + RSS_FLAT_TOLERANCE for g in growths)
    return out


def _mb(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _mbs(value: object) -> list[float | None]:
    return [_mb(v) for v in value] if isinstance(value, list) else []


def _growth(series: Sequence[float | None]) -> float | None:
    first, last = series[0], series[-1]
    return last / first if first is not None and last is not None else None


def _slope(keys: Sequence[int], series: Sequence[float | None]) -> float | None:
    """Least-squares MB per million labelled requests through the readings there are."""
    points = [(k, v) for k, v in zip(keys, series, strict=True) if v is not None]
    if len(points) < 2:
        return None
    x = np.array([k for k, _v in points], dtype=float) / 1e6
    y = np.array([v for _k, v in points], dtype=float)
    return float(np.polyfit(x, y, 1)[0])
