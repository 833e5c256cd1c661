"""Latency thresholds: a latency metric is the rate of requests slower than the baseline's p95
(or p99), with the threshold fixed once per rollout before anything is compared.

Workers summarise latencies in a mergeable log histogram (bins 2% wide); the evaluator pools
the baseline and control arms' histograms of the first step and fixes the thresholds once
they hold :data:`THRESHOLD_ITEMS` items (the base rate of "slower than the p99" is then
1% +- 0.14 points: stable enough that the time to promote does not depend on luck), or, for a
low-traffic model, :data:`MIN_THRESHOLD_ITEMS` once the first step ran its minimum duration.
A threshold is the upper edge of its quantile's bin.

Hostile latencies (NaN, negative, beyond :data:`MAX_LATENCY_MS`) are refused by
:func:`latency_bin`: producers dead-letter the result rather than count it.

>>> latency_bin(50.0), round(float(bin_upper_edges(latency_bin(50.0))), 2)
(430, 50.89)
>>> import numpy as np
>>> h = np.zeros((1, NBINS), dtype=np.int64); h[0, [400, 430, 480]] = [9000, 850, 150]
>>> [round(float(x), 1) for x in thresholds_from_hist(h)[0]]
[50.9, 137.0]
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from model_canary.streams.errors import CanaryError
from model_canary.streams.evidence.columns import BINS, bin_upper_edges, bins_of

#: Bins of the latency histogram (the evidence records' scheme, :mod:`~.evidence.columns`).
NBINS = BINS
#: Latencies beyond a day are not latencies.
MAX_LATENCY_MS = 86_400_000.0
THRESHOLD_ITEMS = 5_000
MIN_THRESHOLD_ITEMS = 1_000
QUANTILES: dict[str, float] = {"latency_p95": 0.95, "latency_p99": 0.99}


class BadLatency(CanaryError):
    """A latency that cannot be one (NaN, infinite, negative or absurdly large)."""


def latency_bin(ms: float) -> int:
    """The histogram bin of a latency in milliseconds; :class:`BadLatency` if it is not one."""
    if not math.isfinite(ms) or ms < 0 or ms > MAX_LATENCY_MS:
        raise BadLatency(f"latency {ms!r} ms is not a latency")
    return int(bins_of([ms])[0])


def latency_bins(ms: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """:func:`latency_bin` for an array (same refusals)."""
    x = np.asarray(ms, dtype=np.float64)
    if not np.all(np.isfinite(x)) or np.any(x < 0) or np.any(x > MAX_LATENCY_MS):
        raise BadLatency("latencies must be finite, >= 0 and at most a day")
    return bins_of(x)


def thresholds_from_hist(hist: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """(R, len(QUANTILES)) thresholds in ms from pooled histograms ``(R, NBINS)`` (the upper
    edge of the bin holding each quantile; nan for an empty histogram)."""
    cum = np.cumsum(hist, axis=1)
    total = cum[:, -1:]
    out = []
    for q in QUANTILES.values():
        # First bin whose cumulative count reaches the quantile's rank.
        rank = np.ceil(q * total)
        b = np.argmax(cum >= np.maximum(rank, 1), axis=1)
        out.append(np.where(total[:, 0] > 0, bin_upper_edges(b), np.nan))
    return np.stack(out, axis=1)


def ready(
    items: npt.NDArray[np.int64], first_step_done: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """Which replicas may fix their thresholds now."""
    return np.asarray(
        (items >= THRESHOLD_ITEMS) | (first_step_done & (items >= MIN_THRESHOLD_ITEMS))
    )


def first_step_done(
    step_index: npt.ArrayLike, step_elapsed_s: npt.ArrayLike, min_step_s: float
) -> npt.NDArray[np.bool_]:
    """Whether the first step ran its minimum duration (or the rollout moved past it): from
    then on :func:`ready` accepts :data:`MIN_THRESHOLD_ITEMS`.

    >>> first_step_done([0, 0, 1], [10.0, 300.0, 0.0], 300.0).tolist()
    [False, True, True]
    """
    index = np.asarray(step_index)
    return np.asarray((index > 0) | (np.asarray(step_elapsed_s) >= min_step_s))
