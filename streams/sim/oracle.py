"""The oracle reference: the SPRT that knows the true harm ratio. Not a method anyone can run.

It answers "how many canary requests does *any* valid test need on this evidence?". For
every metric whose true ratio ``r`` exceeds 1 at some weight it runs the simple likelihood
ratio of ``r`` against 1 on the evaluator's own evidence (the released comparisons: the arm of
each bad item given the realised exposure share, per weight), with the evaluator's alpha share
per metric (threshold ``ln(M / alpha)``), decided as often as the evaluator decides. The
one-sided SPRT of the true alternative is asymptotically the fastest test keeping
P(ever rolling back a harmless canary) within that share (Lorden 1973). It is defined only
where requests are independent given their arm (no per-user spread, no micro-batches, no
drifting latency), so the coin-flip likelihood is the true one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model_canary.streams.plan import RolloutPlan
from model_canary.streams.sim.scenario import RATED_METRIC, Scenario, Serving
from model_canary.streams.sim.traffic import Z90, normal_sf
from model_canary.streams.stats.decide import StepPolicy, StepSnapshot
from model_canary.streams.stats.layout import ARMS

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
QUANTILE_INDEX = {"latency_p95": 0, "latency_p99": 1}


def exceedance(s: Serving, threshold_ms: float) -> float:
    """P(one item's latency > ``threshold_ms``) for an unbatched arm ``s``."""
    if not math.isfinite(threshold_ms):
        return math.nan
    z = math.log(threshold_ms / (s.latency_ms * s.latency_scale)) / s.latency_sigma
    if s.tail_scale == 1.0 or z <= Z90:
        return normal_sf(z)
    return normal_sf(max(Z90, z - math.log(s.tail_scale) / s.latency_sigma))


@dataclass(frozen=True, slots=True)
class Oracle:
    scenario: Scenario
    metrics: tuple[str, ...]
    threshold: float

    @classmethod
    def of(cls, scenario: Scenario, plan: RolloutPlan, rule: StepPolicy) -> Oracle | None:
        """The oracle for a harmful scenario with independent requests (None otherwise)."""
        if not scenario.harmful or scenario.traffic.user_spread > 0:
            return None
        for arm in ARMS:
            for w in (0, scenario.from_weight_bp, 10_000):
                s = scenario.arm(arm, w)
                if s.max_batch > 1 or s.batch_failure > 0 or s.drift_per_min != 0:
                    return None
        names = tuple(plan.metrics)
        return cls(scenario, names, math.log(len(names) / rule.alpha))

    def true_log_ratio(self, metric: str, weight_bp: int, thresholds: FloatArray) -> FloatArray:
        """(R,) log of the canary's bad rate over its comparator's at ``weight_bp``."""
        c = self.scenario.arm("canary", weight_bp)
        b = self.scenario.arm("baseline", weight_bp)
        reps = thresholds.shape[0]
        if metric == "errors":
            ratio = c.error_rate / b.error_rate if b.error_rate > 0 else math.nan
            return np.full(reps, math.log(ratio) if ratio > 0 else -math.inf)
        if metric == "accuracy":
            if c.accuracy is None or b.accuracy is None or b.accuracy >= 1:
                return np.full(reps, math.nan)
            return np.full(reps, math.log((1 - c.accuracy) / (1 - b.accuracy)))
        if metric == RATED_METRIC:
            if c.thumbs_down is None or b.thumbs_down is None or not b.thumbs_down > 0:
                return np.full(reps, math.nan)
            ratio = c.thumbs_down / b.thumbs_down
            return np.full(reps, math.log(ratio) if ratio > 0 else -math.inf)
        if metric not in QUANTILE_INDEX:  # an outcome metric the scenario does not simulate
            return np.full(reps, math.nan)
        q = QUANTILE_INDEX[metric]
        out = np.empty(reps)
        for i, thr in enumerate(thresholds[:, q]):
            pc, pb = exceedance(c, float(thr)), exceedance(b, float(thr))
            out[i] = math.log(pc / pb) if pb > 0 and pc > 0 else math.nan
        return out

    def crossed(self, snap: StepSnapshot, thresholds: FloatArray) -> BoolArray:
        """(R,) the oracle's statistic has reached its threshold on ``snap``'s evidence."""
        reps = snap.weight_bp.shape[0]
        out = np.zeros(reps, dtype=bool)
        for name in self.metrics:
            comp = snap.comparisons.get(name)
            if comp is None:
                continue
            llr = np.zeros(reps)
            for w_i, w in enumerate(comp.weights):
                delta = self.true_log_ratio(name, w, thresholds)
                harmful = np.isfinite(delta) & (delta > 1e-9)
                usable = comp.usable[:, w_i] & harmful
                rho = np.clip(comp.rho[:, w_i], 1e-12, 1 - 1e-12)
                d = np.where(harmful, delta, 0.0)
                theta = rho * np.exp(d) / (rho * np.exp(d) + 1 - rho)
                term = comp.canary_bad[:, w_i] * np.log(theta / rho) + comp.other_bad[:, w_i] * (
                    np.log1p(-theta) - np.log1p(-rho)
                )
                llr += np.where(usable, term, 0.0)
            out |= llr >= self.threshold
        return out
