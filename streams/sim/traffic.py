"""Per-minute traffic of many replications at once, as numpy arrays ``(replications, minutes)``.

Counts are exact draws: requests per arm are binomial in the weight, errors binomial in the
requests, labels binomial in the requests and wrong predictions binomial in the labels. The
latency thresholds are the baseline's p95/p99 from a warm-up sample; the number of requests
above them is binomial in the exact exceedance probability.

Where a comparator needs the sample p99 of a minute (or of a 5-minute window), it is drawn
exactly too, without drawing every latency: the type-7 sample quantile interpolates between
order statistics ``j`` and ``j + 1`` of ``n`` draws, whose uniform versions are
``U_j ~ Beta(j, n - j + 1)`` and ``U_j+1 = U_j + (1 - U_j) Beta(1, n - j)``; the latencies are
their images under the (monotone) quantile function. Each method sees exact marginals; the
joint draw across methods is not modelled (it does not affect per-method rates).

>>> import numpy as np
>>> from model_canary.streams.sim.scenarios import BY_NAME
>>> t = generate(BY_NAME["aa"], 4, np.random.default_rng(1))
>>> t.n_c.shape, bool((t.n_c + t.n_b == 1000).all())
((4, 90), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model_canary.streams.sim.scenarios import (
    LATENCY_MEDIAN_MS,
    LATENCY_SIGMA,
    TIMELINE,
    IntArray,
    Scenario,
    canary_exceeds,
    canary_z,
)
from model_canary.streams.stats.mixture import FloatArray

WINDOW = 5  #: minutes per Argo-style measurement
Counts = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Traffic:
    scenario: Scenario
    step: IntArray  #: (T,) step index of each minute
    rho: FloatArray  #: (T,) canary weight of each minute
    n_c: Counts  #: (R, T) requests routed to the canary
    n_b: Counts
    err_c: Counts
    err_b: Counts
    slow95_c: Counts  #: requests above the warm-up p95 threshold
    slow95_b: Counts
    slow99_c: Counts
    slow99_b: Counts
    p99_c: FloatArray  #: (R, T) sample p99 of the minute (nan without requests)
    p99_b: FloatArray
    p99w_c: FloatArray  #: (R, T // WINDOW) sample p99 of each 5-minute window
    p99w_b: FloatArray
    lab_c: Counts | None  #: labelled requests, by the minute they were routed
    lab_b: Counts | None
    mis_c: Counts | None  #: wrong predictions among them
    mis_b: Counts | None
    #: (R,) the true ratio of the canary's to the baseline's probability of exceeding the
    #: warm-up p95 (p99) threshold; only the oracle reference reads it.
    ratio95: FloatArray
    ratio99: FloatArray

    @property
    def minutes(self) -> int:
        return int(self.step.size)

    def arrived(self, by_routing: Counts) -> Counts:
        """Labels by the minute they arrive: ``label_delay`` minutes after routing."""
        d = self.scenario.label_delay
        out = np.zeros_like(by_routing)
        out[:, d:] = by_routing[:, : by_routing.shape[1] - d]
        return out


def generate(
    scenario: Scenario, replications: int, rng: np.random.Generator, minutes: int | None = None
) -> Traffic:
    """Draw ``replications`` runs of ``minutes`` (default: the timeline plus the label delay,
    so a run whose last step waits for labels can be followed)."""
    t_total = minutes if minutes is not None else TIMELINE.minutes + scenario.label_delay
    shape = (replications, t_total)
    step = TIMELINE.step_index(t_total)
    rho = np.asarray(TIMELINE.weights, dtype=np.float64)[step]
    n_c = rng.binomial(TIMELINE.requests_per_minute, np.broadcast_to(rho, shape))
    n_b = TIMELINE.requests_per_minute - n_c

    p_b, p_c = scenario.error_rates(t_total)
    err_c, err_b = rng.binomial(n_c, p_c), rng.binomial(n_b, p_b)

    # Thresholds: the baseline's sample p95/p99 of the warm-up, as uniform order statistics.
    nw = TIMELINE.warmup_requests
    u95 = rng.beta(math.ceil(0.95 * nw), nw - math.ceil(0.95 * nw) + 1, replications)
    u99 = rng.beta(math.ceil(0.99 * nw), nw - math.ceil(0.99 * nw) + 1, replications)
    kind = scenario.latency
    q95_c = np.array([canary_exceeds(z, kind) for z in ndtri(u95)])
    q99_c = np.array([canary_exceeds(z, kind) for z in ndtri(u99)])
    slow95_c, slow99_c = _nested(rng, n_c, q95_c, q99_c)
    slow95_b, slow99_b = _nested(rng, n_b, 1.0 - u95, 1.0 - u99)

    windows = t_total // WINDOW
    nwin_c = n_c[:, : windows * WINDOW].reshape(replications, windows, WINDOW).sum(axis=2)
    nwin_b = n_b[:, : windows * WINDOW].reshape(replications, windows, WINDOW).sum(axis=2)

    lab_c = lab_b = mis_c = mis_b = None
    if scenario.accuracy is not None:
        acc_b, acc_c = scenario.accuracy
        lab_c = rng.binomial(n_c, scenario.label_share)
        lab_b = rng.binomial(n_b, scenario.label_share)
        mis_c = rng.binomial(lab_c, 1.0 - acc_c)
        mis_b = rng.binomial(lab_b, 1.0 - acc_b)

    return Traffic(
        scenario=scenario,
        step=step,
        rho=rho,
        n_c=n_c,
        n_b=n_b,
        err_c=err_c,
        err_b=err_b,
        slow95_c=slow95_c,
        slow95_b=slow95_b,
        slow99_c=slow99_c,
        slow99_b=slow99_b,
        p99_c=sample_p99(rng, n_c, kind),
        p99_b=sample_p99(rng, n_b, "none"),
        p99w_c=sample_p99(rng, nwin_c, kind),
        p99w_b=sample_p99(rng, nwin_b, "none"),
        lab_c=lab_c,
        lab_b=lab_b,
        mis_c=mis_c,
        mis_b=mis_b,
        ratio95=q95_c / (1.0 - u95),
        ratio99=q99_c / (1.0 - u99),
    )


def _nested(
    rng: np.random.Generator, n: Counts, q95: FloatArray, q99: FloatArray
) -> tuple[Counts, Counts]:
    # Above p99 is a subset of above p95: draw the p99 count, then the rest among the others.
    q95, q99 = q95[:, None], q99[:, None]
    above99 = rng.binomial(n, np.broadcast_to(q99, n.shape))
    between = rng.binomial(n - above99, np.broadcast_to((q95 - q99) / (1.0 - q99), n.shape))
    return above99 + between, above99


def sample_p99(rng: np.random.Generator, n: Counts, kind: str) -> FloatArray:
    """The type-7 sample p99 of ``n`` latencies (nan where ``n`` is 0), drawn exactly."""
    m = np.maximum(n, 1)
    h = (m - 1) * 0.99
    j = np.floor(h).astype(np.int64)  # 0-based: order statistics j+1 and j+2 (1-based)
    frac = h - j
    u1 = rng.beta(j + 1, m - j)
    u2 = u1 + (1.0 - u1) * rng.beta(1, np.maximum(m - j - 1, 1))
    lo = _latency(canary_z(ndtri(u1), kind))
    hi = _latency(canary_z(ndtri(u2), kind))
    out = lo + frac * (hi - lo)
    return np.asarray(np.where(n > 0, out, np.nan), dtype=np.float64)


def _latency(z: FloatArray) -> FloatArray:
    return np.asarray(LATENCY_MEDIAN_MS * np.exp(LATENCY_SIGMA * z), dtype=np.float64)


# Acklam's rational approximation of the normal quantile (relative error < 1.2e-9).
_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
)
_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_P_LOW = 0.02425


def ndtri(p: npt.ArrayLike) -> FloatArray:
    """The standard-normal quantile function, vectorised.

    >>> [round(float(x), 6) for x in ndtri([0.5, 0.975, 0.01])]
    [0.0, 1.959964, -2.326348]
    """
    u = np.clip(np.asarray(p, dtype=np.float64), 1e-300, 1.0 - 1e-16)
    q = u - 0.5
    r = q * q
    num = ((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]
    den = ((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1.0
    central = num * q / den
    tail = np.sqrt(-2.0 * np.log(np.minimum(u, 1.0 - u)))
    num_t = ((((_C[0] * tail + _C[1]) * tail + _C[2]) * tail + _C[3]) * tail + _C[4]) * tail
    den_t = (((_D[0] * tail + _D[1]) * tail + _D[2]) * tail + _D[3]) * tail + 1.0
    tails = (num_t + _C[5]) / den_t
    out = np.where(u < _P_LOW, tails, np.where(u > 1.0 - _P_LOW, -tails, central))
    return np.asarray(out, dtype=np.float64)
