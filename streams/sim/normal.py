"""The standard-normal quantile function, vectorised (numpy has none).

>>> [round(float(x), 6) for x in ndtri([0.5, 0.975, 0.01])]
[0.0, 1.959964, -2.326348]
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

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
    """Acklam's approximation, refined to relative error < 1.2e-9."""
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
