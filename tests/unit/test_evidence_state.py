"""The evaluator's per-rollout state: exactly-once application, completeness, snapshots."""

from __future__ import annotations

import dataclasses
import gc
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams.evidence import snapshot
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder, Thresholds
from model_canary.streams.evidence.state import CLOSE_MS, RolloutEvidence
from model_canary.streams.messages import Arm, Evidence, OffsetRange
from model_canary.streams.stats.layout import ARMS, FIELDS
from model_canary.streams.stats.tally import Tally

T0 = 1_700_000_000


def fresh() -> RolloutEvidence:
    return RolloutEvidence.new("iris", "ro1", Tally(1, control=False, warmup_s=0))


def released(state: RolloutEvidence, weight_bp: int, arm: str) -> dict[str, int]:
    """The tally's released counts of one (weight, arm), by field name."""
    t = state.tally
    if (weight_bp, "all") not in t.slots:
        return dict.fromkeys(FIELDS, 0)
    row = t.totals[0, t.slots.index((weight_bp, "all")), ARMS.index(arm)]
    return {name: int(v) for name, v in zip(FIELDS, row, strict=True)}


def traffic(
    seed: int, seconds: int = 4, weight_bp: int = 2000, thresholds: bool = False
) -> list[Evidence]:
    """Evidence as a router and one worker per arm write it, in commit order: per second a
    few router transactions, each answered by the workers in transactions of their own."""
    rng = random.Random(seed)
    router = EvidenceBuilder("routed", source="router-1")
    workers = {arm: EvidenceBuilder("served", source=f"w-{arm}") for arm in ("baseline", "canary")}
    offsets = {"req": 0, "baseline": 0, "canary": 0}
    out: list[Evidence] = []
    t = Thresholds(3, 5.0, 9.0) if thresholds else None
    for s in range(seconds):
        for _txn in range(rng.randint(1, 3)):
            n = rng.randint(1, 40)
            by_arm: dict[str, list[int]] = {"baseline": [], "canary": []}
            for _ in range(n):
                bucket = rng.randrange(10_000)
                by_arm["canary" if bucket < weight_bp else "baseline"].append(bucket)
            for arm, buckets in by_arm.items():
                router.add_routed(Cell("iris", "ro1", "", arm, True, weight_bp, T0 + s), buckets)
            out += router.build((_span("req", offsets, n),))
            for arm, buckets in by_arm.items():
                if not buckets:
                    continue
                cell = Cell(
                    "iris", "ro1", "v2" if arm == "canary" else "v1", arm, True, weight_bp, T0 + s
                )
                lat = [rng.uniform(1, 12) for _ in buckets]
                workers[arm].add_batch(
                    [cell] * len(buckets),
                    buckets=buckets,
                    errors=[rng.random() < 0.1 for _ in buckets],
                    latencies_ms=lat,
                    batch_latency_ms=max(lat),
                    thresholds=[t] * len(buckets),
                )
                out += workers[arm].build((_span(f"req.{arm}", offsets, len(buckets), arm),))
    return out


def _span(topic: str, offsets: dict[str, int], n: int, key: str = "req") -> OffsetRange:
    first = offsets[key]
    offsets[key] += n + 1  # +1: the transaction's commit marker
    return OffsetRange(topic=topic, partition=0, first=first, last=first + n - 1)


def fingerprint(state: RolloutEvidence) -> bytes:
    """Everything the statistics read (the tally's per-bucket sums folded in: when they are
    refreshed depends on when the state was settled, not on what it holds)."""
    state.tally.refresh()
    rows = dataclasses.replace(state.tally.to_rows(), refreshes=0, refreshed_at=0)
    return snapshot.dump(
        {
            "tally": rows,
            "seconds": state.seconds,
            "watermark": state.watermark,
        }
    )


