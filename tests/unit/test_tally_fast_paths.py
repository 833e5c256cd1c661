"""The tally's fast evidence path (one-pass checks, sums by sorting) against the path it
replaced (:mod:`tally_reference`): the same records, valid or not, leave both tallies in the
same state, and both refuse the same records for the same reason."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams.stats.layout import BUCKETS
from model_canary.streams.stats.tally import TRASH, ImpossibleEvidence, Tally
from tests.unit.tally_reference import ReferenceTally

WEIGHT = 5000  #: without a control arm: canary 0..4999, baseline 5000..9999
SPAN = {"canary": (0, WEIGHT), "baseline": (WEIGHT, BUCKETS), "control": (WEIGHT, WEIGHT)}


@st.composite
def rows(draw: Any, arm: str, replicas: int) -> dict[str, Any]:
    """Per-bucket rows ``(replicas, K)`` of one cell, mostly possible, sometimes not."""
    lo, hi = SPAN[arm]
    k = draw(st.integers(0, 6))
    flaw = draw(
        st.sampled_from(
            ["none"] * 6 + ["negative", "errors", "p99", "outside", "repeat", "pad", "unsorted"]
        )
    )
    out: dict[str, list[list[int]]] = {c: [] for c in ("b", "n", "e", "t", "p95", "p99")}
    for _ in range(replicas):
        # A few buckets at each end of the arm's range, so records share buckets (their sums
        # merge) and a flawed one can step outside.
        pool = sorted(
            {*range(lo, min(lo + 5, hi)), *range(max(hi - 3, lo), hi)}
            | (
                {lo - 2, lo - 1, hi, hi + 1} - {-2, -1, BUCKETS, BUCKETS + 1}
                if flaw == "outside"
                else set()
            )
        )
        size = min(k, len(pool))
        b = (
            sorted(draw(st.sets(st.sampled_from(pool), min_size=size, max_size=size)))
            if pool
            else []
        )
        # Replicas with fewer buckets than others (none, at times) pad with TRASH: a replica
        # with no traffic starts no warm-up.
        b = b[: draw(st.integers(0, len(b)))]
        b += [TRASH] * (k - len(b))
        n = [draw(st.integers(0, 9)) for _ in b]
        e = [draw(st.integers(0, x)) for x in n]
        t = [draw(st.integers(0, x - y)) for x, y in zip(n, e, strict=True)]
        p95 = [draw(st.integers(0, x)) for x in t]
        p99 = [draw(st.integers(0, x)) for x in p95]
        for i, bucket in enumerate(b):
            if bucket == TRASH:
                n[i] = e[i] = t[i] = p95[i] = p99[i] = 0
        for col, v in zip(["b", "n", "e", "t", "p95", "p99"], (b, n, e, t, p95, p99), strict=True):
            out[col].append(v)
    if k and flaw != "none":
        r, i = draw(st.integers(0, replicas - 1)), draw(st.integers(0, k - 1))
        if flaw == "negative":
            out[draw(st.sampled_from(["n", "e", "t", "p95", "p99"]))][r][i] = -1
        elif flaw == "errors":
            out["e"][r][i] = out["n"][r][i] + 1
        elif flaw == "p99":
            out["p99"][r][i] = out["p95"][r][i] + 1
        elif flaw == "repeat" and k > 1:
            out["b"][r][i] = out["b"][r][i - 1]
        elif flaw == "pad":
            out["b"][r][i], out["n"][r][i] = TRASH, max(1, out["n"][r][i])
        elif flaw == "unsorted":
            out["b"][r].reverse()
    return out


@st.composite
def steps(draw: Any, replicas: int) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(
            st.sampled_from(["served", "served", "served", "labelled", "routed", "release"])
        )
        second = draw(st.integers(100, 112))
        if kind == "release":
            out.append((kind, np.array([draw(st.integers(98, 114)) for _ in range(replicas)])))
        elif kind == "routed":
            out.append((kind, second))
        else:
            arm = draw(st.sampled_from(["canary", "baseline", "control"]))
            timed = draw(st.sampled_from([True, False, None, "rows"]))
            batch = draw(st.sampled_from([None, [1.0] * 8, [-1.0] * 8]))
            out.append((kind, (second, arm, draw(rows(arm, replicas)), timed, batch)))
        if draw(st.integers(0, 9)) == 0:
            out.append(("refresh", None))
    return out


def _apply(t: Tally, step: tuple[str, Any]) -> str | None:
    kind, arg = step
    try:
        if kind == "release":
            t.release(arg)
        elif kind == "refresh":
            t.refresh()
        elif kind == "routed":
            t.add_routed(arg, WEIGHT)
        elif kind == "served":
            second, arm, r, timed, batch = arg
            t.add_served(
                second,
                WEIGHT,
                arm,
                r["b"],
                r["n"],
                r["e"],
                r["p95"],
                r["p99"],
                batch=None if batch is None else np.tile(batch, (len(r["b"]), 1)),
                timed=r["t"] if timed == "rows" else timed,
            )
        else:
            second, arm, r, _timed, _batch = arg
            t.add_labelled(second, WEIGHT, arm, r["b"], r["n"], r["e"])
    except ImpossibleEvidence as exc:
        return f"{exc.reason}: {exc}"
    return None


def _state(t: Tally) -> dict[str, Any]:
    pending = [
        (s, it.j, it.arm, it.replicas, it.buckets, it.deltas, it.batch)
        for s in sorted(t._pending)
        for it in t._pending[s]
    ]
    return {
        "arrays": (t.units, t.totals, t.refreshed_totals, t.batch, t.first_second, t.gram),
        "more": (t.hist, t.watermark, t.version, t.slots, t._queued_rows, t._compact_at),
        "pending": pending,
        "queue": t._queue,
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.shape == b.shape
            and bool(np.array_equal(a, b))
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    return bool(a == b)


@settings(max_examples=150, deadline=None)
@given(
    replicas=st.sampled_from([1, 1, 3]),
    warmup=st.sampled_from([0, 3]),
    data=st.data(),
)
def test_the_fast_path_counts_and_refuses_exactly_as_the_reference(
    replicas: int, warmup: int, data: st.DataObject
) -> None:
    new = Tally(replicas, control=False, warmup_s=warmup)
    old = ReferenceTally(replicas, control=False, warmup_s=warmup)
    for t in (new, old):
        t._compact_at = 6  # merge the queue often: the sums by sorting run on every path
    for step in data.draw(steps(replicas)):
        refused = _apply(new, step), _apply(old, step)
        assert refused[0] == refused[1], step
        assert _same(_state(new), _state(old)), step
    new.refresh()
    old.refresh()
    assert _same(_state(new), _state(old))


def test_the_reference_is_the_old_path_and_the_fast_path_is_taken() -> None:
    """Both classes share everything else: a record that the fast path accepts leaves the
    same state in both, and only the reference runs its old checks."""
    new, old = Tally(1, control=False, warmup_s=0), ReferenceTally(1, control=False, warmup_s=0)
    for t in (new, old):
        t.add_served(5, WEIGHT, "canary", [[1, 4, 9]], [[3, 2, 1]], [[1, 0, 0]], timed=True)
        t.release(np.array([5]))
        t.refresh()
    assert _same(_state(new), _state(old))
    assert int(new.units[0, 1, 0, 0]) == 3 and int(new.totals[0, 0, 0, 0]) == 6
    assert ReferenceTally._add is not Tally._add and ReferenceTally._merged is not Tally._merged


def test_a_record_warm_for_some_replicas_only_counts_as_the_reference_counts_it() -> None:
    """Replica 0 has been served since second 100, replica 1 starts at 104: with a 3 s
    warm-up, second 104 counts for replica 0 only (released late, and released on time)."""
    for late in (False, True):
        new, old = Tally(2, control=False, warmup_s=3), ReferenceTally(2, control=False, warmup_s=3)
        for t in (new, old):
            t.add_served(100, WEIGHT, "canary", [[1], [TRASH]], [[2], [0]])
            if late:
                t.release(np.array([104, 104]))
            t.add_served(104, WEIGHT, "canary", [[1, 2], [1, 3]], [[1, 1], [5, 5]])
            t.release(np.array([104, 104]))
            t.refresh()
        assert _same(_state(new), _state(old))
        assert new.units[1].sum() == 0 and int(new.units[0, 1, 0, 0]) == 1
