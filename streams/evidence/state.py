"""The evaluator's state for one rollout: every evidence record applied exactly once, which
routed seconds are complete, and the tally the statistics read.

* **Idempotent.** Every record names the input offsets its producing transaction consumed.
  Per input partition (and evidence kind) the state remembers the last transaction's range
  and the cells of it already applied, so :meth:`RolloutEvidence.apply` returns ``False`` and
  changes nothing for a record it counted before, however often the evidence topic is re-read
  (after a restart, or when a consumer's committed offset lags behind what it processed).
  Exactly-once agents cite ranges that follow each other; an at-least-once agent restarted
  between writing its evidence and committing its offsets cites part of a range again: the
  overlap is counted twice (at-least-once), never dropped with what follows it.
* **Complete seconds.** Per routed second and arm, the state compares the requests the router
  routed with those the workers answered (served + refused), with
  :class:`~model_canary.streams.stats.watermark.Completeness` (the same code ``canary sim``
  runs). A second is *closed* once every
  router that routed recently has routed a later second (its routing time only moves on), or
  in any case once it ended :data:`CLOSE_MS` ago; the *watermark* is the newest closed second
  up to which every arm is complete. :meth:`RolloutEvidence.settle` releases
  the tally's data up to the watermark: a lagging arm is waited for however long it lags, an
  idle arm (nothing routed to it) is complete at once.
* **The tally** (:class:`~model_canary.streams.stats.tally.Tally`) holds what the statistics
  need (per weight at routing, per arm, per cohort bucket, and the baseline's latency
  histogram until the thresholds are fixed); it is fed on each new record and released by the
  watermark. A record the tally finds impossible (counts that cannot be true, a bucket outside
  its arm) raises :class:`EvidenceError` and changes nothing.
* **Snapshots.** :meth:`RolloutEvidence.to_bytes` / :meth:`RolloutEvidence.from_bytes`
  restore the whole state in milliseconds, whatever the rollout's history.

>>> from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
>>> from model_canary.streams.messages import OffsetRange
>>> from model_canary.streams.stats.tally import Tally
>>> state = RolloutEvidence.new("iris", "ro1", Tally(1, control=False, warmup_s=0))
>>> routed = EvidenceBuilder("routed", source="router-1")
>>> routed.add_routed(Cell("iris", "ro1", "", "canary", True, 100, 1000), [7, 7])
>>> [r] = routed.build((OffsetRange(topic="req", partition=0, first=0, last=1),))
>>> state.apply(r), state.apply(r)  # the second time is a duplicate
(True, False)
>>> served = EvidenceBuilder("served", source="worker-1")
>>> cell = Cell("iris", "ro1", "v2", "canary", True, 100, 1000)
>>> served.add_batch([cell], buckets=[7], errors=[True], latencies_ms=[2.0], batch_latency_ms=2.0)
>>> [s] = served.build((OffsetRange(topic="req.v2", partition=0, first=0, last=0),))
>>> state.apply(s), state.settle(now_ms=1_003_000)  # 1 of 2 answered: not complete
(True, 999)
>>> served.add_batch([cell], buckets=[7], errors=[False], latencies_ms=[2.0], batch_latency_ms=2.0)
>>> [s] = served.build((OffsetRange(topic="req.v2", partition=0, first=1, last=1),))
>>> state.apply(s), state.settle(now_ms=1_003_000)
(True, 1000)
>>> int(state.tally.totals[0, 0, 0, 0]), int(state.tally.totals[0, 0, 0, 1])  # canary n, errors
(2, 1)
>>> int(RolloutEvidence.from_bytes(state.to_bytes()).tally.totals[0, 0, 0, 0])
2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_canary.streams.enums import Arm, EvidenceKind
from model_canary.streams.errors import EvidenceError
from model_canary.streams.evidence import snapshot
from model_canary.streams.evidence.columns import (
    BatchSums,
    Ints,
    check_histogram,
    unpack_histogram,
    unpack_units,
)
from model_canary.streams.messages import Evidence
from model_canary.streams.stats.layout import ARMS
from model_canary.streams.stats.tally import ImpossibleEvidence, Tally, TallyRows
from model_canary.streams.stats.watermark import Completeness

STATE_VERSION = 2
#: A routed second is closed this long after it ends: by then the router has committed the
#: routed evidence of every request it routed in that second.
CLOSE_MS = 1_500
#: A router that routed nothing for this long (s) no longer holds seconds open.
ROUTER_IDLE_S = 3


@dataclass
class SecondStatus:
    """One routed second: per arm, requests routed and answered (served + refused) (the
    snapshot form of the state's :class:`Completeness`)."""

    version: int = 1
    routed: dict[str, int] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)

    def missing(self) -> dict[str, int]:
        """Per arm, requests routed and not yet answered."""
        return {
            arm: n - self.answered.get(arm, 0)
            for arm, n in self.routed.items()
            if self.answered.get(arm, 0) < n
        }


