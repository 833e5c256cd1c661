"""How sure a measured percentile is: a 95% interval by the moving-block bootstrap.

A latency benchmark's samples, in the order they were sent, are not independent: one stall
(a broker pause, the scheduler running something else) delays every request in flight at
once, so slow samples come in runs. Resampling single samples would treat a run of 50 slow
requests as 50 independent draws and give an interval far too narrow; resampling *blocks* of
consecutive samples keeps the runs together (Künsch 1989). The block should be longer than a
stall: at 1,000 requests/s, 500 samples is half a second.

>>> import random
>>> rng = random.Random(1)
>>> samples = [rng.expovariate(1 / 5) for _ in range(5_000)]
>>> lo, hi = percentile_interval(samples, 99, block=100, reps=200)
>>> lo < float(np.percentile(samples, 99)) < hi
True
>>> percentile_interval([], 99)
(nan, nan)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

#: Samples per bootstrap draw of a block (0.5 s at 1,000 samples/s).
BLOCK = 500
#: Bootstrap replicates.
REPS = 1_000


def percentile_interval(
    samples: Sequence[float],
    pct: float,
    *,
    level: float = 0.95,
    block: int = BLOCK,
    reps: int = REPS,
    seed: int = 0,
) -> tuple[float, float]:
    """A ``level`` interval for the ``pct`` percentile of ``samples`` (in time order): the
    percentile recomputed on ``reps`` series of the same length made of blocks of ``block``
    consecutive samples drawn with replacement (a block shorter when there are fewer
    samples); ``(nan, nan)`` without samples. Deterministic for a given ``seed``.

    >>> percentile_interval([7.0] * 10, 50)
    (7.0, 7.0)
    """
    data = np.asarray(samples, dtype=float)
    n = len(data)
    if n == 0:
        return (math.nan, math.nan)
    size = max(1, min(block, n))
    per_series = math.ceil(n / size)
    rng = np.random.default_rng(seed)
    offsets = np.arange(size)
    values = np.empty(reps)
    chunk = max(1, 2_000_000 // (per_series * size))  # bound the memory of one step
    for first in range(0, reps, chunk):
        count = min(chunk, reps - first)
        starts = rng.integers(0, n - size + 1, size=(count, per_series))
        index = (starts[:, :, None] + offsets).reshape(count, -1)[:, :n]
        values[first : first + count] = np.percentile(data[index], pct, axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


def mean_interval(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float]:
    """A ``level`` interval for the mean of a few independent measurements (a benchmark's
    rounds): Student's t, ``(nan, nan)`` with fewer than two finite values.

    >>> lo, hi = mean_interval([0.80, 0.82, 0.78])
    >>> round(lo, 3), round(hi, 3)
    (0.75, 0.85)
    >>> mean_interval([0.8])
    (nan, nan)
    """
    data = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(data)
    if n < 2:
        return (math.nan, math.nan)
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * float(data.std(ddof=1)) / math.sqrt(n)
    mean = float(data.mean())
    return (mean - half, mean + half)


def target_vs_interval(target: float, interval: Sequence[float]) -> str:
    """Where a target lies against a reference's interval: "below" it, "within" it, "above"
    it, or "-" when the interval is unknown. Against an oracle that does strictly less than
    the product, a latency target "below" the oracle's interval, or a throughput ratio target
    "above" it, is out of reach.

    >>> target_vs_interval(20.0, [22.8, 226.6]), target_vs_interval(0.9, (0.75, 0.85))
    ('below', 'above')
    >>> target_vs_interval(100.0, [52.5, 298.7]), target_vs_interval(1.0, (math.nan, math.nan))
    ('within', '-')
    """
    low, high = interval
    if math.isnan(low) or math.isnan(high):
        return "-"
    if target < low:
        return "below"
    if target > high:
        return "above"
    return "within"
