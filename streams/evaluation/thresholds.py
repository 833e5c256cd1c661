"""A rollout's latency thresholds, fixed once from the baseline's answers before anything is
compared (interim rule; the statistics issue #12 refines when and how).

The thresholds are upper edges of histogram bins, so an answer's exceedance is exactly known
from its bin.

>>> import numpy as np
>>> from model_canary.streams.evidence.columns import histogram
>>> hist = histogram(np.linspace(1.0, 100.0, 2000))
>>> t = thresholds_from_hist(hist, min_items=2000)
>>> sorted(t), 95.0 < t["p95"] < 98.0, 99.0 < t["p99"] < 101.5
(['p95', 'p99'], True, True)
>>> thresholds_from_hist(np.zeros_like(hist)) is None
True
"""

from __future__ import annotations

import numpy as np

from model_canary.streams.evidence.columns import Ints, bin_upper_ms

#: Baseline answers (without error) needed before thresholds are fixed: 200, as the evaluator
#: did before evidence (the demo's short steps need thresholds within the first step). The
#: statistics issue (#12) replaces this rule (more answers, so the base rate is stable).
THRESHOLD_ITEMS = 200
QUANTILES = {"p95": 0.95, "p99": 0.99}


def thresholds_from_hist(hist: Ints, min_items: int = THRESHOLD_ITEMS) -> dict[str, float] | None:
    """``{"p95": ms, "p99": ms}`` from a latency histogram of at least ``min_items`` answers
    (None before): the upper edge of the bin holding each quantile."""
    total = int(hist.sum())
    if total < max(1, min_items):
        return None
    cumulative = np.cumsum(hist)
    return {
        name: bin_upper_ms(int(np.searchsorted(cumulative, q * total, side="left")))
        for name, q in QUANTILES.items()
    }
