"""The 95% interval of a benchmark percentile (moving-block bootstrap)."""

from __future__ import annotations

import doctest
import math
import random

import numpy as np

from model_canary.streams.percentiles import percentile_interval


def _stalled(n: int, seed: int) -> list[float]:
    """Latencies of ``n`` requests in sending order: ~2 ms, and every 1,000th request starts a
    stall during which the next 20 requests all wait ~200 ms (slow samples come in runs)."""
    rng = random.Random(seed)
    out = []
    left = 0
    for i in range(n):
        if i % 1000 == 500:
            left = 20
        out.append(rng.uniform(150, 250) if left else rng.uniform(1, 3))
        left = max(0, left - 1)
    return out


def test_interval_holds_the_percentile_and_is_deterministic() -> None:
    samples = _stalled(10_000, seed=3)
    low, high = percentile_interval(samples, 99)
    assert low <= float(np.percentile(samples, 99)) <= high
    assert percentile_interval(samples, 99) == (low, high)


def test_blocks_keep_runs_of_slow_samples_together() -> None:
    """Resampling single samples treats a stall's 20 slow requests as independent draws: the
    interval comes out narrower than with blocks that keep each stall whole."""
    samples = _stalled(10_000, seed=4)
    single = percentile_interval(samples, 99, block=1)
    blocks = percentile_interval(samples, 99, block=500)
    assert blocks[1] - blocks[0] > 2 * (single[1] - single[0])


def test_short_and_empty_series() -> None:
    assert percentile_interval([5.0, 5.0, 5.0], 99) == (5.0, 5.0)
    low, high = percentile_interval([], 99)
    assert math.isnan(low) and math.isnan(high)


def test_doctests() -> None:
    from model_canary.streams import percentiles

    result = doctest.testmod(percentiles)
    assert result.failed == 0 and result.attempted > 0
