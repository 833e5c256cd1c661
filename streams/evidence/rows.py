"""Interim tally: per (weight at routing, arm) rows of the evidence a rollout released, for
the current decision rule's :class:`~model_canary.streams.stats.StepSnapshot`.

It implements the calls :class:`~model_canary.streams.evidence.state.RolloutEvidence` makes
on its tally (``add_served``, ``add_labelled``, ``add_routed``, ``release``, ``to_rows``,
``from_rows``). Served data is held per routed second until released by the watermark (both
arms complete); data for a second already released counts at once; labels and routing count
at once. Seconds in the warm-up after a weight first appears go to rows without units. The
statistics helper's tally (issue #12) replaces this module.

>>> import numpy as np
>>> rows = EvidenceRows()
>>> one = np.array([1])
>>> rows.add_served(1000, 100, "canary", np.array([7]), one, one, 0 * one, 0 * one,
...                 BatchSums(batches=1, batch_items=1, max_batch=1), timed=False)
>>> (100, "canary") in rows.served
False
>>> rows.release(1000)
>>> rows.served[(100, "canary")].errors, int(rows.served[(100, "canary")].units["n"][7])
(1, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model_canary.streams.cohort import BUCKETS
from model_canary.streams.errors import EvidenceError
from model_canary.streams.evidence.columns import BatchSums, Ints


def _zeros() -> Ints:
    return np.zeros(BUCKETS, dtype=np.int64)


@dataclass
class ServedRow:
    """Answered requests of one (weight, arm). ``timed`` counts answers without error that
    carry latency evidence; ``over_p95``/``over_p99`` are among them; ``timed_batch`` sums
    the batch figures of those cells. ``units``: per-bucket ``n``, ``errors``, ``timed``,
    ``over_p95``, ``over_p99`` (None in warm-up rows)."""

    version: int = 1
    requests: int = 0
    errors: int = 0
    timed: int = 0
    over_p95: int = 0
    over_p99: int = 0
    batch: BatchSums = field(default_factory=BatchSums)
    timed_batch: BatchSums = field(default_factory=BatchSums)
    units: dict[str, Ints] | None = None


@dataclass
class LabelRow:
    """Labelled predictions of one (weight, arm); per-bucket ``labelled``, ``incorrect``."""

    version: int = 1
    labelled: int = 0
    incorrect: int = 0
    units: dict[str, Ints] | None = None


@dataclass
class RoutedRow:
    """Requests routed to one (weight, arm); per-bucket ``n``."""

    version: int = 1
    requests: int = 0
    units: dict[str, Ints] | None = None


@dataclass
class HeldServed:
    """Served data of one cell waiting for its second to be released."""

    version: int
    weight_bp: int
    arm: str
    buckets: Ints
    n: Ints
    errors: Ints
    over_p95: Ints
    over_p99: Ints
    batch: BatchSums
    timed: bool


RowKey = tuple[int, str]


@dataclass
class EvidenceRows:
    """The interim tally (see the module docstring)."""

    version: int = 1
    warmup_s: float = 0.0
    served: dict[RowKey, ServedRow] = field(default_factory=dict)
    labels: dict[RowKey, LabelRow] = field(default_factory=dict)
    routed: dict[RowKey, RoutedRow] = field(default_factory=dict)
    warmup_served: dict[RowKey, ServedRow] = field(default_factory=dict)
    warmup_labels: dict[RowKey, LabelRow] = field(default_factory=dict)
    warmup_routed: dict[RowKey, RoutedRow] = field(default_factory=dict)
    #: First routed second seen at each weight: its warm-up starts there.
    first_second: dict[int, int] = field(default_factory=dict)
    held: dict[int, list[HeldServed]] = field(default_factory=dict)
    released: int = -1

    # -- the tally calls -------------------------------------------------------------------
    def add_served(
        self,
        second: int,
        weight_bp: int,
        arm: str,
        buckets: Ints,
        n: Ints,
        errors: Ints,
        over_p95: Ints,
        over_p99: Ints,
        batch: BatchSums,
        timed: bool,
    ) -> None:
        self._seen(weight_bp, second)
        part = HeldServed(1, weight_bp, arm, buckets, n, errors, over_p95, over_p99, batch, timed)
        if second <= self.released:
            self._fold(second, part)
        else:
            self.held.setdefault(second, []).append(part)

    def add_labelled(
        self, second: int, weight_bp: int, arm: str, buckets: Ints, labelled: Ints, incorrect: Ints
    ) -> None:
        self._seen(weight_bp, second)
        warm = self._warm(weight_bp, second)
        rows = self.warmup_labels if warm else self.labels
        row = rows.get((weight_bp, arm))
        if row is None:
            units = None if warm else {"labelled": _zeros(), "incorrect": _zeros()}
            row = rows[(weight_bp, arm)] = LabelRow(units=units)
        row.labelled += int(labelled.sum())
        row.incorrect += int(incorrect.sum())
        if row.units is not None:
            np.add.at(row.units["labelled"], buckets, labelled)
            np.add.at(row.units["incorrect"], buckets, incorrect)

    def add_routed(self, second: int, weight_bp: int, arm: str, buckets: Ints, n: Ints) -> None:
        self._seen(weight_bp, second)
        warm = self._warm(weight_bp, second)
        rows = self.warmup_routed if warm else self.routed
        row = rows.get((weight_bp, arm))
        if row is None:
            row = rows[(weight_bp, arm)] = RoutedRow(units=None if warm else {"n": _zeros()})
        row.requests += int(n.sum())
        if row.units is not None:
            np.add.at(row.units["n"], buckets, n)

    def release(self, watermark: int) -> None:
        """Fold the held seconds up to ``watermark`` (inclusive)."""
        if watermark <= self.released:
            return
        for second in sorted(s for s in self.held if s <= watermark):
            for part in self.held.pop(second):
                self._fold(second, part)
        self.released = watermark

    def to_rows(self) -> EvidenceRows:
        return self

    @classmethod
    def from_rows(cls, rows: object) -> EvidenceRows:
        if not isinstance(rows, cls):
            raise EvidenceError(f"not {cls.__name__} rows: {type(rows).__name__}")
        return rows

    # -- reading ---------------------------------------------------------------------------
    def held_requests(self) -> dict[str, int]:
        """Per arm, answered requests not released yet."""
        out: dict[str, int] = {}
        for parts in self.held.values():
            for p in parts:
                out[p.arm] = out.get(p.arm, 0) + int(p.n.sum())
        return out

    # -- internals -------------------------------------------------------------------------
    def _seen(self, weight_bp: int, second: int) -> None:
        first = self.first_second.get(weight_bp)
        if first is None or second < first:
            self.first_second[weight_bp] = second

    def _warm(self, weight_bp: int, second: int) -> bool:
        return second < self.first_second.get(weight_bp, second) + self.warmup_s

    def _fold(self, second: int, p: HeldServed) -> None:
        warm = self._warm(p.weight_bp, second)
        rows = self.warmup_served if warm else self.served
        row = rows.get((p.weight_bp, p.arm))
        if row is None:
            units = None if warm else {c: _zeros() for c in _SERVED_UNITS}
            row = rows[(p.weight_bp, p.arm)] = ServedRow(units=units)
        n, errors = int(p.n.sum()), int(p.errors.sum())
        row.requests += n
        row.errors += errors
        row.batch.merge(p.batch)
        if p.timed:
            row.timed += n - errors
            row.over_p95 += int(p.over_p95.sum())
            row.over_p99 += int(p.over_p99.sum())
            row.timed_batch.merge(p.batch)
        if row.units is not None:
            u = row.units
            np.add.at(u["n"], p.buckets, p.n)
            np.add.at(u["errors"], p.buckets, p.errors)
            if p.timed:
                np.add.at(u["timed"], p.buckets, p.n - p.errors)
                np.add.at(u["over_p95"], p.buckets, p.over_p95)
                np.add.at(u["over_p99"], p.buckets, p.over_p99)


_SERVED_UNITS = ("n", "errors", "timed", "over_p95", "over_p99")
ROW_TYPES: tuple[type, ...] = (
    EvidenceRows,
    ServedRow,
    LabelRow,
    RoutedRow,
    HeldServed,
    BatchSums,
)
