"""What a producer aggregates inside one Kafka transaction, and the evidence records it
publishes in that transaction.

One :class:`EvidenceBuilder` per producer loop: the router adds the buckets it routed per
batch, a worker adds each micro-batch it answered (or refused), the label joiner adds each
prediction joined with its label. At commit time, :meth:`EvidenceBuilder.build` turns the
transaction's cells into one :class:`~model_canary.streams.messages.Evidence` per cell,
carrying the input offsets the transaction consumed, and starts over. On an aborted
transaction the producer calls :meth:`EvidenceBuilder.clear`: the re-read input is
aggregated again.

>>> from model_canary.streams.messages import OffsetRange
>>> b = EvidenceBuilder("served", source="w1")
>>> cell = Cell("iris", "ro1", "v2", "canary", True, 100, 1_700_000_000)
>>> b.add_batch([cell, cell], buckets=[5, 9], errors=[False, True],
...             latencies_ms=[3.0, 3.0], batch_latency_ms=3.0)
>>> [ev] = b.build((OffsetRange(topic="t", partition=0, first=0, last=1),))
>>> ev.requests, ev.errors, ev.batches, ev.batch_items, ev.thresholds_revision
(2, 1, 1, 2, -1)
>>> b.build(()) == []
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from model_canary.streams.cohort import BUCKETS
from model_canary.streams.enums import Arm, EvidenceKind
from model_canary.streams.evidence.columns import (
    bucket_array,
    histogram,
    pack_dense_units,
    pack_histogram,
    pack_units,
)
from model_canary.streams.messages import Evidence, OffsetRange, OutcomeUnits


class Thresholds(NamedTuple):
    """Latency thresholds (ms) of a rollout, from its state at ``revision``."""

    revision: int
    p95: float
    p99: float


class Cell(NamedTuple):
    """The identity of an evidence record (less its kind and source): whose requests, routed
    when and where. ``version`` is empty for routed evidence."""

    model: str
    rollout_id: str
    version: str
    arm: str
    served: bool
    weight_bp: int
    second: int


@dataclass(slots=True)
class _Acc:
    """One cell's raw material within the transaction."""

    buckets: list[int] = field(default_factory=list)
    errors: list[bool] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    batch_latencies: list[float] = field(default_factory=list)
    batch_items: int = 0
    max_batch: int = 0
    refused: int = 0
    incorrect: list[bool] = field(default_factory=list)
    #: labelled: whether each joined item has a class label (counts for accuracy)
    labelled: list[bool] = field(default_factory=list)
    #: labelled: per outcome metric, (item index, bad) for the items its feedback counts for
    outcomes: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)
    thresholds: Thresholds | None = None
    #: Per-batch second moments: sum m^2, then (sum e^2, sum e*m) for errors, over p95, p99.
    m2: int = 0
    moments: list[int] = field(default_factory=lambda: [0] * 6)
    #: Batch-unit latency counts: batches with a timed item (thresholds known, no error),
    #: with one over p95, with one over p99.
    batch_units: list[int] = field(default_factory=lambda: [0] * 3)
    #: Routed requests per bucket folded from ``buckets`` (see :data:`FOLD_ROUTED`).
    routed: npt.NDArray[np.int64] | None = None


_STABLE = Arm.STABLE.value

#: Routed buckets kept as a list until this many, then counted per bucket (``np.bincount``
#: into a dense array): the router adds every request of a transaction (thousands under load),
#: and sorting them all at commit time cost more than the routing.
FOLD_ROUTED = 4096


