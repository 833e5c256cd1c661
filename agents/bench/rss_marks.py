"""RSS taken at marks of labelled requests (``canary bench evaluator --rss-labelled``), and
what they say against the target: the resident memory of the processes that hold label
state (the evaluator, each joiner) flat, within :data:`RSS_FLAT_TOLERANCE`, from the first
mark (1 million labelled requests by default) to the last (5 million).

A single reading at a mark can land anywhere in a cycle of the process's memory (the
evaluator's RSS rose and fell by 30-40 MB every 30-70 s while its snapshots' garbage waited
for the cycle collector, issue #11): two runs of the same code gave growths of 0.85 and 1.22.
So each mark also carries the lowest and the highest RSS sampled (every 100 ms) in the
:data:`RSS_WINDOW_S` seconds before it, the same window at every mark, and the verdict is
taken on both: the lowest at the last mark against the lowest at the first (memory kept),
the highest against the highest (transient peaks that grow). Marks without windows (older
figures) are judged on their single readings; ``rss_flat_on`` says which.

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
>>> round(s["rss_mb_per_million_labelled"]["evaluator"]), s["rss_flat_met"], s["rss_flat_on"]
(5000, True, 'reading')
>>> rss_summary({"0": {"evaluator": 140.0, "joiners": [150.0]}}, every=1000)["rss_flat_met"] is None
True

With windows, a reading taken at a trough (170) then at a peak (205) is no growth when the
lowest and highest stay put; a floor that rises is, whatever the single readings say:

>>> def mark(reading, low, high):
...     return {"evaluator": reading, "evaluator_window_low_high": [low, high],
...             "joiners": [150.0], "joiners_window_low_high": [[149.0, 151.0]]}
>>> cycle = {"1000": mark(170.0, 170.0, 205.0), "2000": mark(205.0, 171.0, 206.0)}
>>> s = rss_summary(cycle, every=1000)
>>> round(s["evaluator_rss_growth_from_1m"], 3), s["rss_flat_on"], s["rss_flat_met"]
(1.206, 'window', True)
>>> kept = {"1000": mark(205.0, 170.0, 205.0), "2000": mark(205.0, 190.0, 210.0)}
>>> s = rss_summary(kept, every=1000)
>>> round(s["evaluator_rss_low_growth_from_1m"], 3), s["rss_flat_met"]
(1.118, False)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: The target: RSS from the first mark to the last grows by at most this share.
RSS_FLAT_TOLERANCE = 0.10
#: Labelled requests between two marks unless told (``--rss-every``).
RSS_EVERY = 1_000_000
#: Seconds before each mark whose lowest and highest RSS the mark carries (the same at every
#: mark): at least one cycle of the evaluator's memory as it was (30-40 s) and no longer than
#: the time between two marks at the joiners' rate (a million labels in about 30-40 s).
RSS_WINDOW_S = 30.0

Marks = Mapping[str, Mapping[str, object]]


def rss_summary(marks: Marks, every: int = RSS_EVERY) -> dict[str, object]:
    """From ``marks`` (labelled requests joined, as text -> ``{"evaluator": MB, "joiners":
    [MB, ...]}``, optionally with ``"evaluator_window_low_high": [MB, MB]`` and
    ``"joiners_window_low_high": [[MB, MB], ...]``; ``"0"`` is the start): the growth of the
    evaluator and of the joiner that grew most from the first mark (``every``) to the last,
    of their single readings and, with windows, of their lowest and highest; each process's
    slope in MB per million labelled requests over the marks from the first on (single
    readings); and ``rss_flat_met``: every growth within :data:`RSS_FLAT_TOLERANCE`, on the
    lowest and highest when every mark has windows (``rss_flat_on``: ``"window"``), else on
    the single readings (``"reading"``); None without two marks to compare or a reading
    missing."""
    keys = sorted(int(k) for k in marks if int(k) >= every)
    out: dict[str, object] = {
        "evaluator_rss_growth_from_1m": None,
        "joiner_rss_growth_from_1m": None,
        "evaluator_rss_low_growth_from_1m": None,
        "evaluator_rss_high_growth_from_1m": None,
        "joiner_rss_low_growth_from_1m": None,
        "joiner_rss_high_growth_from_1m": None,
        "rss_mb_per_million_labelled": None,
        "rss_window_s": RSS_WINDOW_S,
        "rss_flat_target": RSS_FLAT_TOLERANCE,
        "rss_flat_on": None,
        "rss_flat_met": None,
    }
    if len(keys) < 2:
        return out
    at = [marks[str(k)] for k in keys]
    evaluator = [_mb(m.get("evaluator")) for m in at]
    joiners = [_mbs(m.get("joiners")) for m in at]
    e_growth = _growth(evaluator)
    out["evaluator_rss_growth_from_1m"] = e_growth
    j_growth, per_joiner = _joiner_growth(joiners)
    out["joiner_rss_growth_from_1m"] = j_growth
    slopes: dict[str, object] = {"evaluator": _slope(keys, evaluator)}
    if per_joiner is not None:
        slopes["joiners"] = [_slope(keys, series) for series in per_joiner]
    out["rss_mb_per_million_labelled"] = slopes
    on_readings = [e_growth, *_verdict_part(j_growth, per_joiner)]
    windowed = all("evaluator_window_low_high" in m and "joiners_window_low_high" in m for m in at)
    if not windowed:
        out["rss_flat_on"] = "reading"
        out["rss_flat_met"] = _within(on_readings)
        return out
    on_windows: list[float | None] = []
    for end, edge in (("low", 0), ("high", 1)):
        e = _growth([_edge(m.get("evaluator_window_low_high"), edge) for m in at])
        j, series = _joiner_growth(
            [[_edge(w, edge) for w in _windows(m.get("joiners_window_low_high"))] for m in at]
        )
        out[f"evaluator_rss_{end}_growth_from_1m"] = e
        out[f"joiner_rss_{end}_growth_from_1m"] = j
        on_windows += [e, *_verdict_part(j, series)]
    out["rss_flat_on"] = "window"
    out["rss_flat_met"] = _within(on_windows)
    return out


def _within(growths: Sequence[float | None]) -> bool | None:
    """Every growth within the tolerance; None if one is missing."""
    if any(g is None for g in growths):
        return None
    return all(g is not None and g <= 1 + RSS_FLAT_TOLERANCE for g in growths)


def _joiner_growth(
    joiners: Sequence[Sequence[float | None]],
) -> tuple[float | None, list[list[float | None]] | None]:
    """The growth of the joiner that grew most (None if a reading is missing) and each
    joiner's series, from the joiners' readings at each mark; ``(None, None)`` when their
    readings do not line up (no verdict), ``(None, [])`` without joiners."""
    widths = {len(j) for j in joiners}
    if len(widths) != 1:
        return None, None
    per_joiner = [[j[i] for j in joiners] for i in range(widths.pop())]
    growths = [_growth(series) for series in per_joiner]
    known = [g for g in growths if g is not None]
    if not per_joiner or len(known) < len(per_joiner):
        return None, per_joiner
    return max(known), per_joiner


def _verdict_part(
    growth: float | None, per_joiner: list[list[float | None]] | None
) -> list[float | None]:
    """The joiners' part of the verdict: nothing without joiners, else their growth (None:
    no verdict)."""
    return [] if per_joiner == [] else [growth]


def _mb(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _mbs(value: object) -> list[float | None]:
    return [_mb(v) for v in value] if isinstance(value, list) else []


def _edge(window: object, edge: int) -> float | None:
    """The lowest (``edge`` 0) or highest (1) of a ``[low, high]`` window, or None."""
    return _mb(window[edge]) if isinstance(window, list) and len(window) == 2 else None


def _windows(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


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