def feed(records: list[Evidence], *, settle_every: int = 5) -> RolloutEvidence:
    state = fresh()
    for i, ev in enumerate(records):
        state.apply(ev)
        if i % settle_every == 0:
            state.settle((ev.second + 1) * 1000 + CLOSE_MS)
    state.settle(10**13)
    return state


def reread(records: list[Evidence], rewinds: list[tuple[float, float]]) -> list[Evidence]:
    """The records as a consumer reads them when its position jumps back now and then (to a
    committed offset that lagged behind): in log order, with earlier stretches read again."""
    out: list[Evidence] = []
    pos = 0
    for at, back in sorted(rewinds):
        stop = max(pos, int(at * len(records)))
        out += records[pos:stop]
        pos = int(back * stop)
    return out + records[pos:]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rewinds=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=4),
)
def test_reading_the_evidence_again_from_any_point_counts_nothing_twice(
    seed: int, rewinds: list[tuple[float, float]]
) -> None:
    records = traffic(seed)
    once = feed(records)
    noisy = reread(records, rewinds)
    noisy = [ev for ev in noisy for _ in range(2)]  # and every record redelivered
    again = feed(noisy)
    assert fingerprint(again) == fingerprint(once)
    assert again.records == once.records == len(records)
    assert again.duplicates == len(noisy) - len(records)
    served = sum(ev.requests for ev in records if ev.kind == "served")
    totals = once.totals()
    assert sum(t["answered"] for t in totals.values()) == served
    assert sum(t["routed"] for t in totals.values()) == served


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.floats(0, 1))
def test_a_state_restored_from_its_snapshot_goes_on_exactly_as_before(
    seed: int, cut: float
) -> None:
    records = traffic(seed, thresholds=True)
    k = int(cut * len(records))
    straight = feed(records)
    first = feed(records[:k]) if k else fresh()
    restored = RolloutEvidence.from_bytes(first.to_bytes())
    assert fingerprint(restored) == fingerprint(first)
    # A restart re-reads from an earlier offset: the overlap is recognised.
    for ev in records[max(0, k - 5) :]:
        restored.apply(ev)
    restored.settle(10**13)
    assert fingerprint(restored) == fingerprint(straight)


def test_a_lagging_arm_holds_back_every_arm_until_it_has_answered() -> None:
    records = traffic(7, seconds=3)
    canary_answers = [ev for ev in records if ev.kind == "served" and ev.arm == "canary"]
    others = [ev for ev in records if ev not in canary_answers]
    state = fresh()
    for ev in others:
        state.apply(ev)
    late = (T0 + 30) * 1000
    assert state.settle(late) < T0, "nothing is released while the canary has not answered"
    assert int(state.tally.totals.sum()) == 0
    lag = state.lagging(late)
    assert [x.arm for x in lag] == ["canary"] and lag[0].oldest_second == T0
    assert lag[0].missing == sum(ev.requests for ev in canary_answers)
    for ev in canary_answers:
        state.apply(ev)
    assert state.settle(late) == T0 + 27
    assert state.lagging(late) == []
    canary = released(state, 2000, "canary")
    assert canary["n"] == sum(ev.requests for ev in canary_answers)


def test_an_idle_arm_is_complete_and_late_evidence_still_counts() -> None:
    state = fresh()
    routed = EvidenceBuilder("routed", source="r")
    served = EvidenceBuilder("served", source="w")
    cell = Cell("iris", "ro1", "v1", "baseline", True, 100, T0)
    routed.add_routed(cell._replace(version=""), [501, 502])
    served.add_batch(
        [cell, cell],
        buckets=[501, 502],
        errors=[False, False],
        latencies_ms=[1, 1],
        batch_latency_ms=1.0,
    )
    for ev in routed.build((OffsetRange(topic="req", partition=0, first=0, last=1),)):
        state.apply(ev)
    for ev in served.build((OffsetRange(topic="v1", partition=0, first=0, last=1),)):
        state.apply(ev)
    assert state.settle((T0 + 1) * 1000 + CLOSE_MS) == T0  # no canary routed: complete
    assert released(state, 100, "baseline")["n"] == 2
    # A result of an already released second (another worker instance, lagging) counts.
    served.add_batch([cell], buckets=[503], errors=[True], latencies_ms=[1], batch_latency_ms=1.0)
    for ev in served.build((OffsetRange(topic="v1", partition=1, first=0, last=0),)):
        assert state.apply(ev)
    assert released(state, 100, "baseline")["errors"] == 1


