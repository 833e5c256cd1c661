"""A Kayenta-style judge (Spinnaker's NetflixACAJudge), run the way its users run it.

* Metrics, one value per minute per arm: error rate, latency p99, and accuracy (of the labels
  that arrived that minute) when labels exist. A minute without data is dropped (the
  ``remove`` NaN strategy).
* A judgement every 10 minutes on all the data of the current step so far (a growing window:
  10, 20, 30 points per arm), as an interval analysis with no lookback does.
* Per metric, the Mann-Whitney 98% interval for the shift canary - baseline and the
  Hodges-Lehmann estimate: "High" when the lower end exceeds 0.25 x |HL estimate| and the
  mean ratio canary/baseline is >= 1 (the judge's effect-size gate with its default 1.0);
  "Low" symmetrically (accuracy is judged for decreases).
* Every metric is critical: one High (Low for accuracy) fails the judgement and rolls back.

The interval is the distribution-free one from sorted pairwise differences, with the
normal-approximation rank ``C = floor(mn/2 - z sqrt(mn(m+n+1)/12))`` (Kayenta's port of R's
``wilcox.test`` adds a tie correction, and its IQR outlier filter is not modelled).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from model_canary.streams.sim.scenarios import TIMELINE, IntArray
from model_canary.streams.sim.traffic import Counts, Traffic
from model_canary.streams.stats.mixture import FloatArray

TOLERANCE = 0.25
CONFIDENCE = 0.98
EVERY = 10  #: minutes between judgements


def per_minute(traffic: Traffic) -> dict[str, tuple[FloatArray, FloatArray, bool]]:
    """``{metric: (canary values, baseline values, judged for increases)}``, nan = no data."""
    out = {
        "error_rate": (_rate(traffic.err_c, traffic.n_c), _rate(traffic.err_b, traffic.n_b), True),
        "latency_p99": (traffic.p99_c, traffic.p99_b, True),
    }
    if traffic.lab_c is not None and traffic.lab_b is not None:
        assert traffic.mis_c is not None and traffic.mis_b is not None
        lab_c, lab_b = traffic.arrived(traffic.lab_c), traffic.arrived(traffic.lab_b)
        acc_c = _rate(lab_c - traffic.arrived(traffic.mis_c), lab_c)
        acc_b = _rate(lab_b - traffic.arrived(traffic.mis_b), lab_b)
        out["accuracy"] = (acc_c, acc_b, False)
    return out


def run_kayenta(traffic: Traffic, horizon: int) -> IntArray:
    """Minute of the rollback per replication (-1 when none)."""
    values = per_minute(traffic)
    rollback = np.full(traffic.n_c.shape[0], -1, dtype=np.intp)
    for start in range(0, horizon, TIMELINE.step_minutes):
        for end in range(start + EVERY, start + TIMELINE.step_minutes + 1, EVERY):
            if end > horizon:
                break
            failed = np.zeros(rollback.shape, dtype=bool)
            for x_c, x_b, increase in values.values():
                failed |= judge(x_c[:, start:end], x_b[:, start:end], increase)
            rollback = np.where((rollback < 0) & failed, end - 1, rollback)
    return rollback


def judge(canary: FloatArray, baseline: FloatArray, increase: bool) -> FloatArray:
    """Vectorised Mann-Whitney classification of ``(R, m)`` against ``(R, n)`` values:
    True where the metric fails (High when ``increase``, else Low)."""
    m = np.sum(~np.isnan(canary), axis=1)
    n = np.sum(~np.isnan(baseline), axis=1)
    pairs = m * n
    diffs = np.sort((canary[:, :, None] - baseline[:, None, :]).reshape(canary.shape[0], -1))
    idx = np.maximum(pairs - 1, 0)
    hl = 0.5 * (_take(diffs, idx // 2) + _take(diffs, pairs // 2))
    z = NormalDist().inv_cdf(1.0 - (1.0 - CONFIDENCE) / 2.0)
    c = np.floor(pairs / 2.0 - z * np.sqrt(pairs * (m + n + 1) / 12.0)).astype(np.int64)
    usable = (m > 0) & (n > 0) & (c >= 0)
    c = np.clip(c, 0, None)
    lower = _take(diffs, np.minimum(c, idx))
    upper = _take(diffs, np.clip(pairs - 1 - c, 0, None))
    mean_c = _nanmean(canary)
    mean_b = _nanmean(baseline)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mean_b == 0.0, 1.0, mean_c / mean_b)
    bound = TOLERANCE * np.abs(hl)
    if increase:
        fails = usable & (lower > bound) & (ratio >= 1.0)
    else:
        fails = usable & (upper < -bound) & (ratio <= 1.0)
    return np.asarray(fails)


def _take(sorted_rows: FloatArray, index: IntArray) -> FloatArray:
    return np.asarray(np.take_along_axis(sorted_rows, index[:, None], axis=1)[:, 0])


def _nanmean(x: FloatArray) -> FloatArray:
    ok = ~np.isnan(x)
    total = np.where(ok, x, 0.0).sum(axis=1)
    return np.asarray(total / np.maximum(ok.sum(axis=1), 1), dtype=np.float64)


def _rate(num: Counts, den: Counts) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(den > 0, num / np.maximum(den, 1), math.nan), dtype=np.float64)
