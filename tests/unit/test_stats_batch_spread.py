"""Interference through batch-mates: with latency timed per micro-batch every answer reports its
batch's time (the slowest item's), so a slow user drags its batch-mates' answers over the
threshold too. The roll-back test's bucket clustering counts that user's own answers as one
cluster; the slowness it spreads to other buckets' answers is in its influence as well, by up
to the size-biased mean batch size ``kappa = sum m^2 / sum m`` per answer, so the buckets'
persistent excess enters the design effect times ``kappa^2`` (docs/statistics.md, "Latency
timed per batch: interference through batch-mates").
"""

from __future__ import annotations

import numpy as np

from model_canary.streams.stats.compare import VarianceParts, compare
from model_canary.streams.stats.tally import Tally

T0 = 1_700_000_000
W = 5000
RANGES = {"canary": (0, 5000), "control": (5000, 10000)}
HEAVY = 7  #: the slow heavy user's bucket (the canary's at 50%)


def serve(
    t: Tally, rng: np.random.Generator, second: int, arm: str, *, units: bool, max_size: int
) -> list[int]:
    """One second of ``arm``: 40 micro-batches of 1 to ``max_size`` answers timed per batch.
    In the canary a quarter of the answers are the heavy user's, over the threshold with
    probability 0.3 (the others 0.02); a batch is over when one of its items is, and then all
    its answers are. ``units``: the cell carries the batch-unit counts. Returns the sizes."""
    sizes = rng.integers(1, max_size + 1, 40)
    lo, hi = RANGES[arm]
    batch_of = np.repeat(np.arange(sizes.size), sizes)
    heavy = (rng.random(batch_of.size) < 0.25) & (arm == "canary")
    buckets = np.where(heavy, HEAVY, rng.integers(lo + 100, hi, batch_of.size))
    slow_item = rng.random(batch_of.size) < np.where(heavy, 0.3, 0.02)
    slow = np.bincount(batch_of, weights=slow_item, minlength=sizes.size) > 0
    over = slow[batch_of].astype(np.int64)
    uniq, inverse = np.unique(buckets, return_inverse=True)
    n = np.bincount(inverse, minlength=uniq.size)
    o = np.bincount(inverse, weights=over, minlength=uniq.size).astype(np.int64)
    m, e = sizes.astype(float), np.where(slow, sizes, 0).astype(float)
    moments = [(m**2).sum(), 0, 0, (m**2).sum(), (e**2).sum(), (e * m).sum(), (e**2).sum()]
    moments.append((e * m).sum())
    if units:
        moments += [sizes.size, slow.sum(), slow.sum(), 0]
    t.add_served(
        second, W, arm, buckets=[uniq], n=[n], errors=[0 * n], over_p95=[o], over_p99=[o],
        batch=np.array([moments]), timed=True,
    )  # fmt: skip
    return [int(x) for x in sizes]


def tally(*, units: bool, max_size: int, seconds: int = 300) -> tuple[Tally, float]:
    """The tally, and ``kappa^2`` computed from the sizes served (the larger side's)."""
    t = Tally(1, control=True, warmup_s=0, weights=(W,))
    rng = np.random.default_rng(11)
    sizes: dict[str, list[int]] = {"canary": [], "control": []}
    for s in range(seconds):
        for arm in ("canary", "control"):
            sizes[arm] += serve(t, rng, T0 + s, arm, units=units, max_size=max_size)
    t.release(np.array([T0 + seconds]))
    t.refresh()
    kappa = max(float(np.sum(np.square(v)) / np.sum(v)) for v in sizes.values())
    return t, kappa**2


def test_a_slow_users_spread_through_its_batches_is_in_the_roll_back_design_effect() -> None:
    """Fails without the spread (the design effect was the two-way one, below)."""
    t, kappa2 = tally(units=True, max_size=5)
    comp = compare(t, "latency_p95", "control", (W,))
    parts = comp.variances
    assert parts is not None and parts.spread is not None
    assert np.isclose(parts.spread[0, 0], kappa2, rtol=1e-9)
    assert kappa2 > 4, "batches of 1-5: kappa = 11/3"
    two_way = VarianceParts(parts.bucket, parts.bucket_items, parts.batch_excess, parts.items)
    by_bucket = parts.bucket[0, 0] / parts.bucket_items[0, 0]
    by_batch = parts.batch_excess[0, 0] / parts.items[0, 0]
    assert by_bucket > 1.5, "the heavy slow user's answers are one cluster"
    assert np.isclose(comp.phi[0, 0], 1 + kappa2 * (by_bucket - 1) + by_batch, rtol=1e-9)
    assert comp.phi[0, 0] > 2 * two_way.phi()[0, 0]


def test_answers_timed_one_by_one_keep_the_two_way_design_effect() -> None:
    """Without batch-unit counts (answers timed one by one, or an older worker) an answer is
    its own: nothing spreads, and the design effect is the two-way one exactly."""
    t, _ = tally(units=False, max_size=5)
    comp = compare(t, "latency_p95", "control", (W,))
    parts = comp.variances
    assert parts is not None
    assert parts.spread is not None and np.all(parts.spread == 1.0)
    two_way = VarianceParts(parts.bucket, parts.bucket_items, parts.batch_excess, parts.items)
    assert np.array_equal(comp.phi, two_way.phi())


def test_unbatched_answers_have_no_spread() -> None:
    """Batches of one answer: kappa is 1, the design effect the two-way one."""
    t, kappa2 = tally(units=True, max_size=1)
    assert kappa2 == 1.0
    comp = compare(t, "latency_p99", "control", (W,))
    parts = comp.variances
    assert parts is not None and parts.spread is not None
    assert np.allclose(parts.spread, 1.0)
    two_way = VarianceParts(parts.bucket, parts.bucket_items, parts.batch_excess, parts.items)
    assert np.allclose(comp.phi, two_way.phi())


def test_the_promotion_test_counting_batches_has_no_spread() -> None:
    """Counted in batches a slow user's batch counts once however many answers it holds, so
    the promotion test's design effect ignores the spread: the same with and without it."""
    t, _ = tally(units=True, max_size=5)
    comp = compare(t, "latency_p95", "control", (W,), unit="batch")
    assert comp.unit == ("batch",)
    parts = comp.variances
    assert parts is not None
    by_bucket = max(1.0, parts.bucket[0, 0] / parts.bucket_items[0, 0])
    assert comp.phi[0, 0] < by_bucket * 1.5, "not multiplied by kappa^2"
