"""The batch-unit latency counts: when workers time answers per micro-batch, a slow batch makes
all its answers slow at once, so the latency *promotion* test counts batches, not answers (the
roll-back test keeps counting answers: ``test_stats_promotion_unit.py``).

Evidence carries, per served cell (schema version 2), the batches with an answer compared on
latency and those with one over each threshold; the tally keeps them per (weight, arm) with
the timed answers they cover, and :func:`~model_canary.streams.stats.compare.compare` with
``unit="batch"`` uses them when they cover every timed answer of both sides.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.schemas import schema_dir
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder, Thresholds
from model_canary.streams.evidence.state import RolloutEvidence
from model_canary.streams.messages import Evidence, OffsetRange
from model_canary.streams.stats.compare import Comparison, compare
from model_canary.streams.stats.layout import ARMS, BATCH_FIELDS, BATCH_UNIT_TIMED, BATCHES_TIMED
from model_canary.streams.stats.sequential import ALARM_GRID, promotion_log_e, rollback_log_e
from model_canary.streams.stats.tally import ImpossibleEvidence, Tally, TallyRows, from_rows
from tests.unit.record_strategies import avro_message

T0 = 1_700_000_000
W = 5000
RANGES = {"canary": (0, 5000), "control": (5000, 10000)}


def clumped_second(
    t: Tally,
    rng: np.random.Generator,
    second: int,
    arm: str,
    *,
    units: bool,
    rate: float = 0.02,
) -> None:
    """One second of one arm served in micro-batches whose answers are timed per batch: 40
    batches, most of 1-3 answers, one in ten of 30; a batch is slow (every answer over both
    thresholds) with probability ``rate`` whatever its size. ``units``: the cell carries the
    batch-unit counts (else only the 8 batch moments, as before schema version 2)."""
    sizes = np.where(rng.random(40) < 0.1, 30, rng.integers(1, 4, 40))
    slow = rng.random(40) < rate
    serve_batches(t, rng, second, arm, sizes.tolist(), slow.tolist(), units=units)


def serve_batches(
    t: Tally,
    rng: np.random.Generator,
    second: int,
    arm: str,
    sizes: list[int],
    slow: list[bool],
    *,
    units: bool = True,
) -> None:
    """One second of one arm at weight :data:`W`: micro-batches of ``sizes`` answers timed per
    batch (a ``slow`` batch's answers are all over both thresholds), answers in random buckets
    of the arm; ``units``: the cell carries the batch-unit counts (schema version 2), else only
    the 8 batch moments (an older worker)."""
    sz = np.asarray(sizes, dtype=np.int64)
    sl = np.asarray(slow, dtype=bool)
    lo, hi = RANGES[arm]
    items = np.repeat(np.arange(sz.size), sz)
    buckets = rng.integers(lo, hi, items.size)
    over = sl[items].astype(np.int64)
    uniq, inverse = np.unique(buckets, return_inverse=True)
    n = np.bincount(inverse, minlength=uniq.size)
    o = np.bincount(inverse, weights=over, minlength=uniq.size).astype(np.int64)
    m, e = sz.astype(float), np.where(sl, sz, 0).astype(float)
    moments = [(m**2).sum(), 0, 0, (m**2).sum(), (e**2).sum(), (e * m).sum(), (e**2).sum()]
    moments.append((e * m).sum())
    if units:
        moments += [sz.size, sl.sum(), sl.sum(), 0]
    t.add_served(
        second, W, arm, buckets=[uniq], n=[n], errors=[0 * n], over_p95=[o], over_p99=[o],
        batch=np.array([moments]), timed=True,
    )  # fmt: skip


def identical_arms(units: bool, seconds: int = 600, seed: int = 3) -> Tally:
    t = Tally(1, control=True, warmup_s=0, weights=(W,))
    rng = np.random.default_rng(seed)
    for s in range(seconds):
        for arm in ("canary", "control"):
            clumped_second(t, rng, T0 + s, arm, units=units)
    t.release(np.array([T0 + seconds]))
    t.refresh()
    return t


def promotion(t: Tally) -> float:
    comp = compare(t, "latency_p99", "control", (W,), unit="batch")
    return float(promotion_log_e(comp, 0, 0, 0.2, 0.005)[0])


def test_clumped_exceedances_of_identical_arms_promote_when_batches_are_the_unit() -> None:
    """Session 18's A/A held at 50%: a slow batch's answers all exceed at once, the design
    effect counted that clumping (about sum m^2 / sum m) and the promotion evidence stayed
    far below its threshold. With batches as the unit the same traffic proves the identical
    canary acceptable (fails on de5898e: the batch-unit counts did not exist)."""
    threshold = math.log(3 / 0.05)
    per_item = identical_arms(units=False)
    comp_items = compare(per_item, "latency_p99", "control", (W,))
    assert comp_items.unit == ("item",)
    assert comp_items.phi[0, 0] > 8, "answers of a slow batch are one clump"
    assert promotion(per_item) < threshold
    per_batch = identical_arms(units=True)
    assert compare(per_batch, "latency_p99", "control", (W,)).unit == ("item",), "roll-back"
    comp = compare(per_batch, "latency_p99", "control", (W,), unit="batch")
    assert comp.unit == ("batch",)
    assert comp.canary_n[0, 0] == comp.other_n[0, 0] == 600 * 40
    assert comp.phi[0, 0] < 1.5, "batches spread over buckets: no clustering left"
    assert promotion(per_batch) > threshold


def test_a_slower_canary_is_not_shown_acceptable_per_batch() -> None:
    t = Tally(1, control=True, warmup_s=0, weights=(W,))
    rng = np.random.default_rng(5)
    for s in range(300):
        clumped_second(t, rng, T0 + s, "canary", units=True, rate=0.06)
        clumped_second(t, rng, T0 + s, "control", units=True, rate=0.02)
    t.release(np.array([T0 + 300]))
    t.refresh()
    comp = compare(t, "latency_p99", "control", (W,), unit="batch")
    assert comp.unit == ("batch",)
    assert promotion(t) < 0
    rate_c = comp.canary_bad[0, 0] / comp.canary_n[0, 0]
    ratio = rate_c / (comp.other_bad[0, 0] / comp.other_n[0, 0])
    assert 2 < ratio < 4.5


def test_batches_are_the_unit_only_when_they_cover_every_timed_answer() -> None:
    t = Tally(1, control=True, warmup_s=0, weights=(W,))
    rng = np.random.default_rng(1)
    for s in range(20):
        clumped_second(t, rng, T0 + s, "canary", units=True)
        # One control cell from a producer without batch counts (an older worker).
        clumped_second(t, rng, T0 + s, "control", units=s != 7)
    t.release(np.array([T0 + 20]))
    comp = compare(t, "latency_p99", "control", (W,), unit="batch")
    assert comp.unit == ("item",)
    assert comp.canary_n[0, 0] == t.totals[0, 0, 0, 2], "timed answers, not batches"
    # Errors are never compared per batch.
    assert compare(t, "errors", "baseline", (W,), unit="batch").unit == ("item",)


@pytest.mark.parametrize(
    ("counts", "timed", "over"),
    [
        ((5, 2, 1), 4, 3),  # more batches than timed answers
        ((3, 2, 3), 4, 3),  # more batches over p99 than over p95
        ((3, 4, 1), 9, 9),  # more batches over p95 than batches
        ((3, 2, 1), 9, 1),  # more batches over p95 than answers over it
        ((0, 1, 0), 4, 3),  # batches over a threshold, no batches
        ((1.5, 0, 0), 4, 0),  # a fraction of a batch
    ],
)
def test_batch_counts_that_cannot_be_true_are_refused(
    counts: tuple[float, float, float], timed: int, over: int
) -> None:
    t = Tally(1, control=True, warmup_s=0, weights=(W,))
    moments = [0.0] * BATCHES_TIMED + list(counts) + [0.0]
    with pytest.raises(ImpossibleEvidence):
        t.add_served(
            T0, W, "canary", buckets=[[1]], n=[[timed]], errors=[[0]], over_p95=[[over]],
            over_p99=[[min(over, 1)]], batch=np.array([moments]), timed=True,
        )  # fmt: skip


def test_the_tally_fills_in_the_timed_answers_its_batch_counts_cover() -> None:
    t = Tally(1, control=True, warmup_s=0, weights=(W,))
    rng = np.random.default_rng(2)
    clumped_second(t, rng, T0, "canary", units=True)
    clumped_second(t, rng, T0, "control", units=False)
    t.release(np.array([T0]))
    covered = t.batch[0, 0, :, BATCH_UNIT_TIMED]
    assert covered[ARMS.index("canary")] == t.totals[0, 0, 0, 2]
    assert covered[ARMS.index("control")] == 0


def test_a_worker_counts_batches_with_an_answer_over_the_threshold() -> None:
    """Per cell: a batch with a timed answer counts once, and once over a threshold when one of
    its timed answers is over it (an answer's latency is the batch's time plus its own extra, so
    answers of one batch may differ); a batch whose answers in the cell all failed is not
    timed there."""
    b = EvidenceBuilder("served", source="w1")
    th = Thresholds(1, 5.0, 9.0)
    one = Cell("iris", "ro1", "v2", "canary", True, W, T0)
    two = Cell("iris", "ro1", "v2", "canary", True, W, T0 + 1)
    b.add_batch(
        [one, one, two, two], buckets=[1, 2, 3, 4], errors=[False, False, True, False],
        latencies_ms=[6.0, 10.0, 12.0, 2.0], batch_latency_ms=6.0, thresholds=[th] * 4,
    )  # fmt: skip
    b.add_batch(
        [one, two], buckets=[5, 6], errors=[False, True], latencies_ms=[1.0, 20.0],
        batch_latency_ms=1.0, thresholds=[th] * 2,
    )  # fmt: skip
    b.add_batch([one], buckets=[7], errors=[False], latencies_ms=[3.0], batch_latency_ms=3.0)
    evs = {(ev.second, ev.thresholds_revision): ev for ev in b.build(())}
    first, second = evs[(T0, 1)], evs[(T0 + 1, 1)]
    assert first.schema_version == 2
    assert (first.batches, first.batches_timed) == (2, 2)
    assert (first.batches_over_p95, first.batches_over_p99) == (1, 1)
    # Cell two: the first batch's answer there was fast (the slow one failed), the second
    # batch's only answer failed: two batches, one timed, none over.
    assert (second.batches, second.batches_timed, second.batches_over_p95) == (2, 1, 0)
    # Before the thresholds reached the worker nothing is timed.
    assert evs[(T0, -1)].batches_timed == 0
    # The records feed the tally as they are.
    t = Tally(1, control=True, warmup_s=0, weights=(W,))
    state = RolloutEvidence.new("iris", "ro1", t)
    offsets = (OffsetRange(topic="req.canary", partition=0, first=0, last=6),)
    for ev in (first, second):
        assert state.apply(dataclasses.replace(ev, offsets=offsets))
    pending = [it.batch for items in t._pending.values() for it in items]
    assert sorted(float(p[0, BATCHES_TIMED]) for p in pending if p is not None) == [1.0, 2.0]


def test_records_before_schema_version_2_are_compared_per_answer() -> None:
    """A version 1 record's ``batches_over_*`` compared the batch's own time, not its answers':
    the evaluator does not count them as batch units. Records written with the schema before
    ``batches_timed`` existed read as version 1."""
    v3 = json.loads((schema_dir() / "history" / "evidence.v3.avsc").read_text(encoding="utf-8"))
    assert "batches_timed" not in [f["name"] for f in v3["fields"]]
    datum = {
        "kind": "served", "model": "iris", "rollout_id": "ro1", "version": "v2",
        "arm": "canary", "second": T0, "source": "w", "offsets": [], "requests": 2,
        "batches": 1, "batches_over_p95": 1, "thresholds_revision": 1,
    }  # fmt: skip
    for f in v3["fields"]:
        datum.setdefault(f["name"], b"" if f["type"] == "bytes" else f.get("default"))
    old = codec_for(Evidence).decode(avro_message(v3, datum))
    assert (old.schema_version, old.batches_timed, old.batches_over_p95) == (1, 0, 1)
    b = EvidenceBuilder("served", source="w1")
    cell = Cell("iris", "ro1", "v2", "canary", True, W, T0)
    b.add_batch(
        [cell, cell], buckets=[1, 2], errors=[False, False], latencies_ms=[6.0, 6.0],
        batch_latency_ms=6.0, thresholds=[Thresholds(1, 5.0, 9.0)] * 2,
    )  # fmt: skip
    [new] = b.build((OffsetRange(topic="req.canary", partition=0, first=0, last=1),))
    assert new.batches_timed == 1
    for ev, expected in ((new, 1.0), (dataclasses.replace(new, schema_version=1), 0.0)):
        t = Tally(1, control=True, warmup_s=0, weights=(W,))
        assert RolloutEvidence.new("iris", "ro1", t).apply(ev)
        [[item]] = list(t._pending.values())
        assert item.batch is not None
        assert float(item.batch[0, BATCHES_TIMED]) == expected


def _rows_v1(rows: TallyRows) -> TallyRows:
    """``rows`` as version 1 wrote them: 8 batch fields per arm."""

    def first8(a: npt.NDArray[np.float64], per: int) -> npt.NDArray[np.float64]:
        shaped = np.asarray(a).reshape(a.shape[0], per, len(BATCH_FIELDS))
        return np.ascontiguousarray(shaped[..., :8].reshape(a.shape[0], per * 8))

    return dataclasses.replace(
        rows,
        version=1,
        batch=first8(rows.batch, len(ARMS)),
        pending_batch=first8(rows.pending_batch, 1),
    )


def test_tally_rows_of_version_1_restore_without_batch_units() -> None:
    t = Tally(1, control=True, warmup_s=0, weights=(W,))
    rng = np.random.default_rng(4)
    for s in range(3):
        clumped_second(t, rng, T0 + s, "canary", units=True)
        clumped_second(t, rng, T0 + s, "control", units=True)
    t.release(np.array([T0 + 1]))  # second T0 + 2 stays pending
    rows = t.to_rows()
    assert rows.version == 2
    again = from_rows(rows)
    assert np.array_equal(again.batch, t.batch)
    old = from_rows(_rows_v1(rows))
    assert np.array_equal(old.batch[..., :8], t.batch[..., :8])
    assert not old.batch[..., 8:].any()
    old.release(np.array([T0 + 2]))
    t.release(np.array([T0 + 2]))
    assert compare(t, "latency_p99", "control", (W,), unit="batch").unit == ("batch",)
    assert compare(old, "latency_p99", "control", (W,), unit="batch").unit == ("item",)
    with pytest.raises(Exception, match="version 3"):
        from_rows(dataclasses.replace(rows, version=3))


def test_a_stalled_worker_is_one_observation_not_forty() -> None:
    """On the real pipeline (session 20, A/A at 20%, load 20 on 2 cores) a worker starved of
    CPU made every batch of its arm slow for a while: 24 of 283 canary batches over the p95
    against 3 of 211, a rollback 18 s into the step when batches counted as independent.
    Batches of one arm in one routed second are one cluster: identical arms, the canary's
    worker stalled for 5 of 300 seconds, do not roll back (fails on 7e6cb78, whose batch-unit
    design effect had the buckets' part only)."""
    t = Tally(1, control=True, warmup_s=0, weights=(W,))
    rng = np.random.default_rng(6)
    for s in range(300):
        stalled = s in (40, 41, 42, 200, 201)
        clumped_second(t, rng, T0 + s, "canary", units=True, rate=1.0 if stalled else 0.02)
        clumped_second(t, rng, T0 + s, "control", units=True)
    t.release(np.array([T0 + 300]))
    t.refresh()
    comp = compare(t, "latency_p99", "control", (W,), unit="batch")
    assert comp.unit == ("batch",)
    alarm = math.log(1 / 0.05)

    def rollback(c: Comparison) -> float:
        return float(rollback_log_e(c, 0.0, ALARM_GRID, np.log([0.2] * 5), np.zeros(1))[0])

    independent = dataclasses.replace(comp, phi=np.ones_like(comp.phi))
    assert rollback(independent) > 3 * alarm, "as independent batches: a clear alarm"
    assert comp.phi[0, 0] > 5
    assert rollback(comp) < alarm
    # Without a stall the seconds add nothing: the design effect stays near 1.
    same = compare(identical_arms(units=True), "latency_p99", "control", (W,), unit="batch")
    assert same.phi[0, 0] < 1.5


def test_a_seconds_moments_do_not_depend_on_when_its_parts_are_released() -> None:
    """A part of a second folded after the rest (released early, or a restored evaluator's
    schedule) joins its second's cluster: the tally ends the same."""
    tallies = []
    for early in (False, True):
        t = Tally(1, control=True, warmup_s=0, weights=(W,))
        for s in range(3):
            for arm in ("canary", "control"):
                clumped_second(t, np.random.default_rng(s), T0 + s, arm, units=True, rate=0.3)
        if early:
            t.release(np.array([T0 + 2]))
        # A second part of second T0 + 1 for the canary.
        clumped_second(t, np.random.default_rng(9), T0 + 1, "canary", units=True, rate=0.3)
        t.release(np.array([T0 + 3]))
        tallies.append(t)
    assert np.array_equal(tallies[0].batch, tallies[1].batch)
    assert np.array_equal(from_rows(tallies[1].to_rows()).open_sums, tallies[1].open_sums)


@settings(max_examples=300, deadline=None)
@given(
    counts=st.lists(st.tuples(*(st.integers(0, 6) for _ in range(5))), min_size=1, max_size=4),
    batch_counts=st.tuples(*(st.integers(0, 8) for _ in range(3))),
)
def test_one_rows_batch_unit_check_is_the_many_rows_check(
    counts: list[tuple[int, int, int, int, int]], batch_counts: tuple[int, int, int]
) -> None:
    """The evaluator's one-row shortcut (:func:`tally._batch_unit_timed`) refuses what the
    vectorised check refuses and fills in the same covered timed answers."""
    from model_canary.streams.stats import tally as tally_mod
    from model_canary.streams.stats.layout import ERRORS, OVER_P95, OVER_P99, TIMED, N

    deltas = np.zeros((1, len(counts), 7), dtype=np.int64)
    for k, (n, e, t, p95, p99) in enumerate(counts):
        deltas[0, k, [N, ERRORS, TIMED, OVER_P95, OVER_P99]] = (n, e, t, p95, p99)
    moments = np.zeros((1, len(BATCH_FIELDS)))
    moments[0, BATCHES_TIMED : BATCHES_TIMED + 3] = batch_counts

    def outcome(m: npt.NDArray[np.float64], d: npt.NDArray[np.int64]) -> str | list[float]:
        try:
            tally_mod._check_batch_units(m, d)
        except ImpossibleEvidence as exc:
            return exc.reason
        got: list[float] = m[:, BATCH_UNIT_TIMED].tolist()
        return got

    one = outcome(moments.copy(), deltas)
    # Two replicas with the same row take the vectorised path.
    many = outcome(np.repeat(moments, 2, axis=0), np.repeat(deltas, 2, axis=0))
    if isinstance(one, str):
        assert one == many
    else:
        assert [one[0], one[0]] == many
