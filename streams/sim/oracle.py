"""The oracle reference: the SPRT that knows the true harm ratio. Not a method anyone can run.

It answers "how many canary requests does *any* valid test need at this schedule?". For
every metric whose true ratio ``r`` exceeds 1 it runs the simple likelihood ratio of ``r``
against 1 on the same evidence as ours (the arm of each bad event, conditioned on the weight
its request was routed at, never pooled across weights), with the same alpha share per
metric (threshold ``ln(M/alpha)``), evaluated as often as ours. The one-sided SPRT of the
true alternative is asymptotically (as alpha -> 0; Lorden 1973) the fastest test keeping
P(ever rolling back a harmless canary) within that alpha share, so its median estimates the
information limit at the simulated weights; a method that must also find the effect size
(ours mixes over a grid) pays a few nats more. It is only defined for harmful scenarios.

>>> import numpy as np
>>> from model_canary.streams.sim.finer import refine
>>> from model_canary.streams.sim.scenarios import BY_NAME
>>> from model_canary.streams.sim.traffic import generate
>>> rng = np.random.default_rng(2)
>>> t = generate(BY_NAME["errors"], 50, rng)
>>> bool((run_oracle(t, refine(t, rng), 90) >= 0).mean() > 0.9)
True
"""

from __future__ import annotations

import math

import numpy as np

from model_canary.streams.sim.finer import Fine
from model_canary.streams.sim.ours import ALPHA, cumulative, first_crossing
from model_canary.streams.sim.scenarios import TIMELINE, IntArray
from model_canary.streams.sim.traffic import Traffic
from model_canary.streams.stats.mixture import FloatArray, theta


def true_ratios(traffic: Traffic) -> dict[str, FloatArray]:
    """``{metric: (R,) true canary / baseline bad-event rate ratio}`` for every metric."""
    reps = traffic.n_c.shape[0]
    s = traffic.scenario
    out = {
        "errors": np.full(reps, s.error_ratio),
        "latency_p95": traffic.ratio95,
        "latency_p99": traffic.ratio99,
    }
    if s.accuracy is not None:
        acc_b, acc_c = s.accuracy
        out["accuracy"] = np.full(reps, (1.0 - acc_c) / (1.0 - acc_b))
    return out


def run_oracle(traffic: Traffic, fine: Fine, horizon: int, alpha: float = ALPHA) -> IntArray:
    """Slice of the rollback per replication (-1 when none) within ``horizon`` minutes."""
    end = fine.slices(horizon)
    threshold = math.log(len(fine.bad) / alpha)
    rho = np.asarray(TIMELINE.weights, dtype=np.float64)
    ratios = true_ratios(traffic)
    first = np.full(fine.canary_so_far.shape[0], end, dtype=np.intp)
    for name, (c, b) in cumulative(fine, end).items():
        r = ratios[name]
        if not np.any(r > 1.0 + 1e-6):
            continue  # no harm in this metric: its LR against 1 is never larger than 1
        delta = np.log(np.maximum(r, 1.0))[:, None]  # (R, 1)
        th = theta(delta, rho[None, :])  # (R, W)
        per_canary = np.log(th / rho)
        per_baseline = np.log1p(-th) - np.log1p(-rho)
        llr = np.einsum("rsw,rw->rs", c, per_canary) + np.einsum("rsw,rw->rs", b, per_baseline)
        first = np.minimum(first, first_crossing(llr, threshold))
    return np.asarray(np.where(first < end, first, -1), dtype=np.intp)
