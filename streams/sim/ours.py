"""Our method in the benchmark: the mixture harm test per metric, evaluated every 10 seconds.

Metrics: errors, latency above the warm-up p95, latency above the warm-up p99, and wrong
predictions among labelled requests when labels exist. Alpha 0.05 is split evenly over the
metrics in play (3 or 4). Counts are cumulative since the canary started, per weight at
routing; a label counts from the moment it arrives, at the weight its request was routed.
Evaluation is per slice of :mod:`model_canary.streams.sim.finer` (the evaluator itself decides every
second). Warm-up exclusion after a weight change is not modelled (a plan with ``warmup: 0``).

Each metric has the plan's two parameters:

* rollback tolerance 0 for every metric (the plan default): roll back on evidence that the
  canary is worse at all;
* promotion margin (``tolerance``): errors and latency 0.2 - 1% -> 1.2% errors, or 5% -> 6%
  of requests above the old p95, is within what a release is allowed to cost; accuracy 0.05 -
  at 90% accuracy the error rate 10% may become 10.5%, half a point of accuracy, about
  retraining noise. 0.02 would need ~(2.5/0.02)^2 = 15,000 wrong predictions per arm before
  the upper bound could fall below it, while 0.2 would wave through a two-point loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model_canary.streams.sim.finer import Fine
from model_canary.streams.sim.scenarios import TIMELINE, IntArray
from model_canary.streams.sim.traffic import Counts
from model_canary.streams.stats.harm import upper_bounds
from model_canary.streams.stats.mixture import ALARM_INCREMENTS, log_prior, mixture_log_lr

BoolArray = npt.NDArray[np.bool_]

ALPHA = 0.05
TOLERANCE = {"errors": 0.2, "latency_p95": 0.2, "latency_p99": 0.2, "accuracy": 0.05}
ROLLBACK_TOLERANCE = dict.fromkeys(TOLERANCE, 0.0)


@dataclass(frozen=True, slots=True)
class OursOutcome:
    rollback_at: IntArray  #: (R,) slice of the rollback, -1 when none
    #: (R,) the run was not rolled back and every metric's upper bound is below 1 + tolerance
    #: at the end: it could be promoted to 100% right away.
    promote_ready: BoolArray


def run_ours(fine: Fine, horizon: int, alpha: float = ALPHA) -> OursOutcome:
    """Evaluate after every slice of the first ``horizon`` minutes; roll back on the first
    alarm."""
    end = fine.slices(horizon)
    alpha_m = alpha / len(fine.bad)
    rho = np.asarray(TIMELINE.weights, dtype=np.float64)
    logw = log_prior(None, len(ALARM_INCREMENTS))
    first = np.full(fine.canary_so_far.shape[0], end, dtype=np.intp)
    ready = np.ones(first.shape, dtype=bool)
    for name, (c, b) in cumulative(fine, end).items():
        boundary = math.log1p(ROLLBACK_TOLERANCE[name])
        llr = mixture_log_lr(c, b, rho, boundary, ALARM_INCREMENTS, logw)  # (R, S)
        first = np.minimum(first, first_crossing(llr, -math.log(alpha_m)))
        upper = upper_bounds(c[:, -1].astype(np.float64), b[:, -1].astype(np.float64), rho, alpha_m)
        ready &= upper < 1.0 + TOLERANCE[name]
    rolled = first < end
    return OursOutcome(np.where(rolled, first, -1), ready & ~rolled)


def cumulative(fine: Fine, end: int) -> dict[str, tuple[Counts, Counts]]:
    """``{metric: (canary bad, baseline bad)}`` as ``(R, S, W)``: counted from the slice they
    arrive in, per weight at routing, cumulative, for the first ``end`` slices."""
    onehot = np.eye(len(TIMELINE.weights), dtype=np.int64)[fine.step]  # (S, W)
    out = {}
    for name, (bad_c, bad_b, delay) in fine.bad.items():
        out[name] = (
            _cumulative_by_weight(bad_c, onehot, delay)[:, :end],
            _cumulative_by_weight(bad_b, onehot, delay)[:, :end],
        )
    return out


def first_crossing(llr: npt.NDArray[np.float64], threshold: float) -> IntArray:
    """The first column where ``llr`` reaches ``threshold`` per row (the column count if none)."""
    alarm = llr >= threshold
    return np.asarray(np.where(alarm.any(axis=1), np.argmax(alarm, axis=1), llr.shape[1]))


def _cumulative_by_weight(bad: Counts, onehot: Counts, delay: int) -> Counts:
    # (R, S) by routing slice -> (R, S, W) counted from the slice of arrival, per weight.
    by_weight = bad[:, :, None] * onehot[None, :, :]
    arrived = np.zeros_like(by_weight)
    arrived[:, delay:] = by_weight[:, : by_weight.shape[1] - delay]
    return np.asarray(np.cumsum(arrived, axis=1), dtype=np.int64)
