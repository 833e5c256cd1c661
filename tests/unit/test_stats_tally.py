from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams.stats.compare import compare
from model_canary.streams.stats.layout import ARMS, FIELDS, METRICS
from model_canary.streams.stats.tally import TRASH, ImpossibleEvidence, Tally
from model_canary.streams.stats.watermark import Completeness

WEIGHTS = (100, 2000, 5000)


def served(t: Tally, second: int, weight: int, arm: str, rows: dict[int, tuple[int, ...]]) -> None:
    """Add one cell for a one-replica tally: ``{bucket: (n, errors, timed, p95, p99)}``."""
    b = np.array([list(rows)])
    cols = np.array([list(v) for v in rows.values()]).reshape(1, len(rows), 5)
    t.add_served(
        second,
        weight,
        arm,
        buckets=b,
        n=cols[..., 0],
        errors=cols[..., 1],
        timed=cols[..., 2],
        over_p95=cols[..., 3],
        over_p99=cols[..., 4],
    )


def test_nothing_counts_until_every_arm_is_complete() -> None:
    t = Tally(1, control=True, warmup_s=0, weights=WEIGHTS)
    served(t, 10, 2000, "canary", {5: (3, 1, 2, 1, 0)})
    assert t.totals.sum() == 0 and t.pending_seconds() == [10]
    t.release(np.array([9]))
    assert t.totals.sum() == 0
    t.release(np.array([10]))
    assert t.pending_seconds() == []
    assert t.totals[0, 1, 0].tolist() == [3, 1, 2, 1, 0, 0, 0]
    assert t.units[0, 5, 1].sum() == 0, "the per-bucket sums wait for the next refresh"
    t.refresh()
    assert t.units[0, 5, 1].tolist() == [3, 1, 2, 1, 0, 0, 0]
    # A record for a released second (a late label, say) counts at once.
    t.add_labelled(3, 2000, "control", buckets=[[2500]], labelled=[[2]], incorrect=[[1]])
    assert t.totals[0, 1, 1, FIELDS.index("incorrect")] == 1


def test_the_warmup_after_a_new_weight_is_not_compared() -> None:
    t = Tally(1, control=False, warmup_s=30, weights=WEIGHTS)
    t.add_routed(100, 2000)
    served(t, 110, 2000, "canary", {1: (5, 5, 0, 0, 0)})
    served(t, 130, 2000, "canary", {1: (2, 0, 2, 0, 0)})
    t.release(np.array([200]))
    assert t.totals[0, 1, 0].tolist()[:3] == [2, 0, 2], "second 110 was in the warm-up"


@pytest.mark.parametrize(
    ("arm", "rows", "reason"),
    [
        ("canary", {5000: (1, 0, 1, 0, 0)}, "bucket-outside-arm"),
        ("canary", {5: (1, 2, 0, 0, 0)}, "inconsistent-counts"),
        ("canary", {5: (2, 0, 2, 0, 1)}, "inconsistent-counts"),
        ("canary", {5: (-1, 0, 0, 0, 0)}, "negative-count"),
        ("nobody", {5: (1, 0, 1, 0, 0)}, "bad-arm"),
    ],
)
def test_impossible_records_are_refused(
    arm: str, rows: dict[int, tuple[int, ...]], reason: str
) -> None:
    t = Tally(1, control=True, warmup_s=0, weights=WEIGHTS)
    with pytest.raises(ImpossibleEvidence) as err:
        served(t, 1, 2000, arm, rows)
    assert err.value.reason == reason
    assert t.pending_seconds() == []


def test_a_repeated_bucket_or_a_fractional_count_is_refused() -> None:
    t = Tally(1, control=False, warmup_s=0)
    with pytest.raises(ImpossibleEvidence, match="twice"):
        t.add_served(1, 100, "baseline", buckets=[[200, 200]], n=[[1, 1]])
    with pytest.raises(ImpossibleEvidence, match="whole"):
        t.add_served(1, 100, "baseline", buckets=[[200]], n=[[1.5]])
    with pytest.raises(ImpossibleEvidence, match="whole"):
        t.add_served(1, 100, "baseline", buckets=[[200]], n=[[float("nan")]])
    with pytest.raises(ImpossibleEvidence):
        t.add_latency_hist("baseline", bins=[[5000]], counts=[[1]])


