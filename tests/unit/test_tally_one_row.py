"""The evaluator's one-rollout path through the tally (one replica, a record's 1-D columns:
numbers instead of per-replica arrays) against the simulator's many-replica path: the same
records, valid or not, leave the same counts, warm-up starts, batch sums, per-bucket sums and
Gram sums, and are refused for the same reasons."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams.evidence.columns import BatchSums
from model_canary.streams.stats.tally import ImpossibleEvidence, Tally

W = 2000  # canary 0..1999, control 2000..3999, baseline 4000..9999 (with a control arm)
ARM_BUCKETS = {"canary": (0, 2000), "control": (2000, 4000), "baseline": (4000, 10000)}


@dataclass(frozen=True)
class Served:
    second: int
    arm: str
    buckets: list[int]
    n: list[int]
    errors: list[int]
    over95: list[int]
    over99: list[int]
    timed: bool
    batch: BatchSums


#: How a drawn record is spoiled (each a check of the tally), or "none".
FLAWS = (
    "none",
    "negative-n",
    "errors-over-n",
    "negative-errors",
    "negative-over-p99",
    "p99-over-p95",
    "p95-over-timed",
    "bucket-outside-arm",
    "unsorted-buckets",
    "batches-over-timed",
    "negative-moment",
    "stable-arm",
    "odd-figure",
    "huge-n",
)
#: What an "odd-figure" puts in one batch figure: not a count (NaN, an infinity, a fraction),
#: or a float or an int too large for any sum to stay exact.
ODD_FIGURES = (float("nan"), float("inf"), float("-inf"), 1.5, -0.0, 1e308, 2**70)
#: The batch figures an "odd-figure" may spoil.
FIGURES = ("m2", "e2_errors", "em_over_p99", "batches", "batch_items", "max_batch")


@st.composite
def served(draw: st.DrawFn) -> Served:
    """A served record that can be true, then (often) one flaw of :data:`FLAWS`."""
    arm = draw(st.sampled_from(["canary", "control", "baseline"]))
    lo, hi = ARM_BUCKETS[arm]
    k = draw(st.integers(0, 6))
    buckets = sorted(draw(st.sets(st.integers(lo, lo + 40), min_size=k, max_size=k)))
    n = [draw(st.integers(0, 6)) for _ in range(k)]
    errors = [draw(st.integers(0, v)) for v in n]
    over95 = [draw(st.integers(0, v - e)) for v, e in zip(n, errors, strict=True)]
    over99 = [draw(st.integers(0, v)) for v in over95]
    timed = draw(st.booleans())
    covered = sum(v - e for v, e in zip(n, errors, strict=True)) if timed else 0
    nb = draw(st.integers(min(1, covered), covered))
    b95 = draw(st.integers(0, min(nb, sum(over95)))) if timed else 0
    b99 = draw(st.integers(0, min(b95, sum(over99)))) if timed else 0
    moments = [draw(st.integers(0, 9)) for _ in range(8)]
    flaw = draw(st.sampled_from(FLAWS)) if draw(st.booleans()) else "none"
    at = draw(st.integers(0, k - 1)) if k else 0
    if k and flaw == "negative-n":
        n[at] = -1
    elif k and flaw == "errors-over-n":
        errors[at] = n[at] + 1
    elif k and flaw == "negative-errors":
        errors[at] = -1
    elif k and flaw == "negative-over-p99":
        over99[at] = -1
    elif k and flaw == "p99-over-p95":
        over99[at] = over95[at] + 1
    elif k and flaw == "p95-over-timed":
        over95[at] = n[at] - errors[at] + 1
    elif k and flaw == "bucket-outside-arm":
        buckets[at] = (hi + 5) % 10000 if hi < 10000 else lo - 5
    elif k > 1 and flaw == "unsorted-buckets":
        buckets.reverse()
    elif flaw == "batches-over-timed":
        nb = covered + 1
    elif flaw == "negative-moment":
        moments[draw(st.integers(0, 7))] = -1
    elif flaw == "stable-arm":
        arm = "stable"
    elif k and flaw == "huge-n":  # valid, near int64's end: sums may wrap, alike on both paths
        n[at] = draw(st.sampled_from([2**62, 2**63 - 1]))
    batch = BatchSums(
        batches=moments[0],
        batch_items=moments[1],
        max_batch=moments[2],
        batches_timed=nb,
        batches_over_p95=b95,
        batches_over_p99=b99,
        m2=moments[3],
        e2_errors=moments[4],
        em_errors=moments[5],
        e2_over_p95=moments[6],
        em_over_p95=moments[7],
    )
    if flaw == "odd-figure":
        # Not an int, as a decoded record's figure could never be: past the types on purpose.
        odd: dict[str, Any] = {draw(st.sampled_from(FIGURES)): draw(st.sampled_from(ODD_FIGURES))}
        batch = replace(batch, **odd)
    return Served(
        second=draw(st.integers(100, 106)),
        arm=arm,
        buckets=buckets,
        n=n,
        errors=errors,
        over95=over95,
        over99=over99,
        timed=timed,
        batch=batch,
    )


def _one(t: Tally, r: Served) -> str:
    b, n, e, p95, p99 = (
        np.array(c, dtype=np.int64) for c in (r.buckets, r.n, r.errors, r.over95, r.over99)
    )
    try:
        t.add_served(r.second, W, r.arm, b, n, e, p95, p99, r.batch, r.timed)
    except ImpossibleEvidence as exc:
        return exc.reason
    return "counted"


def _many(t: Tally, r: Served) -> str:
    b, n, e, p95, p99 = (
        np.array([c, c], dtype=np.int64) for c in (r.buckets, r.n, r.errors, r.over95, r.over99)
    )
    try:
        t.add_served(r.second, W, r.arm, b, n, e, p95, p99, r.batch, r.timed)
    except ImpossibleEvidence as exc:
        return exc.reason
    return "counted"


def _state(t: Tally, replica: int) -> list[npt.NDArray[np.float64]]:
    return [
        np.asarray(a[replica], dtype=np.float64)
        for a in (t.totals, t.first_second, t.batch, t.units, t.gram, t.open_sums)
    ]


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(served(), min_size=1, max_size=12),
    release_at=st.integers(99, 107),
    warmup_s=st.sampled_from([0, 2]),
)
def test_one_rollout_path_is_the_many_replica_path(
    records: list[Served], release_at: int, warmup_s: int
) -> None:
    one = Tally(1, control=True, warmup_s=warmup_s, weights=[W])
    many = Tally(2, control=True, warmup_s=warmup_s, weights=[W])
    for i, r in enumerate(records):
        assert _one(one, r) == _many(many, r)
        if i == len(records) // 2:  # later records land on released seconds (counted at once)
            one.release(np.array([release_at]))
            many.release(np.array([release_at]))
        for a, b in zip(_state(one, 0), _state(many, 0), strict=True):
            assert np.array_equal(a, b, equal_nan=True)
    for t in (one, many):
        t.release(np.array([200]))
        t.refresh()
    for a, b in zip(_state(one, 0), _state(many, 1), strict=True):
        assert np.array_equal(a, b, equal_nan=True)