@dataclass
class Applied:
    """The last transaction applied from one input partition: its offset range and the
    cells of it already counted."""

    version: int = 1
    first: int = -1
    last: int = -1
    cells: set[str] = field(default_factory=set)


class FrozenState:
    """A :class:`RolloutEvidence` copied by :meth:`RolloutEvidence.freeze`, not serialized
    yet."""

    __slots__ = ("_doc",)

    def __init__(self, doc: dict[str, Any]) -> None:
        self._doc = doc

    def to_bytes(self) -> bytes:
        """The snapshot :meth:`RolloutEvidence.from_bytes` reads."""
        return snapshot.dump(self._doc)


@dataclass(frozen=True, slots=True)
class Lag:
    """An arm whose answers are missing for closed seconds: the oldest such second, how many
    seconds, how many requests."""

    arm: str
    oldest_second: int
    seconds: int
    missing: int


@dataclass
class RolloutEvidence:
    """One rollout's evidence (see the module docstring)."""

    model: str
    rollout_id: str
    tally: Tally
    version: int = STATE_VERSION
    #: ``"kind|topic|partition"`` -> the last transaction applied from that input.
    applied: dict[str, Applied] = field(default_factory=dict)
    watermark: int = -1
    #: Per arm, everything counted so far: requests routed, answered (served + refused),
    #: errors, labelled (for the exported gauges; the tests read the tally).
    counted: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Evidence-topic offsets of the records applied, per partition: ``[first, last]``.
    evidence_offsets: dict[int, list[int]] = field(default_factory=dict)
    records: int = 0
    duplicates: int = 0
    first_second: int = -1
    last_second: int = -1
    #: Newest routed second seen from each router (source of routed evidence).
    routers: dict[str, int] = field(default_factory=dict)
    #: Routed and answered requests per arm of the routed seconds after the watermark.
    completeness: Completeness = field(
        default_factory=lambda: Completeness(1, origin=None), repr=False, compare=False
    )
    #: The closed second of the last :meth:`settle` that looked at the counts, or None once
    #: a record changed a count of a second it had looked at (then the next one looks again).
    _settled_closed: int | None = field(default=None, repr=False, compare=False)

    @classmethod
    def new(cls, model: str, rollout_id: str, tally: Tally) -> RolloutEvidence:
        """An empty state feeding ``tally`` (laid out for the rollout's plan:
        :func:`~model_canary.streams.stats.snapshot.tally_for`)."""
        return cls(model=model, rollout_id=rollout_id, tally=tally)

    # -- applying --------------------------------------------------------------------------
    def apply(self, ev: Evidence, *, partition: int = -1, offset: int = -1) -> bool:
        """Count ``ev`` (read at ``offset`` of evidence partition ``partition``, for the audit
        trail) unless it was counted before; returns whether it was counted.

        :class:`EvidenceError` (a ``ValueError``) for a record of another rollout, for the
        stable arm, with unreadable columns or with counts that cannot be true; nothing
        changes then."""
        if ev.model != self.model or ev.rollout_id != self.rollout_id:
            raise EvidenceError(
                f"evidence of {ev.model}/{ev.rollout_id} applied to {self.model}/{self.rollout_id}"
            )
        if ev.arm is Arm.STABLE:
            raise EvidenceError("evidence for the stable arm carries nothing to compare")
        marks = self._marks(ev)
        if marks is None:
            self.duplicates += 1
            return False
        feed = self._unpack(ev)  # raises before anything changes
        try:
            feed()  # the tally checks before it counts
        except ImpossibleEvidence as exc:
            raise EvidenceError(f"{exc.reason}: {exc}") from None
        self._count(ev)
        for key, span, cell in marks:
            mark = self.applied.get(key)
            if mark is None or (mark.first, mark.last) != span:
                mark = self.applied[key] = Applied(first=span[0], last=span[1])
            mark.cells.add(cell)
        if partition >= 0 and offset >= 0:
            got = self.evidence_offsets.setdefault(partition, [offset, offset])
            got[0], got[1] = min(got[0], offset), max(got[1], offset)
        self.records += 1
        if self.first_second < 0 or ev.second < self.first_second:
            self.first_second = ev.second
        self.last_second = max(self.last_second, ev.second)
        return True

    def _marks(self, ev: Evidence) -> list[tuple[str, tuple[int, int], str]] | None:
        """Where ``ev`` will be remembered, or None when it was applied before."""
        cell = (
            f"{ev.version}|{ev.arm.value}|{int(ev.served)}|{ev.weight_bp}|{ev.second}|"
            f"{ev.thresholds_revision}"
        )
        marks = []
        kind = ev.kind.value
        for r in ev.offsets:
            key = f"{kind}|{r.topic}|{r.partition}"
            mark = self.applied.get(key)
            if mark is not None:
                if (r.first, r.last) == (mark.first, mark.last):
                    if cell in mark.cells:
                        return None  # this cell of this transaction was counted
                elif r.last <= mark.last:
                    return None  # an earlier transaction's range
                # Else a later range; one overlapping the last (``r.first <= mark.last``) comes
                # only from an at-least-once agent restarted after its evidence was written and
                # before its offsets were committed: counted, overlap and all, since dropping it
                # would lose the inputs after the overlap (and hold the watermark forever).
            marks.append((key, (r.first, r.last), cell))
        return marks

    def _unpack(self, ev: Evidence) -> Any:
        """Check and unpack ``ev``'s columns; returns the function that counts it."""
        second, weight, arm = ev.second, ev.weight_bp, ev.arm.value
        if ev.kind is EvidenceKind.ROUTED:
            rows = unpack_units("routed", ev.units)  # checked; the tally reads no routed row
            b, n = rows["bucket"], rows["n"]

            def routed() -> None:
                self.tally.add_routed(second, weight, arm, b, n)
                self.routers[ev.source] = max(self.routers.get(ev.source, second), second)
                if second > self.watermark:
                    self.completeness.add_routed(second, arm, [ev.requests])
                    self._touched(second)

            return routed
        if ev.kind is EvidenceKind.LABELLED:
            rows = unpack_units("labelled", ev.units)
            b, lab, bad = _col(rows, "bucket"), _col(rows, "labelled"), _col(rows, "incorrect")
            outcomes = _outcome_columns(ev, b)
            return lambda: self.tally.add_labelled(
                second, weight, arm, b, lab, bad, outcomes=outcomes
            )
        rows = unpack_units("served", ev.units)
        timed = ev.thresholds_revision >= 0
        # The histogram counts only for answers not timed against thresholds (below); any
        # other is only checked, like the batch latency histogram.
        hist = None
        if ev.latency_hist and not timed and ev.served:
            hist = unpack_histogram(ev.latency_hist)
        elif ev.latency_hist:
            check_histogram(ev.latency_hist)
        hist_bins = np.flatnonzero(hist) if hist is not None else np.zeros(0, dtype=np.int64)
        if ev.batch_latency_hist:
            check_histogram(ev.batch_latency_hist)
        b, n, errors = _col(rows, "bucket"), _col(rows, "n"), _col(rows, "errors")
        if timed:
            over95, over99 = _col(rows, "over_p95"), _col(rows, "over_p99")
        else:
            over95 = over99 = np.zeros(rows.size, dtype=np.int64)
        # Batch-unit latency counts: from producers that time answers per batch, in records
        # of schema version 2 on (version 1's batches_over_* compared the batch's own time,
        # not its answers'); any other cell is compared per item.
        units = ev.schema_version >= 2 and ev.latency_unit == "batch" and timed
        batch = BatchSums(
            batches=ev.batches,
            batch_items=ev.batch_items,
            max_batch=ev.max_batch,
            batches_timed=ev.batches_timed if units else 0,
            batches_over_p95=ev.batches_over_p95 if units else 0,
            batches_over_p99=ev.batches_over_p99 if units else 0,
            m2=ev.batch_m2,
            e2_errors=ev.batch_e2_errors,
            em_errors=ev.batch_em_errors,
            e2_over_p95=ev.batch_e2_over_p95,
            em_over_p95=ev.batch_em_over_p95,
            e2_over_p99=ev.batch_e2_over_p99,
            em_over_p99=ev.batch_em_over_p99,
        )

        def served() -> None:
            self.tally.add_served(second, weight, arm, b, n, errors, over95, over99, batch, timed)
            if hist is not None and hist_bins.size and not timed and ev.served:
                # Answers measured before the thresholds were known: the baseline's (and
                # control's) fix the thresholds (the tally pools those arms only).
                self.tally.add_latency_hist(
                    arm, bins=hist_bins[None, :], counts=hist[hist_bins][None, :]
                )
            if second > self.watermark:
                self.completeness.add_done(second, arm, [ev.requests + ev.refused])
                self._touched(second)

        return served

    # -- completeness ----------------------------------------------------------------------
    def closed_upto(self, now_ms: int) -> int:
        """The newest routed second no router will route more requests in: every router
        active in the last :data:`ROUTER_IDLE_S` seconds has moved past it (or the clock
        has, by :data:`CLOSE_MS`)."""
        clock = closed_upto(now_ms)
        recent = [s for s in self.routers.values() if s >= now_ms // 1000 - ROUTER_IDLE_S]
        return max(clock, min(recent) - 1) if recent else clock

    def complete_upto(self, now_ms: int) -> tuple[dict[str, int], int]:
        """``(per arm, the newest second up to which its answers are complete; the newest
        closed second)``."""
        closed = self.closed_upto(now_ms)
        upto = self.completeness.complete_upto(closed + 1)[0]
        return {arm: int(upto[a]) for a, arm in enumerate(ARMS)}, closed

    def _touched(self, second: int) -> None:
        """A count of routed ``second`` changed: a settle that looked at it looks again."""
        if self._settled_closed is not None and second <= self._settled_closed:
            self._settled_closed = None

    def settle(self, now_ms: int) -> int:
        """Move the watermark as far as every arm is complete and release the tally up to
        it; returns the watermark (-1 before anything was released).

        The watermark depends only on the closed second and the counts of seconds up to it:
        while neither changed since the last settle (records of the open seconds, the
        common case, or none), the watermark is the one that settle found, and the counts
        are not looked at again."""
        closed = self.closed_upto(now_ms)
        if closed == self._settled_closed:
            return self.watermark
        self._settled_closed = closed
        watermark = int(self.completeness.watermark(closed + 1)[0])
        if watermark > self.watermark:
            self.watermark = watermark
            self.tally.release(watermark)
            self.completeness.trim(watermark)
        return self.watermark

    def lagging(self, now_ms: int) -> list[Lag]:
        """Arms whose answers for closed seconds are incomplete, oldest first."""
        return [Lag(*gap) for gap in self.completeness.gaps(self.closed_upto(now_ms))]

    @property
    def seconds(self) -> dict[int, SecondStatus]:
        """Routed seconds after the watermark with any routed or answered requests."""
        out = {}
        for second, (routed, done) in self.completeness.counts().items():
            out[second] = SecondStatus(
                routed={arm: int(routed[a]) for a, arm in enumerate(ARMS) if routed[a]},
                answered={arm: int(done[a]) for a, arm in enumerate(ARMS) if done[a]},
            )
        return out

    # -- snapshots -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The whole state, compressed (see :meth:`from_bytes`)."""
        return self.freeze().to_bytes()

    def freeze(self) -> FrozenState:
        """A copy of the whole state that later changes do not reach, to serialize
        (:meth:`FrozenState.to_bytes`, the costly part) away from the thread that applies
        evidence: copying takes milliseconds, compressing a large tally much longer.

        >>> from model_canary.streams.stats.tally import Tally
        >>> state = RolloutEvidence.new("iris", "ro1", Tally(1, control=False, warmup_s=0))
        >>> frozen = state.freeze()
        >>> state.routers["router-1"] = 1000
        >>> RolloutEvidence.from_bytes(frozen.to_bytes()).routers
        {}
        """
        fields = StateFields(
            model=self.model,
            rollout_id=self.rollout_id,
            version=self.version,
            applied={
                k: Applied(first=a.first, last=a.last, cells=set(a.cells))
                for k, a in self.applied.items()
            },
            seconds=self.seconds,  # built afresh
            watermark=self.watermark,
            counted={arm: dict(c) for arm, c in self.counted.items()},
            evidence_offsets={p: list(r) for p, r in self.evidence_offsets.items()},
            records=self.records,
            duplicates=self.duplicates,
            first_second=self.first_second,
            last_second=self.last_second,
            routers=dict(self.routers),
        )
        # TallyRows are copies (to_rows copies every array).
        return FrozenState(
            {"version": self.version, "state": fields, "tally": self.tally.to_rows()}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RolloutEvidence:
        """The state :meth:`to_bytes` wrote; :class:`ValueError` for anything else."""
        doc = snapshot.load(data, _TYPES)
        if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
            raise snapshot.SnapshotError("not a rollout evidence snapshot of this version")
        fields = doc["state"]
        if not isinstance(fields, StateFields):
            raise snapshot.SnapshotError("not a rollout evidence snapshot")
        try:
            tally = doc["tally"]
            if not isinstance(tally, TallyRows):
                raise snapshot.SnapshotError("a rollout evidence snapshot without its tally")
            kept = {k: v for k, v in vars(fields).items() if k != "seconds"}
            state = cls(tally=Tally.from_rows(tally), **kept)
            for second, status in sorted(fields.seconds.items()):
                if not isinstance(status, SecondStatus):
                    raise snapshot.SnapshotError("a rollout evidence snapshot with a bad second")
                for arm, n in status.routed.items():
                    state.completeness.add_routed(second, arm, [n])
                for arm, n in status.answered.items():
                    state.completeness.add_done(second, arm, [n])
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, snapshot.SnapshotError):
                raise
            raise snapshot.SnapshotError(f"rollout evidence snapshot: {exc}") from None
        return state

    # -- reading ---------------------------------------------------------------------------
    def _count(self, ev: Evidence) -> None:
        acc = self.counted.get(ev.arm.value)
        if acc is None:
            acc = self.counted[ev.arm.value] = dict.fromkeys(_TOTALS, 0)
        if ev.kind is EvidenceKind.ROUTED:
            acc["routed"] += ev.requests
        elif ev.kind is EvidenceKind.LABELLED:
            acc["labelled"] += ev.labelled
        else:
            acc["answered"] += ev.requests + ev.refused
            acc["errors"] += ev.errors

    def totals(self) -> dict[str, dict[str, int]]:
        """Per arm, requests routed, answered (served + refused), errors and labels: all
        counted so far, released or not (for the exported gauges)."""
        return {arm: dict(t) for arm, t in self.counted.items()}


def closed_upto(now_ms: int) -> int:
    """The newest routed second that is closed at ``now_ms``.

    >>> closed_upto(1_002_499), closed_upto(1_002_500)
    (999, 1000)
    """
    return (now_ms - CLOSE_MS) // 1000 - 1


def _outcome_columns(ev: Evidence, buckets: Ints) -> dict[str, tuple[Ints, Ints]]:
    """A labelled record's outcome metrics as columns over its labelled rows' ``buckets``
    (every joined item has a labelled row, with or without a class label)."""
    out: dict[str, tuple[Ints, Ints]] = {}
    for o in ev.outcomes:
        if o.metric in out:
            raise EvidenceError(f"outcome metric {o.metric!r} appears twice in one record")
        rows = unpack_units("outcome", o.units)
        ob = _col(rows, "bucket")
        at = np.searchsorted(buckets, ob)
        if np.any(at >= buckets.size) or np.any(buckets[np.minimum(at, buckets.size - 1)] != ob):
            raise EvidenceError(f"outcome metric {o.metric!r} names a bucket no item joined in")
        counted, bad = np.zeros_like(buckets), np.zeros_like(buckets)
        counted[at], bad[at] = _col(rows, "counted"), _col(rows, "bad")
        if int(counted.sum()) != o.counted or int(bad.sum()) != o.bad:
            raise EvidenceError(f"outcome metric {o.metric!r}: rows and totals disagree")
        out[o.metric] = (counted, bad)
    return out


def _col(rows: Any, name: str) -> Ints:
    return np.asarray(rows[name], dtype=np.int64)


_TOTALS = ("routed", "answered", "errors", "labelled")
_STATE_FIELDS = (
    "model",
    "rollout_id",
    "version",
    "applied",
    "seconds",
    "watermark",
    "counted",
    "evidence_offsets",
    "records",
    "duplicates",
    "first_second",
    "last_second",
    "routers",
)


@dataclass
class StateFields:
    """Snapshot form of :class:`RolloutEvidence` less its tally."""

    model: str
    rollout_id: str
    version: int
    applied: dict[str, Applied]
    seconds: dict[int, SecondStatus]
    watermark: int
    counted: dict[str, dict[str, int]]
    evidence_offsets: dict[int, list[int]]
    records: int
    duplicates: int
    first_second: int
    last_second: int
    routers: dict[str, int]


_TYPES = (StateFields, Applied, SecondStatus, TallyRows)