def test_completeness_waits_for_the_slower_arm_however_long_it_lags() -> None:
    c = Completeness(2)
    for s in range(100):
        c.add_routed(s, "canary", [1, 1])
        c.add_routed(s, "baseline", [9, 9])
        c.add_done(s, "canary", [1, 1])
        if s < 40:
            c.add_done(s, "baseline", [9, 9])
    assert c.watermark(100).tolist() == [39, 39]
    for s in range(40, 100):
        c.add_done(s, "baseline", [9, 0])
    assert c.watermark(100).tolist() == [99, 39]


def _records(seed: int, replicas: int, count: int, control: bool) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    layout = Tally(1, control=control, warmup_s=0)
    out: list[dict[str, object]] = []
    for i in range(count):
        w = int(rng.choice(WEIGHTS))
        arm = str(rng.choice(ARMS))
        lo, hi = layout.ranges(w)[arm]
        if hi <= lo:
            continue
        k = int(rng.integers(1, min(12, hi - lo) + 1))
        b = np.stack([rng.choice(np.arange(lo, hi), k, replace=False) for _ in range(replicas)])
        b[:, -1] = np.where(rng.random(replicas) < 0.3, TRASH, b[:, -1])
        n = np.where(b == TRASH, 0, rng.integers(0, 6, b.shape))
        e = rng.binomial(n, 0.2)
        timed = n - e
        o95 = rng.binomial(timed, 0.3)
        o99 = rng.binomial(o95, 0.5)
        fields = {"n": n, "errors": e, "timed": timed, "over_p95": o95, "over_p99": o99}
        batch = rng.random((replicas, 8)) * 10
        out.append({"second": i, "weight": w, "arm": arm, "buckets": b, **fields, "batch": batch})
    return out


def _feed(t: Tally, records: list[dict[str, object]], rows: slice) -> Tally:
    for rec in records:
        cols = {
            k: np.asarray(rec[k])[rows] for k in ("n", "errors", "timed", "over_p95", "over_p99")
        }
        t.add_served(
            int(str(rec["second"])),
            int(str(rec["weight"])),
            str(rec["arm"]),
            buckets=np.asarray(rec["buckets"])[rows],
            batch=np.asarray(rec["batch"])[rows],
            **cols,
        )
        t.release(np.full(t.replicas, int(str(rec["second"]))))
    t.refresh()
    return t


def _random_tally(seed: int, replicas: int, count: int, control: bool) -> Tally:
    t = Tally(replicas, control=control, warmup_s=0, weights=WEIGHTS)
    return _feed(t, _records(seed, replicas, count, control), slice(None))