def test_every_record_of_one_transaction_counts_once() -> None:
    b = EvidenceBuilder("served", source="w")
    cells = [Cell("iris", "ro1", "v1", "baseline", True, 100, T0 + s) for s in (0, 1)]
    b.add_batch(
        cells, buckets=[501, 502], errors=[False, True], latencies_ms=[1, 2], batch_latency_ms=2.0
    )
    txn = b.build(
        (
            OffsetRange(topic="v1", partition=0, first=10, last=11),
            OffsetRange(topic="v1", partition=1, first=3, last=3),
        )
    )
    assert len(txn) == 2
    state = fresh()
    assert [state.apply(ev) for ev in txn] == [True, True]
    assert [state.apply(ev) for ev in txn] == [False, False]
    # An earlier transaction arriving late (never happens with one producer per partition,
    # but must not count twice either way).
    old = dataclasses.replace(
        txn[0], offsets=(OffsetRange(topic="v1", partition=0, first=5, last=9),)
    )
    assert not state.apply(old)
    # A range inside the last one is earlier too; one overlapping it and going further (an
    # at-least-once agent restarted before its offsets were committed) counts.
    inside = dataclasses.replace(
        txn[0], offsets=(OffsetRange(topic="v1", partition=0, first=10, last=10),)
    )
    assert not state.apply(inside)
    further = dataclasses.replace(
        txn[0], offsets=(OffsetRange(topic="v1", partition=0, first=10, last=14),)
    )
    assert state.apply(further) and not state.apply(further)


def test_unusable_records_change_nothing() -> None:
    state = fresh()
    ev = traffic(1, seconds=1)[0]
    before = state.to_bytes()
    with pytest.raises(ValueError, match="applied to"):
        state.apply(dataclasses.replace(ev, rollout_id="other"))
    with pytest.raises(ValueError, match="whole number"):
        state.apply(dataclasses.replace(ev, units=b"\x01\x02\x03"))
    with pytest.raises(ValueError, match="stable"):
        state.apply(dataclasses.replace(ev, arm=Arm.STABLE))
    assert state.to_bytes() == before
    assert state.apply(ev)


def test_thresholds_come_from_baseline_answers_without_thresholds_only() -> None:
    without = feed(traffic(3))
    with_t = feed(traffic(3, thresholds=True))
    baseline_ok = sum(
        ev.requests - ev.errors for ev in traffic(3) if ev.kind == "served" and ev.arm == "baseline"
    )
    assert int(without.tally.hist.sum()) == baseline_ok
    assert int(with_t.tally.hist.sum()) == 0
    row = released(with_t, 2000, "baseline")
    assert row["timed"] == row["n"] - row["errors"]
    assert 0 < row["over_p99"] <= row["over_p95"] <= row["timed"]
    with_t.tally.refresh()
    units = with_t.tally.units[0, 2000:, with_t.tally.slots.index((2000, "all"))]  # baseline
    assert int(units[:, FIELDS.index("over_p95")].sum()) == row["over_p95"]


@pytest.mark.parametrize("data", [b"", b"CSN1", b"CSN1junk", b"nope" * 10])
def test_corrupt_snapshots_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        RolloutEvidence.from_bytes(data)


def test_a_snapshot_builds_only_known_types() -> None:
    @dataclasses.dataclass
    class Evil:
        x: int = 0

    with pytest.raises(snapshot.SnapshotError, match="unknown type"):
        RolloutEvidence.from_bytes(snapshot.dump({"version": 1, "state": Evil(), "tally": None}))


