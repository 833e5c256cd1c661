"""Run the benchmark: every scenario, every method, many replications at once.

Each scenario draws from its own child of the seed (by its position in the catalogue), so
running a subset of scenarios reproduces the same numbers as the full run.

>>> result = run(["errors"], replications=20, seed=1)
>>> sorted(result.scenarios[0].methods)
['argo', 'kayenta', 'oracle', 'ours']
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model_canary.streams.sim.argo import run_argo
from model_canary.streams.sim.finer import refine
from model_canary.streams.sim.kayenta import run_kayenta
from model_canary.streams.sim.oracle import run_oracle
from model_canary.streams.sim.ours import ALPHA, run_ours
from model_canary.streams.sim.scenarios import (
    BY_NAME,
    SCENARIOS,
    TIMELINE,
    IntArray,
    Scenario,
    canary_exceeds,
)
from model_canary.streams.sim.traffic import generate, ndtri

DEFAULT_SEED = 20_240_601


@dataclass(frozen=True, slots=True)
class MethodResult:
    rollback_rate: float
    #: Canary requests served until the rollback, over the runs that rolled back.
    median_requests: float | None
    p90_requests: float | None
    median_minute: float | None
    #: Ours only: share of runs not rolled back whose every upper bound is below
    #: 1 + tolerance at the end, i.e. that the decision rule would promote right away.
    promote_ready: float | None = None


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: Scenario
    methods: dict[str, MethodResult]
    #: ln(M/alpha) / (p_b (r ln r - r + 1)), the best of our metrics (None for A/A): the
    #: issue's small-share planning rule. The oracle method measures the limit at the
    #: simulated weights instead.
    info_limit: float | None


@dataclass(frozen=True, slots=True)
class SimResult:
    replications: int
    seed: int
    seconds: float
    scenarios: tuple[ScenarioResult, ...]


def run(
    names: Sequence[str] | None, replications: int = 2000, seed: int = DEFAULT_SEED
) -> SimResult:
    """Run the named scenarios (all when None)."""
    if replications < 1:
        raise ValueError("replications must be at least 1")
    chosen = [BY_NAME[n] for n in names] if names else list(SCENARIOS)
    children = np.random.SeedSequence(seed).spawn(len(SCENARIOS))
    began = time.perf_counter()
    results = []
    for scenario in chosen:
        rng = np.random.default_rng(children[SCENARIOS.index(scenario)])
        traffic = generate(scenario, replications, rng)
        fine = refine(traffic, rng)
        canary_so_far = np.cumsum(traffic.n_c, axis=1)
        horizon = TIMELINE.minutes
        ours = run_ours(fine, horizon)
        k = fine.per_minute
        methods = {
            "ours": _summarise(
                ours.rollback_at, fine.canary_so_far, k, float(ours.promote_ready.mean())
            ),
            "kayenta": _summarise(run_kayenta(traffic, horizon), canary_so_far),
            "argo": _summarise(run_argo(traffic, horizon), canary_so_far),
        }
        if scenario.harmful:
            # A reference, not a method: it knows the true ratios (the information limit).
            methods["oracle"] = _summarise(
                run_oracle(traffic, fine, horizon), fine.canary_so_far, k
            )
        if scenario.label_delay > 0:
            # The decision rule holds the last step until labels arrive: the 50% step
            # goes on for the label delay before anything could reach 100%.
            held = run_ours(fine, horizon + scenario.label_delay)
            methods["ours-held"] = _summarise(held.rollback_at, fine.canary_so_far, k)
        results.append(ScenarioResult(scenario, methods, _info_limit(scenario)))
    return SimResult(replications, seed, time.perf_counter() - began, tuple(results))


def _summarise(
    at: IntArray, canary_so_far: IntArray, per_minute: int = 1, ready: float | None = None
) -> MethodResult:
    # ``at``: the column (minute, or slice of ``1 / per_minute`` minute) of the rollback.
    rolled = at >= 0
    if not rolled.any():
        return MethodResult(0.0, None, None, None, ready)
    served = canary_so_far[np.flatnonzero(rolled), at[rolled]]
    return MethodResult(
        rollback_rate=float(rolled.mean()),
        median_requests=float(np.median(served)),
        p90_requests=float(np.percentile(served, 90)),
        median_minute=(float(np.median(at[rolled])) + 1.0) / per_minute,  # minutes elapsed
        promote_ready=ready,
    )


def _info_limit(s: Scenario) -> float | None:
    if not s.harmful:
        return None
    z95, z99 = float(ndtri(0.95)), float(ndtri(0.99))
    rates = {  # bad events per request: (baseline, canary)
        "errors": (s.error_rate, s.error_rate * s.error_ratio),
        "latency_p95": (0.05, canary_exceeds(z95, s.latency)),
        "latency_p99": (0.01, canary_exceeds(z99, s.latency)),
    }
    if s.accuracy is not None:
        acc_b, acc_c = s.accuracy
        rates["accuracy"] = (s.label_share * (1.0 - acc_b), s.label_share * (1.0 - acc_c))
    log_m = math.log(len(rates) / ALPHA)
    best = math.inf
    for p_b, p_c in rates.values():
        r = p_c / p_b
        if r > 1.0 + 1e-6:  # unchanged metrics come out at 1 up to rounding
            best = min(best, log_m / (p_b * (r * math.log(r) - r + 1.0)))
    return best if math.isfinite(best) else None
