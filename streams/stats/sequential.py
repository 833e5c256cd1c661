"""The anytime-valid tests on a :class:`~.compare.Comparison`: roll back, promote, sample ratio.

**Roll back** (``ratio > 1 + rollback_tolerance``?). If the canary's rate is ``e^delta``
times the comparator's, a bad item of stratum ``w`` is the canary's with probability
``theta = rho e^delta / (rho e^delta + 1 - rho)``; the likelihood ratio of ``delta`` against
the null ``delta0`` multiplies, per canary bad item, by ``theta/theta0`` and per comparator bad
item by ``(1 - theta)/(1 - theta0)``. Its logarithm, divided by the design effect ``phi``
(a quasi-likelihood: ``(delta S - delta^2 V / 2) / phi`` is the exponential martingale of a
score of variance ``phi V``), is mixed over a grid of alternatives above the null. One such
mixture per sub-test (strata from the plan's ``k``-th step on), averaged with prior weights:
an average of test martingales is one, so by Ville's inequality the chance that it ever
reaches ``M / alpha`` under the null is at most ``alpha / M`` (exactly for independent items,
asymptotically under clustering).

**Promote** (``canary rate < (1 + tolerance) x comparator rate + margin``?). In the final
stratum, with ``l0 = (1 + tol) lambda_b + margin`` the canary's rate on the null's boundary,
``y = ((1 + tol) lambda_b + margin - lambda_c) / l0`` has mean ``delta >= 0`` exactly when the
canary is acceptable, and (at the boundary) variance ``1 / I`` with
``I = l0^2 / (phi (l0 / n_c + (1 + tol)^2 lambda_b / n_b))``. ``S = y I`` is approximately a
Brownian motion with drift ``delta`` in the information ``I``; the mixture of
``exp(delta S - delta^2 I / 2)`` over a grid of ``delta > 0`` (relative distances below the
boundary) reaching ``M / alpha`` proves the canary acceptable. With no bad items at all the
canary needs about ``2 ln(M / alpha) / margin`` items, so a metric without bad events never
blocks a promotion.

**Sample ratio** (labelled items per served item, equal in both arms?): the roll-back test's
mixture, two-sided (alternatives on both sides of 0).

>>> import numpy as np
>>> from model_canary.streams.stats.compare import Comparison
>>> one = np.ones((1, 1), dtype=bool)
>>> comp = Comparison("errors", "baseline", (2000,), np.array([[2000]]), np.array([[45]]),
...     np.array([[8000]]), np.array([[80]]), one, np.ones((1, 1)))
>>> bool(rollback_log_e(comp, 0.0, ALARM_GRID, np.log([0.2] * 5), np.zeros(1))[0] > np.log(60))
True
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import special

from model_canary.streams.stats.compare import Comparison

FloatArray = npt.NDArray[np.float64]

#: Log ratios above the roll-back test's null that its mixture weighs: ratios 1.22 to 4.06
#: past the null, geometric (see :func:`rollback_log_e`).
ALARM_GRID: FloatArray = np.array([0.2 * 7.0 ** (i / 4) for i in range(5)])
#: Points of the promotion test's mixture, geometric from half the smallest relative distance
#: below its boundary an identical canary can have (``tolerance / (1 + tolerance)``) to 1.
PROMOTION_POINTS = 8
#: Log ratios of the labelled share, both ways, for the sample-ratio check.
SRM_GRID: FloatArray = np.array([s * 0.05 * 2.0**i for s in (-1, 1) for i in range(5)])


def logsumexp(x: FloatArray, axis: int = -1) -> FloatArray:
    """``log(sum(exp(x)))`` along ``axis`` (``-inf`` entries allowed).

    SciPy's algorithm (``scipy.special.logsumexp``: the maxima are taken out of the sum and
    counted, ``log1p`` of the rest; a non-finite result is recomputed directly), operation for
    operation in NumPy alone: the same numbers, without its array-API dispatch, which cost the
    simulator a seventh of its time.

    >>> x = np.array([[0.0, -np.inf, 1e-3], [-np.inf, -np.inf, -np.inf], [700.0, 710.0, 2.0]])
    >>> bool(np.array_equal(logsumexp(x), special.logsumexp(x, axis=-1)))
    True
    """
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return np.asarray(special.logsumexp(a, axis=axis), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a_max = np.max(a, axis=axis, keepdims=True)
        top = a == a_max
        m = np.sum(top, axis=axis, keepdims=True, dtype=np.float64)
        s = np.sum(np.exp(np.where(top, -np.inf, a) - a_max), axis=axis, keepdims=True)
        s = np.where(s == 0, s, s / m)
        out = np.log1p(s) + np.log(m) + a_max
        finite = np.isfinite(out)
        if not finite.all():
            direct = np.log(np.sum(np.exp(a), axis=axis, keepdims=True))
            out = np.where(finite, out, direct)
    return np.asarray(np.squeeze(out, axis=axis), dtype=np.float64)


def coin_flip_llr(comp: Comparison, null: float | FloatArray, deltas: FloatArray) -> FloatArray:
    """(R, W, G) log likelihood ratio of the alternatives ``null + deltas`` (G,) against
    ``null`` (a number, or one per replica) per stratum (0 without exposure in both arms)."""
    usable = comp.usable
    rho = np.clip(np.where(usable, comp.rho, 0.5), 1e-12, 1.0 - 1e-12)
    log_r, log_1r = np.log(rho), np.log1p(-rho)
    d0 = np.reshape(np.asarray(null, dtype=np.float64), (-1, 1))  # (R or 1, 1)
    n0 = np.logaddexp(d0 + log_r, log_1r)[..., None]
    n1 = np.logaddexp((d0[..., None] + deltas) + log_r[..., None], log_1r[..., None])
    per_other = -(n1 - n0)
    per_canary = deltas + per_other
    c = np.where(usable, comp.canary_bad, 0).astype(np.float64)[..., None]
    b = np.where(usable, comp.other_bad, 0).astype(np.float64)[..., None]
    return np.asarray(c * per_canary + b * per_other)


def rollback_log_e(
    comp: Comparison,
    null: float | FloatArray,
    deltas: FloatArray,
    log_weights: FloatArray,
    sub_log_prior: FloatArray,
) -> FloatArray:
    """(R,) log of the roll-back e-process: sub-tests' quasi-likelihood mixtures, averaged."""
    return logsumexp(subtest_log_e(comp, null, deltas, log_weights) + sub_log_prior, axis=-1)


