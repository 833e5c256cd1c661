"""Our method in the benchmark: the mixture harm test per metric, evaluated every minute.

Metrics: errors, latency above the warm-up p95, latency above the warm-up p99, and wrong
predictions among labelled requests when labels exist. Alpha 0.05 is split evenly over the
metrics in play (3 or 4). Counts are cumulative since the canary started, per weight at
routing; a label counts from the minute it arrives, at the weight its request was routed.

Tolerances (the ratio of bad-event rates that is still acceptable):

* errors and latency 0.2: 1% -> 1.2% errors, or 5% -> 6% of requests above the old p95, is
  within what a release is allowed to cost; tighter and promoting needs hours of traffic;
* accuracy 0.05: at 90% accuracy the error rate 10% may become 10.5%, i.e. half a point of
  accuracy - about retraining noise. 0.02 (0.2 points) would need ~(2.5/0.02)^2 = 15,000
  wrong predictions per arm before the upper bound could ever fall below it (no promotion
  in any realistic canary), while 0.2 would wave through a two-point accuracy loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streams.sim.scenarios import TIMELINE, IntArray
from streams.sim.traffic import Counts, Traffic
from streams.stats.harm import upper_bounds
from streams.stats.mixture import DEFAULT_INCREMENTS, log_prior, mixture_log_lr

BoolArray = npt.NDArray[np.bool_]

ALPHA = 0.05
TOLERANCE = {"errors": 0.2, "latency_p95": 0.2, "latency_p99": 0.2, "accuracy": 0.05}


@dataclass(frozen=True, slots=True)
class OursOutcome:
    rollback_minute: IntArray  #: (R,) minute of the rollback, -1 when none
    #: (R,) the run was not rolled back and every metric's upper bound is below 1 + tolerance
    #: at the end: it could be promoted to 100% right away.
    promote_ready: BoolArray


def metrics(traffic: Traffic) -> dict[str, tuple[Counts, Counts, int]]:
    """``{metric: (canary bad, baseline bad, delay in minutes)}`` by routing minute."""
    out = {
        "errors": (traffic.err_c, traffic.err_b, 0),
        "latency_p95": (traffic.slow95_c, traffic.slow95_b, 0),
        "latency_p99": (traffic.slow99_c, traffic.slow99_b, 0),
    }
    if traffic.mis_c is not None and traffic.mis_b is not None:
        out["accuracy"] = (traffic.mis_c, traffic.mis_b, traffic.scenario.label_delay)
    return out


def run_ours(traffic: Traffic, horizon: int, alpha: float = ALPHA) -> OursOutcome:
    """Evaluate after every minute up to ``horizon``; roll back on the first alarm."""
    specs = metrics(traffic)
    alpha_m = alpha / len(specs)
    rho = np.asarray(TIMELINE.weights, dtype=np.float64)
    onehot = np.eye(rho.size, dtype=np.int64)[traffic.step]  # (T, W)
    logw = log_prior(None, len(DEFAULT_INCREMENTS))
    first = np.full(traffic.n_c.shape[0], horizon, dtype=np.intp)
    ready = np.ones(traffic.n_c.shape[0], dtype=bool)
    for name, (bad_c, bad_b, delay) in specs.items():
        c = _cumulative_by_weight(bad_c, onehot, delay)[:, :horizon]
        b = _cumulative_by_weight(bad_b, onehot, delay)[:, :horizon]
        boundary = math.log1p(TOLERANCE[name])
        llr = mixture_log_lr(c, b, rho, boundary, DEFAULT_INCREMENTS, logw)  # (R, T)
        alarm = llr >= -math.log(alpha_m)
        hit = np.where(alarm.any(axis=1), np.argmax(alarm, axis=1), horizon)
        first = np.minimum(first, hit)
        upper = upper_bounds(c[:, -1].astype(np.float64), b[:, -1].astype(np.float64), rho, alpha_m)
        ready &= upper < 1.0 + TOLERANCE[name]
    rolled = first < horizon
    return OursOutcome(np.where(rolled, first, -1), ready & ~rolled)


def _cumulative_by_weight(bad: Counts, onehot: Counts, delay: int) -> Counts:
    # (R, T) by routing minute -> (R, T, W) counted from the minute of arrival, per weight.
    by_weight = bad[:, :, None] * onehot[None, :, :]
    arrived = np.zeros_like(by_weight)
    arrived[:, delay:] = by_weight[:, : by_weight.shape[1] - delay]
    return np.asarray(np.cumsum(arrived, axis=1), dtype=np.int64)