class EvidenceBuilder:
    """Aggregates one transaction's cells of one evidence ``kind`` (see the module docstring)."""

    __slots__ = ("_cells", "fold_routed", "kind", "latency_unit", "source")

    def __init__(
        self,
        kind: str,
        *,
        source: str,
        latency_unit: str = "batch",
        fold_routed: int = FOLD_ROUTED,
    ) -> None:
        self.kind = EvidenceKind(kind)
        self.source = source
        self.latency_unit = latency_unit
        self.fold_routed = fold_routed
        # Keyed by cell and thresholds revision: a state change inside a transaction starts
        # new cells rather than mixing items compared with different thresholds.
        self._cells: dict[tuple[Cell, int], _Acc] = {}

    def __bool__(self) -> bool:
        return bool(self._cells)

    def _acc(self, cell: Cell, thresholds: Thresholds | None) -> _Acc:
        key = (cell, thresholds.revision if thresholds else -1)
        acc = self._cells.get(key)
        if acc is None:
            acc = self._cells[key] = _Acc(thresholds=thresholds)
        return acc

    # -- routed ----------------------------------------------------------------------------
    def add_routed(self, cell: Cell, buckets: Sequence[int]) -> None:
        """Requests routed to ``cell`` (one bucket per request). The record is the same
        however the requests were added (one call or many, folded into counts or not)."""
        if buckets:
            acc = self._acc(cell, None)
            acc.buckets.extend(buckets)
            if len(acc.buckets) >= self.fold_routed:
                _fold(acc)

    # -- served ----------------------------------------------------------------------------
    def add_batch(
        self,
        cells: Sequence[Cell],
        *,
        buckets: Sequence[int],
        errors: Sequence[bool],
        latencies_ms: Sequence[float],
        batch_latency_ms: float,
        thresholds: Sequence[Thresholds | None] | None = None,
    ) -> None:
        """One answered micro-batch: item ``i`` belongs to ``cells[i]``. Every cell the batch
        touched counts one batch of the batch's full size and latency, and the batch's
        second moments (m = its items in the cell, e = those that were bad)."""
        n = len(cells)
        # id(acc) -> [acc, m, errors, over p95, over p99] for this batch
        touched: dict[int, list[Any]] = {}
        for i in range(n):
            t = thresholds[i] if thresholds else None
            acc = self._acc(cells[i], t)
            latency = latencies_ms[i]
            acc.buckets.append(buckets[i])
            acc.errors.append(errors[i])
            acc.latencies.append(latency)
            per = touched.get(id(acc))
            if per is None:
                per = touched[id(acc)] = [acc, 0, 0, 0, 0, 0]
            per[1] += 1
            if errors[i]:
                per[2] += 1
            elif t is not None:
                per[3] += latency > t.p95
                per[4] += latency > t.p99
                per[5] += 1
        for acc, m, *bad, timed in touched.values():
            acc.batch_latencies.append(batch_latency_ms)
            acc.batch_items += n
            acc.max_batch = max(acc.max_batch, n)
            acc.m2 += m * m
            for j, e in enumerate(bad):
                acc.moments[2 * j] += e * e
                acc.moments[2 * j + 1] += e * m
            if timed:
                # The batch as a unit: timed in this cell, over a threshold if an answer is.
                acc.batch_units[0] += 1
                acc.batch_units[1] += bad[1] > 0
                acc.batch_units[2] += bad[2] > 0

    def add_refused(self, cell: Cell, count: int = 1) -> None:
        """Requests of ``cell`` the worker did not run (dead-lettered)."""
        self._acc(cell, None).refused += count

    # -- labelled --------------------------------------------------------------------------
    def add_label(
        self,
        cell: Cell,
        bucket: int,
        correct: bool | None,
        outcomes: Mapping[str, bool] | None = None,
    ) -> None:
        """A prediction of ``cell`` joined with its feedback: ``correct`` whether the
        feedback's label matches the prediction (None: the feedback has no label, it does not
        count for accuracy), ``outcomes`` per outcome metric whether it is bad (metrics it
        says nothing about left out: :func:`~model_canary.streams.outcomes.metrics.judge`)."""
        acc = self._acc(cell, None)
        i = len(acc.buckets)
        acc.buckets.append(bucket)
        acc.labelled.append(correct is not None)
        acc.incorrect.append(correct is False)
        for name, bad in (outcomes or {}).items():
            acc.outcomes.setdefault(name, []).append((i, bad))

    # -- output ----------------------------------------------------------------------------
    def clear(self) -> None:
        self._cells.clear()

    def build(self, offsets: tuple[OffsetRange, ...]) -> list[Evidence]:
        """One record per cell of the transaction, each citing ``offsets``; starts over.

        The records of one model and rollout are numbered ``part`` 1..``parts`` (the stable
        arm's, which the evaluator does not count, are left unnumbered), so the evaluator can
        apply the transaction's records together:

        >>> b = EvidenceBuilder("labelled", source="joiner-1")
        >>> for arm in ("canary", "baseline", "stable"):
        ...     b.add_label(Cell("iris", "ro1", "v", arm, True, 100, 1000), 7, True)
        >>> [(ev.arm.value, ev.part, ev.parts) for ev in b.build(())]
        [('canary', 1, 2), ('baseline', 2, 2), ('stable', 0, 0)]
        """
        parts: dict[tuple[str, str], int] = {}
        for cell, _ in self._cells:
            if cell.arm != _STABLE:
                key = (cell.model, cell.rollout_id)
                parts[key] = parts.get(key, 0) + 1
        numbered: dict[tuple[str, str], int] = {}
        out = []
        for (cell, _), acc in self._cells.items():
            part = 0
            if cell.arm != _STABLE:
                key = (cell.model, cell.rollout_id)
                part = numbered[key] = numbered.get(key, 0) + 1
            of = parts[(cell.model, cell.rollout_id)] if part else 0
            out.append(self._record(cell, acc, offsets, part, of))
        self._cells.clear()
        return out

    def _record(
        self, cell: Cell, acc: _Acc, offsets: tuple[OffsetRange, ...], part: int, parts: int
    ) -> Evidence:
        base = Evidence(
            kind=self.kind,
            model=cell.model,
            rollout_id=cell.rollout_id,
            version=cell.version,
            arm=Arm(cell.arm),
            served=cell.served,
            weight_bp=cell.weight_bp,
            second=cell.second,
            source=self.source,
            offsets=offsets,
            part=part,
            parts=parts,
        )
        if self.kind is EvidenceKind.ROUTED:
            # Counted per bucket however few they are: the rows pack_units would give (the
            # buckets touched, in order, with their counts), at a fraction of its sort.
            counts = _fold(acc)
            units = pack_dense_units("routed", {"n": counts})
            return replace(base, requests=int(counts.sum()), units=units)
        buckets = np.asarray(acc.buckets, dtype=np.int64)
        if self.kind is EvidenceKind.LABELLED:
            incorrect = np.asarray(acc.incorrect, dtype=np.int64)
            labelled = np.asarray(acc.labelled, dtype=np.int64)
            units = pack_units("labelled", buckets, labelled=labelled, incorrect=incorrect)
            outcomes = []
            for name, judged in sorted(acc.outcomes.items()):
                at = np.array([i for i, _ in judged], dtype=np.int64)
                bad = np.array([b for _, b in judged], dtype=np.int64)
                rows = pack_units(
                    "outcome", buckets[at], counted=np.ones(at.size, np.int64), bad=bad
                )
                outcomes.append(
                    OutcomeUnits(metric=name, counted=int(at.size), bad=int(bad.sum()), units=rows)
                )
            return replace(
                base,
                requests=int(buckets.size),
                labelled=int(labelled.sum()),
                incorrect=int(incorrect.sum()),
                units=units,
                outcomes=tuple(outcomes),
            )
        return self._served(base, acc, buckets)

    def _served(self, base: Evidence, acc: _Acc, buckets: np.ndarray) -> Evidence:
        errors = np.asarray(acc.errors, dtype=bool)
        latencies = np.asarray(acc.latencies, dtype=np.float64)
        ok = ~errors
        t = acc.thresholds
        over95 = over99 = np.zeros(buckets.size, dtype=np.int64)
        if t is not None:
            over95 = (ok & (latencies > t.p95)).astype(np.int64)
            over99 = (ok & (latencies > t.p99)).astype(np.int64)
        units = pack_units(
            "served",
            buckets,
            n=np.ones(buckets.size, np.int64),
            errors=errors.astype(np.int64),
            over_p95=over95,
            over_p99=over99,
        )
        return replace(
            base,
            requests=int(buckets.size),
            errors=int(errors.sum()),
            refused=acc.refused,
            batches=len(acc.batch_latencies),
            batch_items=acc.batch_items,
            max_batch=acc.max_batch,
            latency_unit=self.latency_unit,
            latency_hist=pack_histogram(histogram(latencies[ok])) if buckets.size else b"",
            batch_latency_hist=(
                pack_histogram(histogram(acc.batch_latencies)) if acc.batch_latencies else b""
            ),
            thresholds_revision=t.revision if t is not None else -1,
            batches_timed=acc.batch_units[0],
            batches_over_p95=acc.batch_units[1],
            batches_over_p99=acc.batch_units[2],
            batch_m2=acc.m2,
            batch_e2_errors=acc.moments[0],
            batch_em_errors=acc.moments[1],
            batch_e2_over_p95=acc.moments[2],
            batch_em_over_p95=acc.moments[3],
            batch_e2_over_p99=acc.moments[4],
            batch_em_over_p99=acc.moments[5],
            units=units,
        )


def _fold(acc: _Acc) -> npt.NDArray[np.int64]:
    """``acc.buckets`` counted into ``acc.routed`` (requests per bucket); returns it."""
    buckets = np.fromiter(acc.buckets, dtype=np.int64, count=len(acc.buckets))
    counts = np.bincount(bucket_array(buckets), minlength=BUCKETS)
    acc.routed = counts if acc.routed is None else acc.routed + counts
    acc.buckets = []
    return acc.routed
