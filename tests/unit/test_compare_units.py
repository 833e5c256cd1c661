"""A metric's comparisons in both units worked out together
(:func:`~model_canary.streams.stats.compare.compare_units`, what a snapshot at the last step
before 100% takes) against one :func:`compare` per unit: the same comparisons, each with
arrays of its own, whatever the evidence (batch-unit counts or not, arms idle, refreshed or
not)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams.stats.compare import UNITS, Comparison, compare, compare_units
from model_canary.streams.stats.tally import Tally
from tests.unit.test_stats_batch_unit import T0, W, clumped_second


def _same(a: Comparison, b: Comparison) -> None:
    assert (a.metric, a.comparator, a.weights, a.unit) == (
        b.metric,
        b.comparator,
        b.weights,
        b.unit,
    )
    for x, y in (
        (a.canary_n, b.canary_n),
        (a.canary_bad, b.canary_bad),
        (a.other_n, b.other_n),
        (a.other_bad, b.other_bad),
        (a.subtests, b.subtests),
        (a.phi, b.phi),
    ):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert a.variances is not None and b.variances is not None
    for name in ("bucket", "bucket_items", "batch_excess", "items", "spread"):
        x, y = getattr(a.variances, name), getattr(b.variances, name)
        assert (x is None) == (y is None)
        if x is not None:
            assert np.array_equal(x, y)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    seconds=st.integers(0, 12),
    units=st.booleans(),
    arms=st.sampled_from([("canary", "control"), ("canary",), ("control",)]),
    rate=st.sampled_from([0.0, 0.05, 0.5]),
    refresh=st.booleans(),
)
def test_both_units_at_once_are_one_compare_per_unit(
    seed: int, seconds: int, units: bool, arms: tuple[str, ...], rate: float, refresh: bool
) -> None:
    t = Tally(1, control=True, warmup_s=0, weights=(W,))
    rng = np.random.default_rng(seed)
    for s in range(seconds):
        for arm in arms:
            clumped_second(t, rng, T0 + s, arm, units=units, rate=rate)
    t.release(np.array([T0 + seconds]))
    if refresh:
        t.refresh()
    for metric in ("errors", "latency_p95", "latency_p99"):
        for comparator in ("control", "baseline"):
            both = compare_units(t, metric, comparator, (W,), units=UNITS)
            item = compare(t, metric, comparator, (W,))
            batch = compare(t, metric, comparator, (W,), unit="batch")
            _same(both["item"], item)
            _same(both["batch"], batch)
            # Arrays of their own: nothing one comparison's reader does reaches the other's.
            assert not np.shares_memory(both["item"].canary_n, both["batch"].canary_n)
            assert not np.shares_memory(both["item"].subtests, both["batch"].subtests)
