"""The vectorised core of the harm test: mixture likelihood ratios on the arm of bad events.

If the canary's bad-event rate is ``e**delta`` times the baseline's, a bad event from a request
routed with canary probability ``rho`` comes from the canary with probability

    theta(delta, rho) = rho e^delta / (rho e^delta + 1 - rho).

Against a null value ``delta0``, one canary bad event multiplies the likelihood ratio of an
alternative ``delta`` by ``theta(delta)/theta(delta0)`` and one baseline bad event by
``(1 - theta(delta))/(1 - theta(delta0))``. With ``N(d) = ln(rho e^d + 1 - rho)`` the two log
factors are ``(delta - delta0) - (N(delta) - N(delta0))`` and ``-(N(delta) - N(delta0))``, so
the log ratio is linear in the counts: ``canary_bad @ a + baseline_bad @ b`` per weight.

>>> round(float(mixture_log_lr([2], [1], [0.5], 0.0, [math.log(3)], [0.0])), 6)  # 1.5**2 * 0.5
0.117783
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

#: Steps of the log ratio above the rollback test's null that its mixture weighs (equal
#: weights): ratios 1.22, 1.38, 1.70, 2.36 and 4.06 past the null. A mixture pays
#: ``ln(1/w)`` nats for the weight ``w`` on the component nearest the truth, on top of the
#: threshold ``ln(M/alpha)`` (about 4.4 nats): ten equal points cost up to ln 10 = 2.3 nats
#: for effects nobody can find in a canary anyway (5% past the null: ~400 times the samples
#: of a doubling). Five points over the harms worth catching quickly (ratios ~1.25 to 5) cost
#: ln 5 = 1.6 nats; in the small-share limit the stopping time stays within ~1.45 times that
#: of the SPRT that knows the true ratio for every ratio from 1.25 to 5 (the grid minimising
#: that worst case over 3-6 geometric points). Smaller harms are still detected - every
#: component has positive drift for any ratio past the null - only more slowly.
ALARM_INCREMENTS: tuple[float, ...] = tuple(0.2 * 7.0 ** (i / 4) for i in range(5))

#: Steps of the log ratio *below* a candidate upper bound for the upper confidence bound,
#: which promotion needs below ``1 + tolerance`` with a canary as good as the baseline: the
#: useful alternatives there are small (tolerances of 2% to 20%), so this grid is fine-grained:
#: geometric from 0.05 to 3.4, ten equal weights (each effect within ~25% of a point).
BOUND_INCREMENTS: tuple[float, ...] = tuple(0.05 * 1.6**i for i in range(10))


def theta(delta: ArrayLike, rho: ArrayLike) -> FloatArray:
    """P(a bad event is the canary's) when the canary's rate is ``e**delta`` times the baseline's.

    >>> float(theta(0.0, 0.2)), round(float(theta(math.log(2), 0.2)), 4)
    (0.2, 0.3333)
    """
    d = np.asarray(delta, dtype=np.float64)
    r = np.asarray(rho, dtype=np.float64)
    return np.asarray(1.0 / (1.0 + (1.0 - r) / r * np.exp(-d)), dtype=np.float64)


def log_prior(weights: Sequence[float] | None, k: int) -> FloatArray:
    """Normalised log prior over ``k`` grid points (equal weights when ``weights`` is None)."""
    if weights is None:
        return np.full(k, -math.log(k))
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError("prior weights must be k nonnegative numbers with a positive sum")
    with np.errstate(divide="ignore"):
        return np.asarray(np.log(w / w.sum()), dtype=np.float64)


def coefficients(
    rho: ArrayLike, null: ArrayLike, alternatives: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Log LR per canary bad event (``a``) and per baseline bad event (``b``).

    ``rho`` has shape ``(W,)``, ``null`` shape ``(G,)`` and ``alternatives`` shape ``(G, K)``;
    both results have shape ``(G, K, W)``.
    """
    r = np.asarray(rho, dtype=np.float64)
    if r.ndim != 1 or np.any(r <= 0) or np.any(r >= 1):
        raise ValueError("canary probabilities must lie strictly between 0 and 1")
    d0 = np.asarray(null, dtype=np.float64)
    d1 = np.asarray(alternatives, dtype=np.float64)
    log_r, log_1r = np.log(r), np.log1p(-r)
    n0 = np.logaddexp(d0[:, None] + log_r, log_1r)[:, None, :]  # (G, 1, W)
    n1 = np.logaddexp(d1[:, :, None] + log_r, log_1r)  # (G, K, W)
    b = -(n1 - n0)
    a = (d1 - d0[:, None])[:, :, None] + b
    return a, b


def logsumexp(x: FloatArray, axis: int = -1) -> FloatArray:
    """``log(sum(exp(x)))`` along ``axis`` without overflow (``-inf`` entries allowed)."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    s = np.log(np.sum(np.exp(x - m), axis=axis)) + np.squeeze(m, axis=axis)
    return np.asarray(s, dtype=np.float64)


def mixture_log_lr_grid(
    canary_bad: ArrayLike,
    baseline_bad: ArrayLike,
    rho: ArrayLike,
    null: ArrayLike,
    alternatives: ArrayLike,
    log_weights: ArrayLike,
) -> FloatArray:
    """Log mixture LR for each of ``G`` null values: counts ``(..., W)`` -> result ``(..., G)``.

    ``alternatives`` ``(G, K)`` are the mixed-over values for each null, ``log_weights`` the
    ``(K,)`` log prior. Counts are per distinct weight, never pooled across weights.
    """
    c = np.asarray(canary_bad, dtype=np.float64)
    n = np.asarray(baseline_bad, dtype=np.float64)
    a, b = coefficients(rho, null, alternatives)
    llr = np.einsum("...w,gkw->...gk", c, a) + np.einsum("...w,gkw->...gk", n, b)
    return logsumexp(llr + np.asarray(log_weights, dtype=np.float64), axis=-1)


def mixture_log_lr(
    canary_bad: ArrayLike,
    baseline_bad: ArrayLike,
    rho: ArrayLike,
    null: float,
    increments: ArrayLike,
    log_weights: ArrayLike,
) -> FloatArray:
    """Log mixture LR of ``null + increments`` against ``null``: counts ``(..., W)`` -> ``(...)``.

    Positive increments test ``delta <= null`` (is it worse?), negative ones ``delta >= null``.
    """
    alt = null + np.asarray(increments, dtype=np.float64)[None, :]
    out = mixture_log_lr_grid(canary_bad, baseline_bad, rho, [null], alt, log_weights)
    return np.asarray(out[..., 0], dtype=np.float64)