def _direct_bucket_variance(
    t: Tally, metric: str, comparator: str, starts: tuple[int, ...]
) -> np.ndarray:
    """The bucket-clustered variance computed bucket by bucket (the slow, obvious way)."""
    c = compare(t, metric, comparator, starts)
    md = METRICS[metric]
    rho = c.rho
    lam = (c.canary_bad + c.other_bad) / np.maximum(c.canary_n + c.other_n, 1)
    others = ["control"] if comparator == "control" and t.control else ["control", "baseline"]
    out = np.zeros((t.replicas, len(starts)))
    for k in range(len(starts)):
        acc = np.zeros((t.replicas, 10_000))
        for s, w in enumerate(c.weights):
            if not c.subtests[k, s]:
                continue
            j = t.slots.index((w, "all"))
            u = t.units[:, :10_000, j].astype(float)
            a = u[..., t.index(md.bad)] - lam[:, s, None] * u[..., t.index(md.exposure)]
            g = np.zeros((t.replicas, 10_000))
            lo, hi = t.ranges(w)["canary"]
            g[:, lo:hi] = (1 - rho[:, s])[:, None]
            for o in others:
                lo, hi = t.ranges(w)[o]
                g[:, lo:hi] = -rho[:, s][:, None]
            acc += np.where(c.usable[:, s, None], g * a, 0.0)
        out[:, k] = (acc**2).sum(axis=1)
    return out


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), control=st.booleans())
def test_the_gram_sums_give_the_bucket_by_bucket_variance(seed: int, control: bool) -> None:
    t = _random_tally(seed, 2, 25, control)
    starts = (100, 5000)
    for metric, comparator in (("errors", "baseline"), ("latency_p99", "control")):
        c = compare(t, metric, comparator, starts)
        assert c.variances is not None
        expected = _direct_bucket_variance(t, metric, comparator, starts)
        assert np.allclose(c.variances.bucket, expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_many_replicas_at_once_equal_each_replica_alone(seed: int) -> None:
    records = _records(seed, 3, 20, True)
    together = _feed(Tally(3, control=True, warmup_s=0, weights=WEIGHTS), records, slice(None))
    c_all = compare(together, "latency_p95", "control", (100, 2000))
    for r in range(3):
        alone = Tally(1, control=True, warmup_s=0, weights=WEIGHTS)
        _feed(alone, records, slice(r, r + 1))
        assert np.array_equal(alone.units[0], together.units[r])
        assert np.array_equal(alone.totals[0], together.totals[r])
        assert np.allclose(alone.gram[0], together.gram[r])
        c_one = compare(alone, "latency_p95", "control", (100, 2000))
        assert np.allclose(c_one.phi[0], c_all.phi[r])
        assert np.array_equal(c_one.canary_bad[0], c_all.canary_bad[r])


def test_shadow_pairs_compare_both_answers_of_the_same_buckets() -> None:
    t = Tally(1, control=False, warmup_s=0, shadow_bp=3000, weights=(5000,))
    t.add_served(1, 5000, "canary", buckets=[[10, 20]], n=[[4, 4]], errors=[[2, 0]])
    t.add_served(1, 5000, "baseline", buckets=[[10, 20]], n=[[4, 4]], errors=[[1, 0]])
    with pytest.raises(ImpossibleEvidence):  # not mirrored: no canary answer there
        t.add_served(1, 5000, "canary", buckets=[[4000]], n=[[1]])
    t.release(1)
    c = compare(t, "errors", "baseline", (5000,))
    assert (c.canary_bad[0, 0], c.other_bad[0, 0], c.rho[0, 0]) == (2, 1, 0.5)
    t.refresh()
    paired = compare(t, "errors", "baseline", (5000,))
    assert paired.variances is not None and paired.variances.bucket[0, 0] > 0


def test_a_tally_restores_from_its_rows_and_goes_on_identically() -> None:
    records = _records(4, 1, 30, True)
    whole = _feed(Tally(1, control=True, warmup_s=0, weights=WEIGHTS), records, slice(None))
    first = Tally(1, control=True, warmup_s=0, weights=WEIGHTS)
    half = len(records) // 2
    _feed(first, records[:half], slice(None))
    first.add_served(10_000, 2000, "canary", buckets=[[3]], n=[[2]])  # pending (not released)
    restored = Tally.from_rows(first.to_rows())
    for t in (first, restored):
        _feed(t, records[half:], slice(None))
        t.release(np.array([10_000]))
        t.refresh()
    for name in ("units", "totals", "gram", "batch", "first_second", "watermark"):
        assert np.array_equal(getattr(restored, name), getattr(first, name)), name
    assert restored.pending_seconds() == first.pending_seconds() == []
    assert whole.totals[0, 1, 0, 0] + 2 == restored.totals[0, 1, 0, 0]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), replicas=st.sampled_from([1, 3]))
def test_merging_the_queued_deltas_early_changes_nothing_a_refresh_folds(
    seed: int, replicas: int
) -> None:
    """The queue of released per-bucket deltas is merged per bucket once it grows (so a
    snapshot of a busy rollout stays small); merged after every record or never, the refresh
    folds the same units, totals and Gram sums."""
    records = _records(seed, replicas, 30, True)
    lazy = Tally(replicas, control=True, warmup_s=0, weights=WEIGHTS)
    eager = Tally(replicas, control=True, warmup_s=0, weights=WEIGHTS)
    half = len(records) // 2
    _feed(lazy, records[:half], slice(None))
    _feed(eager, records[:half], slice(None))
    for t in (lazy, eager):  # the second half stays queued, then the rows go round a snapshot
        for rec in records[half:]:
            cols = {k: np.asarray(rec[k]) for k in ("n", "errors", "timed", "over_p95", "over_p99")}
            t.add_served(
                int(str(rec["second"])),
                int(str(rec["weight"])),
                str(rec["arm"]),
                buckets=np.asarray(rec["buckets"]),
                batch=np.asarray(rec["batch"]),
                **cols,
            )
            t.release(np.full(replicas, int(str(rec["second"]))))
            if t is eager:
                t._compact()  # merged after every record
    assert len(eager._queue) <= len({(j, arm) for j, arm, *_ in lazy._queue}) < len(lazy._queue)
    if replicas == 1:
        lazy, eager = Tally.from_rows(lazy.to_rows()), Tally.from_rows(eager.to_rows())
    lazy.refresh()
    eager.refresh()
    for name in ("units", "totals", "refreshed_totals", "batch"):
        assert np.array_equal(getattr(eager, name), getattr(lazy, name)), name
    assert np.allclose(eager.gram, lazy.gram, rtol=1e-12, atol=1e-9)