def test_a_big_state_snapshots_small_and_fast() -> None:
    state = feed(traffic(11, seconds=20, weight_bp=5000))
    data = state.to_bytes()
    assert len(data) < 200_000
    again = RolloutEvidence.from_bytes(data)
    assert released(again, 5000, "canary") == released(state, 5000, "canary")
    assert np.array_equal(again.tally.units, state.tally.units)
    assert np.array_equal(again.tally.gram, state.tally.gram)


def test_a_snapshot_leaves_no_reference_cycle_behind() -> None:
    # Issue 11: a cycle left by dump (or load) keeps the state's raw bytes alive until the
    # cycle collector runs; the evaluator's checkpoints piled 30-40 MB up that way.
    state = feed(traffic(11, seconds=20, weight_bp=5000))
    gc.collect()
    gc.disable()
    try:
        data = state.to_bytes()
        after_dump = gc.collect()
        RolloutEvidence.from_bytes(data)
        after_load = gc.collect()
    finally:
        gc.enable()
    assert (after_dump, after_load) == (0, 0)


def test_a_second_closes_as_soon_as_every_active_router_has_moved_on() -> None:
    state = fresh()
    offsets = {"req": 0, "baseline": 0}

    def route(source: str, second: int) -> None:
        b = EvidenceBuilder("routed", source=source)
        b.add_routed(Cell("iris", "ro1", "", "baseline", True, 100, second), [501])
        for ev in b.build((_span(f"req-{source}", offsets, 1),)):
            state.apply(ev)

    def serve(second: int) -> None:
        b = EvidenceBuilder("served", source="w")
        cell = Cell("iris", "ro1", "v1", "baseline", True, 100, second)
        b.add_batch([cell], buckets=[501], errors=[False], latencies_ms=[1], batch_latency_ms=1.0)
        for ev in b.build((_span("v1", offsets, 1, "baseline"),)):
            state.apply(ev)

    now_ms = (T0 + 1) * 1000 + 200  # 0.2 s into the next second: the clock closes nothing
    for source in ("r1", "r2"):
        route(source, T0)
    serve(T0)
    serve(T0)
    assert state.settle(now_ms) < T0
    route("r1", T0 + 1)
    assert state.settle(now_ms) < T0, "router r2 may still route requests in that second"
    route("r2", T0 + 1)
    assert state.settle(now_ms) == T0
    assert released(state, 100, "baseline")["n"] == 2


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    order=st.randoms(use_true_random=False),
    clock=st.lists(st.integers(-1_500, 4_000), min_size=1, max_size=60),
)
def test_a_settle_that_skips_unchanged_counts_moves_the_watermark_as_a_full_one(
    seed: int, order: random.Random, clock: list[int]
) -> None:
    """Settling after every record (the evaluator's path, which skips the counts while the
    closed second and the counts up to it are unchanged) and settling with the counts looked
    at every time release the same seconds at the same moments, records in any order (late
    ones for seconds already looked at included)."""
    records = traffic(seed, seconds=5)
    # Mostly in commit order, some records held back and delivered seconds later.
    late = sorted(order.sample(range(len(records)), k=len(records) // 4))
    records = [ev for i, ev in enumerate(records) if i not in late] + [records[i] for i in late]
    skipping, full = fresh(), fresh()
    for i, ev in enumerate(records):
        now_ms = (ev.second + 1) * 1000 + clock[i % len(clock)]
        for state in (skipping, full):
            state.apply(ev)
        full._settled_closed = None  # look at the counts every time
        assert skipping.settle(now_ms) == full.settle(now_ms)
        assert skipping.settle(now_ms) == full.settle(now_ms)  # and again at once
    assert fingerprint(skipping) == fingerprint(full)
    skipping.settle(10**13)
    full._settled_closed = None
    full.settle(10**13)
    assert fingerprint(skipping) == fingerprint(full)
