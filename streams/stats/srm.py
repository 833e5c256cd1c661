"""The sample-ratio check: do labelled requests come from the arms in the routed proportions?

Labels are what the accuracy comparison rests on. If they arrive more (or less) often for one
arm - a feedback pipeline that only knows the baseline, a canary that drops a field - the
accuracy evidence is biased in an unknown direction. The right response is to HOLD and
look, not to roll back.

Under the null, a labelled request routed at weight ``rho`` is the canary's with probability
``rho``. The test is Lindon and Malek's Bayes factor: a Beta(k rho, k (1 - rho)) mixture over
the canary share, one factor per distinct weight (never pooled across weights). Each factor
is a martingale under the null, so their product is, and ``P(ever BF >= 1/alpha) <= alpha``::

    ln BF = lnB(k rho + n_c, k (1 - rho) + n_b) - lnB(k rho, k (1 - rho))
            - n_c ln(rho) - n_b ln(1 - rho)

>>> sample_ratio_check({2000: (200, 800)}).mismatch   # exactly the routed 20%
False
>>> sample_ratio_check({2000: (100, 900)}).mismatch   # half the canary's labels missing
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

MAX_BP = 10_000


@dataclass(frozen=True, slots=True)
class SrmResult:
    """One evaluation of the sample-ratio check."""

    log_bf: float  #: log Bayes factor against "labels follow the routed split"
    threshold: float  #: ln(1/alpha)
    mismatch: bool
    canary: int  #: labelled requests from the canary (all weights)
    baseline: int
    expected_canary: float  #: what the routed weights predict for ``canary``


def sample_ratio_check(
    counts: Mapping[int, tuple[int, int]], alpha: float = 0.01, concentration: float = 1000.0
) -> SrmResult:
    """Test ``{weight_bp: (canary_labelled, baseline_labelled)}`` against the routed split.

    ``concentration`` is the prior's ``k``: the Beta prior on the canary share at weight
    ``rho`` has mean ``rho`` and standard deviation about ``sqrt(rho (1 - rho) / k)``, so the
    default 1,000 expects mismatches of a few percentage points at 20% - a lost partition's
    worth - and still finds gross ones quickly.
    """
    if not 0 < alpha < 1 or concentration <= 0:
        raise ValueError("alpha must be within (0, 1) and concentration positive")
    log_bf = 0.0
    canary = baseline = 0
    expected = 0.0
    for weight, (n_c, n_b) in counts.items():
        if not 0 <= weight <= MAX_BP or n_c < 0 or n_b < 0:
            raise ValueError(f"bad labelled counts {n_c, n_b} at weight {weight}")
        canary += n_c
        baseline += n_b
        rho = weight / MAX_BP
        expected += rho * (n_c + n_b)
        if weight in (0, MAX_BP):
            # One arm gets everything: a label from the other arm is impossible, not unlikely.
            if (weight == 0 and n_c) or (weight == MAX_BP and n_b):
                log_bf = math.inf
            continue
        a, b = concentration * rho, concentration * (1.0 - rho)
        log_bf += (
            _log_beta(a + n_c, b + n_b)
            - _log_beta(a, b)
            - n_c * math.log(rho)
            - n_b * math.log1p(-rho)
        )
    threshold = -math.log(alpha)
    return SrmResult(log_bf, threshold, log_bf >= threshold, canary, baseline, expected)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