def subtest_log_e(
    comp: Comparison, null: float | FloatArray, deltas: FloatArray, log_weights: FloatArray
) -> FloatArray:
    """(R, K) log mixture likelihood ratio of each sub-test."""
    llr = coin_flip_llr(comp, null, deltas)  # (R, W, G)
    per_sub = np.einsum("rwg,kw->rkg", llr, comp.subtests.astype(np.float64))
    return logsumexp(per_sub / comp.phi[..., None] + log_weights, axis=-1)


def promotion_grid(tolerance: float) -> FloatArray:
    """Relative distances below the promotion boundary that its mixture weighs: an identical
    canary sits ``(tolerance x rate + margin) / ((1 + tolerance) x rate + margin)`` below it,
    between ``tolerance / (1 + tolerance)`` and 1, so the grid spans that (from half its low
    end, so the smallest tolerances are reachable too).

    >>> [round(float(x), 3) for x in promotion_grid(0.2)[[0, -1]]]
    [0.083, 1.0]
    """
    low = max(1e-3, 0.5 * tolerance / (1.0 + tolerance))
    return np.asarray(low ** (1.0 - np.arange(PROMOTION_POINTS) / (PROMOTION_POINTS - 1)))


def promotion_log_e(
    comp: Comparison,
    stratum: int,
    subtest: int,
    tolerance: float | FloatArray,
    margin: float | FloatArray,
    deltas: FloatArray | None = None,
) -> FloatArray:
    """(R,) log e-value against "the canary's rate is at least ``(1 + tolerance)`` times the
    comparator's plus ``margin``" in stratum ``stratum`` (design effect of ``subtest``)."""
    n_c = comp.canary_n[:, stratum].astype(np.float64)
    n_b = comp.other_n[:, stratum].astype(np.float64)
    c = comp.canary_bad[:, stratum].astype(np.float64)
    b = comp.other_bad[:, stratum].astype(np.float64)
    ok = (n_c > 0) & (n_b > 0)
    n_c, n_b = np.maximum(n_c, 1.0), np.maximum(n_b, 1.0)
    lam_b = b / n_b
    scale = 1.0 + tolerance
    boundary = scale * lam_b + margin
    # Variance at the boundary; a comparator without bad items still has (b + 1) / n_b of
    # uncertainty, so an empty comparator does not make the boundary look exact.
    var = comp.phi[:, subtest] * (boundary / n_c + scale**2 * (b + 1.0) / n_b**2)
    ok &= boundary > 0
    info = np.where(ok, boundary**2 / np.where(ok, var, 1.0), 0.0)
    y = np.where(ok, (boundary - c / n_c) / np.where(ok, boundary, 1.0), 0.0)
    s = y * info
    if deltas is None:
        deltas = promotion_grid(float(np.min(tolerance)))
    terms = deltas * s[:, None] - deltas**2 * info[:, None] / 2.0
    log_w = np.full(deltas.size, -math.log(deltas.size))
    return logsumexp(terms + log_w, axis=-1)


def ratio_estimate(comp: Comparison, stratum: int) -> FloatArray:
    """(R,) canary rate over comparator rate in one stratum (nan without data, inf when the
    comparator has no bad items and the canary has)."""
    rc = comp.canary_bad[:, stratum] / np.maximum(comp.canary_n[:, stratum], 1)
    rb = comp.other_bad[:, stratum] / np.maximum(comp.other_n[:, stratum], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(comp.usable[:, stratum], rc / rb, np.nan), dtype=np.float64)
