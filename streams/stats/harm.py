"""The harm test: is the canary's bad-event rate higher than the baseline's?

A bad event is an error, a request slower than a latency threshold fixed before the
comparison, or a wrong labelled prediction. Under equal rates the arm of a bad event is a coin
flip landing on the canary with the probability ``rho`` its request was routed there, so
drifts and incidents that hit both arms cancel.

Two questions, two parameters, each answered by an anytime-valid procedure:

* **roll back?** The test of ``H0: ratio <= 1 + rollback_tolerance`` mixes likelihood ratios
  against that boundary over a grid of larger ratios (:data:`ALARM_INCREMENTS`): a
  nonnegative supermartingale under H0 (each factor is, for every ratio in H0, because the
  alternatives lie above the boundary), so by Ville's inequality P(ever LR >= 1/alpha) <= alpha
  and it may be evaluated after every event. ``rollback_tolerance`` is fixed before the data
  (the plan), which is all Ville's inequality needs; 0 (the default in plans) means "roll back
  on evidence that the canary is worse at all", so a doubling is tested as a doubling rather
  than as 2 / 1.2 = 1.67 times the boundary, which needs about half the samples.
* **promote?** The upper end of a confidence sequence for the ratio (inverting, at every
  grid value, a mixture test of "ratio >= value" against smaller ratios) must fall below
  ``1 + tolerance``: a canary worse than that is promoted with probability at most alpha.

When ``rollback_tolerance`` is not given it equals ``tolerance`` (one boundary for both, as
before the split).

The sufficient statistic is (canary bad, baseline bad) per distinct weight: pooling weights
would mix different coin biases (Simpson's paradox). Weights 0 and 100% carry no information
(every bad event comes from one arm) and are ignored.

>>> test = HarmTest(tolerance=0.2, alpha=0.05, rollback_tolerance=0.0)
>>> test.evaluate({}).log_lr, test.evaluate({100: (0, 0)}).alarmed
(0.0, False)
>>> r = test.evaluate({100: (12, 300)})  # 1%: about 3 canary bad events expected, 12 seen
>>> r.alarmed, round(r.ratio, 2), r.lower > 1.0
(True, 3.96, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from model_canary.streams.stats.mixture import (
    ALARM_INCREMENTS,
    BOUND_INCREMENTS,
    FloatArray,
    log_prior,
    mixture_log_lr,
    mixture_log_lr_grid,
)

MAX_BP = 10_000
#: Log ratios at which the confidence bounds are tested: ratios 1/100 .. 100 in 1% steps.
BOUND_GRID: FloatArray = np.arange(-460, 461, dtype=np.float64) * 0.01

Counts = Mapping[int, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class HarmResult:
    """One evaluation of the harm test (ratios are canary bad-event rate / baseline's)."""

    log_lr: float  #: log of the mixture likelihood ratio against ratio = 1 + rollback_tolerance
    threshold: float  #: ln(1/alpha): alarm when ``log_lr`` reaches it
    alarmed: bool
    ratio: float  #: maximum-likelihood ratio (nan without bad events, inf without baseline's)
    lower: float  #: anytime-valid lower confidence bound on the ratio (level 1 - alpha)
    upper: float  #: anytime-valid upper confidence bound (inf when not yet bounded)
    canary_bad: int
    baseline_bad: int
    tolerance: float  #: promotion margin: harmless when ``upper < 1 + tolerance``
    rollback_tolerance: float  #: the rollback test's null is ``ratio <= 1 + rollback_tolerance``

    @property
    def harmless(self) -> bool:
        """The upper bound is below ``1 + tolerance``: enough evidence to promote."""
        return self.upper < 1.0 + self.tolerance


class HarmTest:
    """The mixture sequential test for one metric, with confidence bounds on the ratio.

    ``tolerance`` is the promotion margin, ``rollback_tolerance`` (default: ``tolerance``) the
    rollback test's null. ``increments`` are the log-ratio steps above that null the mixture
    weighs (``prior`` their weights, equal by default; the lower confidence bound uses them
    too), ``bound_increments`` those below a candidate value for the upper bound. Use
    :meth:`evaluate` on counts keyed by weight in basis points, or feed them with
    :meth:`update`.
    """

    def __init__(
        self,
        tolerance: float = 0.2,
        alpha: float = 0.05,
        increments: Sequence[float] = ALARM_INCREMENTS,
        prior: Sequence[float] | None = None,
        *,
        rollback_tolerance: float | None = None,
        bound_increments: Sequence[float] = BOUND_INCREMENTS,
    ) -> None:
        rollback = tolerance if rollback_tolerance is None else rollback_tolerance
        if tolerance < 0 or rollback < 0 or not 0 < alpha < 1:
            raise ValueError("tolerances must be >= 0 and alpha within (0, 1)")
        if not increments or min(increments) <= 0 or min(bound_increments, default=0) <= 0:
            raise ValueError("increments must be positive log ratios")
        self.tolerance = tolerance
        self.rollback_tolerance = rollback
        self.alpha = alpha
        self.boundary = math.log1p(rollback)
        self.threshold = -math.log(alpha)
        self.increments = np.asarray(increments, dtype=np.float64)
        self.log_weights = log_prior(prior, len(self.increments))
        self.bound_increments = np.asarray(bound_increments, dtype=np.float64)
        self._counts: dict[int, tuple[int, int]] = {}

    def update(self, weight_bp: int, canary_bad: int, baseline_bad: int) -> HarmResult:
        """Add new bad events routed at ``weight_bp`` and evaluate everything seen so far."""
        if canary_bad < 0 or baseline_bad < 0:
            raise ValueError("counts cannot be negative")
        c, b = self._counts.get(weight_bp, (0, 0))
        self._counts[weight_bp] = (c + canary_bad, b + baseline_bad)
        return self.evaluate(self._counts)

    def evaluate(self, counts: Counts) -> HarmResult:
        """The test on cumulative ``{weight_bp: (canary_bad, baseline_bad)}`` counts."""
        for w, (n_c, n_b) in counts.items():
            if not 0 <= w <= MAX_BP or n_c < 0 or n_b < 0:
                raise ValueError(f"bad counts {n_c, n_b} at weight {w}")
        used = sorted(w for w in counts if 0 < w < MAX_BP)
        rho = np.array([w / MAX_BP for w in used])
        c = np.array([counts[w][0] for w in used], dtype=np.float64)
        b = np.array([counts[w][1] for w in used], dtype=np.float64)
        total_c = sum(v[0] for v in counts.values())
        total_b = sum(v[1] for v in counts.values())
        if not used or c.sum() + b.sum() == 0:
            return HarmResult(
                log_lr=0.0,
                threshold=self.threshold,
                alarmed=False,
                ratio=_ratio_or_nan(total_c, total_b),
                lower=0.0,
                upper=math.inf,
                canary_bad=total_c,
                baseline_bad=total_b,
                tolerance=self.tolerance,
                rollback_tolerance=self.rollback_tolerance,
            )
        log_lr = float(mixture_log_lr(c, b, rho, self.boundary, self.increments, self.log_weights))
        lower, upper = self._bounds(c, b, rho)
        if c.sum() > 0 and b.sum() > 0:
            ratio = math.exp(mle_log_ratio(c, b, rho))
        else:
            ratio = _ratio_or_nan(int(c.sum()), int(b.sum()))
        return HarmResult(
            log_lr=log_lr,
            threshold=self.threshold,
            alarmed=log_lr >= self.threshold,
            ratio=ratio,
            lower=lower,
            upper=upper,
            canary_bad=total_c,
            baseline_bad=total_b,
            tolerance=self.tolerance,
            rollback_tolerance=self.rollback_tolerance,
        )

    def _bounds(self, c: FloatArray, b: FloatArray, rho: FloatArray) -> tuple[float, float]:
        # Confidence sequence by inversion: at each grid value g, one mixture test of
        # "ratio <= e^g" (alternatives above, the rollback test's grid, so the lower bound
        # passes 1 + rollback_tolerance about when it alarms) and one of "ratio >= e^g"
        # (below, the fine grid). A bound moves one grid step outwards past the last value not
        # rejected, so it stays valid when the true ratio falls between grid points.
        g = BOUND_GRID
        up = mixture_log_lr_grid(c, b, rho, g, g[:, None] + self.increments, self.log_weights)
        down = mixture_log_lr_grid(
            c,
            b,
            rho,
            g,
            g[:, None] - self.bound_increments,
            log_prior(None, self.bound_increments.size),
        )
        keep_low = np.flatnonzero(up < self.threshold)
        keep_high = np.flatnonzero(down < self.threshold)
        if keep_low.size == 0:
            lower = math.exp(g[-1])
        else:
            lower = 0.0 if keep_low[0] == 0 else math.exp(g[keep_low[0] - 1])
        if keep_high.size == 0:
            upper = math.exp(g[0])
        else:
            upper = math.inf if keep_high[-1] == g.size - 1 else math.exp(g[keep_high[-1] + 1])
        return lower, upper


def upper_bounds(
    canary_bad: FloatArray,
    baseline_bad: FloatArray,
    rho: FloatArray,
    alpha: float,
    increments: Sequence[float] = BOUND_INCREMENTS,
) -> FloatArray:
    """Vectorised upper confidence bounds on the ratio: counts ``(..., W)`` -> ``(...)``."""
    g = BOUND_GRID
    inc = np.asarray(increments, dtype=np.float64)
    down = mixture_log_lr_grid(
        canary_bad, baseline_bad, rho, g, g[:, None] - inc, log_prior(None, inc.size)
    )
    keep = down < -math.log(alpha)
    # Index of the last grid value not rejected (-1 when every one is rejected).
    last = np.where(keep.any(axis=-1), g.size - 1 - np.argmax(keep[..., ::-1], axis=-1), -1)
    nxt = np.minimum(last + 1, g.size - 1)
    out = np.where(last == g.size - 1, np.inf, np.exp(g[np.maximum(nxt, 0)]))
    return np.asarray(np.where(last < 0, math.exp(g[0]), out), dtype=np.float64)


def mle_log_ratio(canary_bad: FloatArray, baseline_bad: FloatArray, rho: FloatArray) -> float:
    """Maximum-likelihood log ratio from counts per weight (needs both counts positive).

    The score ``sum(c - (c + b) theta(d, rho))`` falls as ``d`` grows: bisection finds its zero.

    >>> round(math.exp(mle_log_ratio(np.array([1.0]), np.array([4.0]), np.array([0.2]))), 6)
    1.0
    """
    events = canary_bad + baseline_bad
    odds = (1.0 - rho) / rho
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        score = float(np.sum(canary_bad - events / (1.0 + odds * math.exp(-mid))))
        if score > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def _ratio_or_nan(canary_bad: int, baseline_bad: int) -> float:
    if canary_bad == 0 and baseline_bad == 0:
        return math.nan
    return 0.0 if canary_bad == 0 else math.inf
