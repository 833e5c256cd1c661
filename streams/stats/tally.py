"""The statistics half of the evaluator's state: cumulative per-bucket evidence of a rollout.

Evidence arrives per (arm, weight at routing, routed second); the tally keeps each routed
second *pending* until :meth:`Tally.release` is told that every arm's results for it are
complete (the watermark), and only then folds it into what the tests read. A lagging arm
therefore never biases a comparison: the tests see the same seconds of every arm, however
long one of them lags. Data routed within ``warmup_s`` of the first second at a weight is
dropped (a new weight brings new load, batch sizes and cold workers).

What is kept, never pooled across weights (a weight is a stratum):

* per bucket (the unit of randomisation), per weight: the :data:`~.layout.FIELDS` counters;
* per (weight, arm): the same counters summed, and the batch second moments
  (:data:`~.layout.BATCH_FIELDS`) that measure micro-batch clustering;
* per group of buckets that share an arm at every weight: the Gram matrix ``sum x x^T`` of the
  buckets' counter vectors ``x`` (all fields at all weights). Any cluster-robust variance of a
  linear statistic of the buckets is a quadratic form of these matrices, so a decision costs
  the same whatever the number of buckets, and a bucket that stays in the canary across
  weights (a sticky user) is counted with its covariance across them.

Every array has a leading **replica** axis: the evaluator keeps one rollout per tally
(``replicas=1``), ``canary sim`` runs thousands of rollouts through the same code at once.

>>> t = Tally(1, control=False, warmup_s=0)
>>> t.add_served(5, 2000, "canary", buckets=[[3, 7]], n=[[2, 1]], errors=[[1, 0]])
>>> t.totals[0, 0, 0, 0], t.pending_seconds()  # nothing counted until second 5 is complete
(np.int64(0), [5])
>>> t.release(np.array([5]))
>>> int(t.totals[0, 0, 0, 0]), int(t.units[0, 3, 0, 1])  # canary items; errors in bucket 3
(3, 1)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from model_canary.streams.errors import CanaryError, ConfigError
from model_canary.streams.stats.layout import (
    ARMS,
    BATCH_FIELDS,
    BATCH_UNIT_TIMED,
    BATCHES_TIMED,
    BUCKETS,
    CELL_B2,
    ERRORS,
    FIELDS,
    INCORRECT,
    LABELLED,
    MAX_BP,
    OVER_P95,
    OVER_P99,
    PRODUCED,
    SHADOW_PAIR_BP,
    TIMED,
    N,
    arm_ranges,
    outcome_fields,
)
from model_canary.streams.stats.thresholds import NBINS

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
ArrayIn = npt.ArrayLike

#: Per-bucket counters: 4 bytes each (2^31 items per bucket and weight is beyond any rollout).
UNIT_DTYPE = np.int32
TRASH = BUCKETS  #: padding rows point at this extra bucket, which no statistic reads
#: Seconds between folds of the per-bucket evidence into the design effect's sums.
REFRESH_S = 30
#: Routed seconds whose batch-unit counts stay open to later parts (see ``Tally.open_sums``).
OPEN_SECONDS = 64


class ImpossibleEvidence(CanaryError):
    """An evidence record that cannot be true (negative or inconsistent counts, a bucket
    outside its arm's range at that weight, a repeated bucket): refused, not counted."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Pending(NamedTuple):
    """Rows of one record waiting for their second's release (a named tuple: one is built
    per record, and a frozen dataclass costs several times as much to build)."""

    second: int
    j: int  #: slot
    arm: int
    replicas: IntArray  #: (R',) replica indices the rows belong to
    buckets: IntArray  #: (R', K)
    deltas: IntArray  #: (R', K, F)
    batch: FloatArray | None  #: (R', len(BATCH_FIELDS))


class Tally:
    """Cumulative evidence of ``replicas`` rollouts (see the module docstring).

    ``control``: the plan routes a control arm; ``weights``: weights to lay out in advance (more
    are added as evidence at new weights arrives). ``shadow_bp``: a shadow rollout mirroring
    the buckets below it to the canary (both arms then answer the same requests, recorded at
    the pair weight :data:`~.layout.SHADOW_PAIR_BP` in two slots, one per arm).

    Arrays are indexed by *slot*: one per weight (``slots[j] == (weight, "all")``), or in
    shadow mode one per (weight, arm) at the pair weight.

    ``outcomes``: the plan's outcome metrics (:func:`~.layout.outcome_fields`); ``fields``
    names the counters (:data:`~.layout.FIELDS`, then two per outcome metric) and ``F`` is
    their number.
    """

    def __init__(
        self,
        replicas: int,
        *,
        control: bool,
        warmup_s: float,
        weights: Sequence[int] = (),
        shadow_bp: int | None = None,
        outcomes: Sequence[str] = (),
    ) -> None:
        if replicas < 1:
            raise ConfigError("a tally needs at least one replica")
        self.replicas = replicas
        self._every = np.arange(replicas, dtype=np.int64)  # ``_replicas(None)``, read-only
        self._every.flags.writeable = False
        #: The plan's outcome metrics: each adds its two counters after :data:`~.layout.FIELDS`.
        self.outcomes: tuple[str, ...] = tuple(dict.fromkeys(outcomes))
        self.fields: tuple[str, ...] = FIELDS + tuple(
            f for name in self.outcomes for f in outcome_fields(name)
        )
        self._index = {name: i for i, name in enumerate(self.fields)}
        F = self.F = len(self.fields)
        self.control = control and shadow_bp is None
        self.shadow_bp = shadow_bp
        self.warmup_s = float(warmup_s)
        self.slots: list[tuple[int, str]] = []
        self._slot_of: dict[tuple[int, str], int] = {}
        self._range_of: dict[tuple[int, str], tuple[int, int]] = {}
        #: (R, buckets + 1, slots, F): a bucket's counters at every slot are contiguous
        self.units: npt.NDArray[np.int32] = np.zeros(
            (replicas, BUCKETS + 1, 0, F), dtype=UNIT_DTYPE
        )
        self.totals: IntArray = np.zeros((replicas, 0, len(ARMS), F), dtype=np.int64)
        self.batch: FloatArray = np.zeros((replicas, 0, len(ARMS), len(BATCH_FIELDS)))
        #: first routed second seen at each weight, per replica (warm-up starts there)
        self.first_second: IntArray = np.zeros((replicas, 0), dtype=np.int64)
        #: sum over buckets of x x^T, x = a bucket's counters placed by (slot, its arm there,
        #: field): index ``(slot * len(ARMS) + arm) * F + field`` (see :meth:`role`)
        self.gram: FloatArray = np.zeros((replicas, 0, 0))
        #: pooled latency histogram of the baseline and control arms (for the thresholds)
        self.hist: IntArray = np.zeros((replicas, NBINS), dtype=np.int64)
        self._pending: dict[int, list[_Pending]] = {}
        #: released per-bucket deltas not yet in ``units``/``gram`` (see :meth:`refresh`)
        self._queue: list[tuple[int, int, IntArray, IntArray, IntArray]] = []
        #: (replica, bucket) rows in ``_queue``, and how many make it merge them (see
        #: :meth:`_compact`)
        self._queued_rows = 0
        self._compact_at = 2 * replicas * (BUCKETS + 1)
        #: ``totals`` as of the last refresh: what ``units`` and ``gram`` hold
        self.refreshed_totals: IntArray = np.zeros((replicas, 0, len(ARMS), F), dtype=np.int64)
        #: bumped by every refresh that changed ``units``/``gram``
        self.version = 0
        #: derived values that hold until the next refresh (the design effect's bucket part)
        self.cache: dict[object, tuple[FloatArray, FloatArray]] = {}
        self._refreshed_at = -(2**62)
        #: per replica: every second up to this one has been released
        self.watermark: IntArray = np.full(replicas, -1, dtype=np.int64)
        keys = [
            (w, arm)
            for w in dict.fromkeys(weights)
            for arm in (("canary", "baseline") if self.paired(w) else ("all",))
        ]
        # Lay the declared slots out at once (growing the arrays slot by slot copies them).
        self.units = np.zeros((replicas, BUCKETS + 1, len(keys), F), dtype=UNIT_DTYPE)
        self.totals = np.zeros((replicas, len(keys), len(ARMS), F), dtype=np.int64)
        self.refreshed_totals = self.totals.copy()
        self.batch = np.zeros((replicas, len(keys), len(ARMS), len(BATCH_FIELDS)))
        #: The batch-unit counts (timed batches, over p95, over p99) of each (slot, arm) in the
        #: last :data:`OPEN_SECONDS` routed seconds folded, at ``second % OPEN_SECONDS``, and
        #: which second each holds (-1: none): a part of a second folded after the rest adds
        #: to its cluster, so the per-second moments do not depend on when parts are released.
        self.open_sums = np.zeros((replicas, len(keys), len(ARMS), OPEN_SECONDS, 3))
        self.open_second = np.full((replicas, len(keys), len(ARMS), OPEN_SECONDS), -1, np.int64)
        self.first_second = np.full((replicas, len(keys)), np.iinfo(np.int64).max, np.int64)
        dim = len(keys) * len(ARMS) * F
        self.gram = np.zeros((replicas, dim, dim))
        for key in keys:
            self.slots.append(key)
            self._slot_of[key] = len(self.slots) - 1

    def to_rows(self) -> TallyRows:
        """This one-rollout tally as plain rows (see :class:`TallyRows`)."""
        return to_rows(self)

    @staticmethod
    def from_rows(rows: TallyRows) -> Tally:
        return from_rows(rows)

    # -- layout ---------------------------------------------------------------------------

    def index(self, field: str) -> int:
        """The position of counter ``field`` (:class:`ConfigError` for one this tally lacks).

        >>> Tally(1, control=False, warmup_s=0, outcomes=["down"]).index("down:bad")
        8
        """
        found = self._index.get(field)
        if found is None:
            raise ConfigError(f"the tally counts no {field!r} (its fields: {self.fields})")
        return found

    @property
    def weights(self) -> list[int]:
        """The weights of the slots (a weight appears twice in shadow mode)."""
        return [w for w, _ in self.slots]

    def slot(self, weight_bp: int, arm: str = "all") -> int:
        """The slot of ``weight_bp`` (and, for a shadow pair, of ``arm``), laid out on first
        use."""
        found = self._slot_of.get((weight_bp, arm))
        if found is not None:
            return found
        if not 0 <= weight_bp <= MAX_BP:
            raise ImpossibleEvidence("bad-weight", f"weight {weight_bp} outside 0..{MAX_BP}")
        key = (weight_bp, arm if self.paired(weight_bp) else "all")
        if key in self.slots:
            self._slot_of[(weight_bp, arm)] = self.slots.index(key)
            return self.slots.index(key)
        r, F = self.replicas, self.F
        self.slots.append(key)
        self.units = np.concatenate(
            [self.units, np.zeros((r, BUCKETS + 1, 1, F), dtype=UNIT_DTYPE)], axis=2
        )
        self.totals = np.concatenate(
            [self.totals, np.zeros((r, 1, len(ARMS), F), dtype=np.int64)], axis=1
        )
        self.refreshed_totals = np.concatenate(
            [self.refreshed_totals, np.zeros((r, 1, len(ARMS), F), dtype=np.int64)], axis=1
        )
        self.batch = np.concatenate(
            [self.batch, np.zeros((r, 1, len(ARMS), len(BATCH_FIELDS)))], axis=1
        )
        self.first_second = np.concatenate(
            [self.first_second, np.full((r, 1), np.iinfo(np.int64).max, dtype=np.int64)], axis=1
        )
        self.open_sums = np.concatenate(
            [self.open_sums, np.zeros((r, 1, len(ARMS), OPEN_SECONDS, 3))], axis=1
        )
        self.open_second = np.concatenate(
            [self.open_second, np.full((r, 1, len(ARMS), OPEN_SECONDS), -1, np.int64)], axis=1
        )
        self.cache.clear()
        # The new slot's Gram rows and columns come last and start at zero (no data yet).
        dim = len(self.slots) * len(ARMS) * F
        grown = np.zeros((r, dim, dim))
        old = self.gram.shape[1]
        grown[:, :old, :old] = self.gram
        self.gram = grown
        return len(self.slots) - 1

    def paired(self, weight_bp: int) -> bool:
        """Both arms answer the same requests at this weight (a shadow pair)."""
        return self.shadow_bp is not None and weight_bp == SHADOW_PAIR_BP

    def _arm_range(self, weight_bp: int, arm: str) -> tuple[int, int]:
        """``ranges(weight_bp)[arm]``, remembered (the ranges of a weight never change)."""
        found = self._range_of.get((weight_bp, arm))
        if found is None:
            found = self._range_of[(weight_bp, arm)] = self.ranges(weight_bp)[arm]
        return found

    def ranges(self, weight_bp: int) -> dict[str, tuple[int, int]]:
        """``{arm: (first, end)}`` buckets of each arm at ``weight_bp``."""
        if self.shadow_bp is None:
            return arm_ranges(weight_bp, self.control)
        mirrored = (0, self.shadow_bp) if self.paired(weight_bp) else (0, 0)
        return {"canary": mirrored, "control": (0, 0), "baseline": (0, BUCKETS)}

    def role(self, buckets: IntArray, j: int) -> IntArray:
        """The arm (index in :data:`~.layout.ARMS`) of each bucket at slot ``j`` (0 for
        buckets no arm has there, which carry no data)."""
        w, which = self.slots[j]
        ranges = self.ranges(w)
        out = np.zeros(buckets.shape, dtype=np.int64)
        for a, arm in enumerate(ARMS):
            if which != "all" and arm != which:
                continue
            lo, hi = ranges[arm]
            out[(buckets >= lo) & (buckets < hi)] = a
        return out

    # -- adding evidence ------------------------------------------------------------------

    def add_routed(
        self,
        second: int,
        weight_bp: int,
        arm: str | None = None,
        buckets: ArrayIn | None = None,
        n: ArrayIn | None = None,
        *,
        replicas: ArrayIn | None = None,
    ) -> None:
        """Requests were routed at ``weight_bp`` in ``second``: the weight's warm-up starts at
        the first such second (the routed counts themselves serve completeness, not the tests)."""
        idx = self._replicas(replicas)
        for slot_arm in ("canary", "baseline") if self.paired(weight_bp) else ("all",):
            j = self.slot(weight_bp, slot_arm)
            if replicas is None and self.replicas == 1:  # the evaluator's: one number
                if second < self.first_second[0, j]:
                    self.first_second[0, j] = second
                continue
            self.first_second[idx, j] = np.minimum(self.first_second[idx, j], second)

    def add_served(
        self,
        second: int,
        weight_bp: int,
        arm: str,
        buckets: ArrayIn,
        n: ArrayIn,
        errors: ArrayIn | None = None,
        over_p95: ArrayIn | None = None,
        over_p99: ArrayIn | None = None,
        batch: object | None = None,
        timed: ArrayIn | bool | None = None,
        *,
        replicas: ArrayIn | None = None,
    ) -> None:
        """Served evidence of one cell: per-bucket rows ``(R', K)`` (pad with bucket
        :data:`TRASH` and zero counts; 1-D for one replica), and the cell's batch moments
        (:data:`~.layout.BATCH_FIELDS`: ``(R', 8)`` numbers, or one record with those
        attributes). ``timed``: per bucket, the items compared on latency; or ``True`` when
        the cell carried latency exceedances (every successful item is timed) and ``False``
        when it did not (the rollout's thresholds had not reached its producer)."""
        if (
            replicas is None
            and self.replicas == 1
            and isinstance(timed, bool)
            and batch is not None
            and not isinstance(batch, np.ndarray | list | tuple)
        ):
            vectors = _int64_vectors(buckets, n, errors, over_p95, over_p99)
            if vectors is not None and self._served_row(
                second, weight_bp, arm, vectors, batch, timed
            ):
                return
        b = _ints(buckets)
        counts = _ints(n).reshape(b.shape)
        errs = np.zeros_like(counts) if errors is None else _ints(errors).reshape(b.shape)
        if timed is None or timed is True:
            timed_rows = counts - errs if timed is True else np.zeros_like(counts)
        elif timed is False:
            timed_rows = np.zeros_like(counts)
        else:
            timed_rows = _ints(timed).reshape(b.shape)
        latency = timed is not False
        cols = {
            N: counts,
            ERRORS: errs,
            TIMED: timed_rows,
            OVER_P95: over_p95 if latency else None,
            OVER_P99: over_p99 if latency else None,
        }
        deltas = np.zeros((*b.shape, self.F), dtype=np.int64)
        for f, v in cols.items():
            if v is not None:
                deltas[..., f] = _ints(v).reshape(b.shape)
        if not _served_possible(deltas):
            _refuse_served(deltas)
        moments = None
        if batch is not None:
            moments = _moments(batch, b.shape[0], latency)
            if not np.all(np.isfinite(moments)) or np.any(moments < 0):
                raise ImpossibleEvidence("bad-batch-moments", "batch moments must be finite, >= 0")
            _check_batch_units(moments, deltas)
        self._add(second, weight_bp, arm, b, deltas, moments, replicas)

    def _served_row(
        self,
        second: int,
        weight_bp: int,
        arm: str,
        cols: tuple[IntArray, ...],
        batch: object,
        timed: bool,
    ) -> bool:
        """:meth:`add_served` of one replica's row of 1-D int64 columns (the evaluator's
        records), checked on the contiguous columns; False (nothing counted) when a check
        fails, for :meth:`add_served`'s own path to refuse it with its reason."""
        b, counts, errs, over95, over99 = cols
        deltas = np.zeros((1, b.size, self.F), dtype=np.int64)
        d = deltas[0]
        d[:, N] = counts
        d[:, ERRORS] = errs
        if timed:
            d[:, TIMED] = counts - errs  # cannot wrap unless a count is negative (refused)
            d[:, OVER_P95] = over95
            d[:, OVER_P99] = over99
        if b.size:
            # Every count >= 0 (with timed = n - errors: errors <= n), then
            # over_p99 <= over_p95 <= timed: the timed, p95 columns against the p95, p99 ones.
            if d.min() < 0:
                return False
            if timed:
                if (d[:, TIMED : OVER_P95 + 1] < d[:, OVER_P95 : OVER_P99 + 1]).any():
                    return False
            elif (errs > counts).any():
                return False
        figures = _moment_figures(batch, timed)
        # Every figure >= 0 and finite: a NaN or an infinity makes the sum one (a sum that
        # overflows, or a NaN min() skipped, only sends the record down the general path).
        if not (min(figures) >= 0.0 and sum(figures) < math.inf):
            return False
        sums = d.sum(axis=0).tolist() if timed else [0] * self.F
        figures[BATCH_UNIT_TIMED] = float(_batch_unit_timed(figures, sums))
        self._add(second, weight_bp, arm, b[None, :], deltas, np.array([figures]), None)
        return True

    def add_labelled(
        self,
        second: int,
        weight_bp: int,
        arm: str,
        buckets: ArrayIn,
        labelled: ArrayIn,
        incorrect: ArrayIn,
        *,
        outcomes: Mapping[str, tuple[ArrayIn, ArrayIn]] | None = None,
        replicas: ArrayIn | None = None,
    ) -> None:
        """Feedback joined for requests routed in ``second``: per-bucket rows ``(R', K)`` of
        labelled and incorrect items (accuracy) and, per outcome metric, of items whose
        feedback counts for it and bad ones (``outcomes``: ``{name: (counted, bad)}``, the
        same rows; metrics this tally does not count are left out)."""
        b = _ints(buckets)
        deltas = np.zeros((*b.shape, self.F), dtype=np.int64)
        deltas[..., LABELLED] = _ints(labelled).reshape(b.shape)
        deltas[..., INCORRECT] = _ints(incorrect).reshape(b.shape)
        pairs = [(LABELLED, INCORRECT)]
        for name, (counted, bad) in (outcomes or {}).items():
            if name not in self.outcomes:
                continue
            at_n, at_bad = (self._index[f] for f in outcome_fields(name))
            deltas[..., at_n] = _ints(counted).reshape(b.shape)
            deltas[..., at_bad] = _ints(bad).reshape(b.shape)
            pairs.append((at_n, at_bad))
        if np.any(deltas < 0):
            raise ImpossibleEvidence("negative-count", "counts cannot be negative")
        if any(np.any(deltas[..., bad] > deltas[..., n]) for n, bad in pairs):
            raise ImpossibleEvidence("inconsistent-counts", "more bad than labelled items")
        self._add(second, weight_bp, arm, b, deltas, None, replicas)

    def _add(
        self,
        second: int,
        weight_bp: int,
        arm: str,
        buckets: IntArray,
        deltas: IntArray,
        moments: FloatArray | None,
        replicas: ArrayIn | None,
    ) -> None:
        if arm not in ARMS:
            raise ImpossibleEvidence("bad-arm", f"no comparison arm {arm!r}")
        idx = self._replicas(replicas)
        if buckets.ndim != 2 or buckets.shape[0] != idx.size:
            raise ImpossibleEvidence(
                "bad-shape", f"rows must be (replicas, K); got {buckets.shape} for {idx.size}"
            )
        # (add_served and add_labelled refused negative counts already.)
        lo, hi = self._arm_range(weight_bp, arm)
        one = idx.size == 1  # the evaluator's: the same steps on numbers
        if not (_row_fits(buckets[0], lo, hi) if one else _rows_fit(buckets, lo, hi)):
            _refuse_rows(buckets, deltas, lo, hi, arm, weight_bp)
        j = self.slot(weight_bp, arm)
        # Warm-up starts at a second with requests in it (a row of zeros is no traffic).
        if one:
            r = int(idx[0])
            if second < self.first_second[r, j] and deltas.any():
                self.first_second[r, j] = second
            item = _Pending(second, j, ARMS.index(arm), idx, buckets, deltas, moments)
            if second > self.watermark[r]:
                self._pending.setdefault(second, []).append(item)
            else:  # a late record of an already released second (labels, mostly)
                self._fold([item])
            return
        busy = idx[deltas.reshape(len(idx), -1).any(axis=1)]
        self.first_second[busy, j] = np.minimum(self.first_second[busy, j], second)
        item = _Pending(second, j, ARMS.index(arm), idx, buckets, deltas, moments)
        late = second <= self.watermark[idx]
        if not late.any():
            self._pending.setdefault(second, []).append(item)
        elif late.all():
            # A late record of an already released second (labels, mostly): count it now.
            self._fold([item])
        else:
            self._fold([_subset(item, late)])
            self._pending.setdefault(second, []).append(_subset(item, ~late))

    def add_latency_hist(
        self,
        arm: str,
        *,
        bins: ArrayIn,
        counts: ArrayIn,
        replicas: ArrayIn | None = None,
    ) -> None:
        """A cell's latency histogram (sparse rows ``(R', K)``: bin, count); the baseline and
        control arms' are pooled to fix the latency thresholds."""
        if arm not in ARMS:
            raise ImpossibleEvidence("bad-arm", f"no comparison arm {arm!r}")
        if arm == "canary":
            return
        b, c = _ints(bins), _ints(counts)
        if b.shape != c.shape or np.any(c < 0) or np.any((b < 0) | (b >= NBINS)):
            raise ImpossibleEvidence("bad-histogram", "histogram bins or counts out of range")
        idx = self._replicas(replicas)
        np.add.at(self.hist, (np.broadcast_to(idx[:, None], b.shape), b), c)

    def _replicas(self, replicas: ArrayIn | None) -> IntArray:
        if replicas is None:
            return self._every
        idx = np.asarray(replicas, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.replicas):
            raise ConfigError("replica index out of range")
        return idx

    # -- releasing ------------------------------------------------------------------------

    def pending_seconds(self) -> list[int]:
        return sorted(self._pending)

    def release(self, watermark: ArrayIn) -> None:
        """Every arm's results for seconds ``<= watermark`` (per replica) are complete: count
        them. The watermark never moves back."""
        given = np.asarray(watermark, dtype=np.int64)
        mark = np.maximum(self.watermark, np.broadcast_to(given, self.watermark.shape))
        self.watermark = mark
        for second in sorted(s for s in self._pending if s <= int(mark.max())):
            if self.replicas == 1:  # one rollout: every item of the second is ready
                self._fold_all(self._pending.pop(second))
                continue
            left, ready_parts = [], []
            for item in self._pending[second]:
                ready = second <= mark[item.replicas]
                if np.all(ready):
                    ready_parts.append(item)
                elif np.any(ready):
                    ready_parts.append(_subset(item, ready))
                if not np.all(ready):
                    left.append(_subset(item, ~ready))
            self._fold_all(ready_parts)
            if left:
                self._pending[second] = left
            else:
                del self._pending[second]
        newest = int(mark.max())
        if newest - self._refreshed_at >= REFRESH_S:
            self.refresh()
            self._refreshed_at = newest

    def _fold_all(self, items: list[_Pending]) -> None:
        # Items of one second, slot and arm for the same replicas share one update.
        groups: dict[tuple[int, int, bytes], list[_Pending]] = {}
        for item in items:
            groups.setdefault((item.j, item.arm, item.replicas.tobytes()), []).append(item)
        for same in groups.values():
            self._fold(same)

    def _fold(self, items: list[_Pending]) -> None:
        first = items[0]
        idx, j, arm = first.replicas, first.j, first.arm
        # Warm-up: the first seconds at a weight are not compared.
        warm = first.second < self.first_second[idx, j] + self.warmup_s
        if np.all(warm):
            return
        if len(items) == 1:
            buckets, deltas = first.buckets, first.deltas
        else:
            buckets = np.concatenate([it.buckets for it in items], axis=1)
            deltas = np.concatenate([it.deltas for it in items], axis=1)
        if warm.any():
            deltas = np.where(warm[:, None, None], 0, deltas)  # a copy: the items stay as they are
        self.totals[idx, j, arm] += deltas.sum(axis=1)  # warm rows: zeros (above)
        cell = np.zeros((idx.size, len(BATCH_FIELDS)))
        for it in items:  # in order: float sums as the items arrived
            if it.batch is not None:
                cell += it.batch
        if warm.any():
            cell[warm] = 0.0
        # The second's batch-unit counts are one cluster (see BATCH_FIELDS: cell_*): the
        # squares grow by (S + d)^2 - S^2 with S what the second held (exact: whole numbers).
        w = first.second % OPEN_SECONDS
        held = self.open_second[idx, j, arm, w] == first.second
        old_sums = np.where(held[:, None], self.open_sums[idx, j, arm, w], 0.0)
        new_sums = old_sums + cell[:, BATCHES_TIMED : BATCHES_TIMED + 3]
        self.open_sums[idx, j, arm, w] = new_sums
        self.open_second[idx, j, arm, w] = first.second

        def squares(x: FloatArray) -> FloatArray:
            b, x95, x99 = x[:, 0], x[:, 1], x[:, 2]
            return np.stack([b * b, x95 * x95, x95 * b, x99 * x99, x99 * b], 1)

        cell[:, CELL_B2 : CELL_B2 + 5] = squares(new_sums) - squares(old_sums)
        self.batch[idx, j, arm] += cell
        keep = deltas.any(axis=(1, 2))
        if np.any(keep):
            self._queue.append((j, arm, idx[keep], buckets[keep], deltas[keep]))
            self._queued_rows += int(buckets[keep].size)
            if self._queued_rows > self._compact_at:
                self._compact()

    def _compact(self) -> None:
        """Merge the queued deltas per (slot, arm, replica, bucket), as :meth:`refresh` would
        before folding them: the queue then holds at most one row per bucket and slot, however
        much traffic the refresh interval saw (a snapshot carries the queue, and 30 s of
        traffic at 10,000 requests/s left unmerged are 300,000 rows)."""
        queue: list[tuple[int, int, IntArray, IntArray, IntArray]] = []
        for (j, arm), (reps, buckets, summed) in self._merged():
            idx, grid_b, grid_d = _grid(reps, buckets, summed)
            if idx.size:
                queue.append((j, arm, idx, grid_b, grid_d))
        self._queue = queue
        self._queued_rows = sum(int(b.size) for _, _, _, b, _ in queue)
        self._compact_at = max(self._compact_at, 2 * self._queued_rows)

    def _merged(self) -> list[tuple[tuple[int, int], tuple[IntArray, IntArray, IntArray]]]:
        """The queue's deltas summed per (slot, arm), ordered by (slot, arm): each as
        (replicas, buckets, summed deltas), sorted by replica then bucket."""
        F = self.F
        by_slot: dict[tuple[int, int], list[tuple[IntArray, IntArray, IntArray]]] = {}
        for j, arm, idx, buckets, deltas in self._queue:
            by_slot.setdefault((j, arm), []).append((idx, buckets, deltas))
        out = []
        for (j, arm), parts in sorted(by_slot.items()):
            reps = np.concatenate([np.repeat(i, b.shape[1]) for i, b, _ in parts])
            bks = np.concatenate([b.ravel() for _, b, _ in parts])
            ds = np.concatenate([d.reshape(-1, F) for _, _, d in parts])
            real = bks != TRASH
            if not real.all():
                reps, bks, ds = reps[real], bks[real], ds[real]
            uniq, summed = _sum_by_key(reps * (BUCKETS + 1) + bks, ds)
            out.append(((j, arm), (uniq // (BUCKETS + 1), uniq % (BUCKETS + 1), summed)))
        return out

    def refresh(self) -> None:
        """Fold the released per-bucket deltas into ``units`` and the Gram sums (the design
        effect's inputs). Done by :meth:`release` every :data:`REFRESH_S` seconds: the design
        effect changes slowly, the counts the tests use are current at every second."""
        merged = self._merged()
        refreshed = bool(self._queue)
        self._queue = []
        self._queued_rows = 0
        for (j, arm), (reps, buckets, summed) in merged:
            self._update_units(j, arm, reps, buckets, summed)
        self.refreshed_totals = self.totals.copy()
        self.cache.clear()
        if refreshed:
            self.version += 1

    def _update_units(
        self, j: int, arm: int, reps: IntArray, buckets: IntArray, deltas: IntArray
    ) -> None:
        F = self.F
        idx, buckets, deltas = _grid(reps, buckets, deltas)
        if idx.size == 0:
            return
        # Gram update: x_new x_new^T - x_old x_old^T = x_old d^T + d x_old^T + d d^T, where d
        # is nonzero only in the block of (slot j, this arm).
        flat = self.units.reshape(self.replicas * (BUCKETS + 1), -1)
        where = (idx[:, None] * (BUCKETS + 1) + buckets).ravel()
        nslots = len(self.slots)
        x_old = flat[where].reshape(*buckets.shape, nslots, F).astype(np.float64)
        dd = deltas.astype(np.float64)
        # x_old placed by (slot, the bucket's arm there): one masked product per pair.
        cross = np.zeros((idx.size, nslots * len(ARMS) * F, F))
        for jj in range(nslots):
            role = self.role(buckets, jj)
            for a in np.unique(role[buckets != TRASH]):
                xa = np.where((role == a)[..., None], x_old[:, :, jj], 0.0)
                at = (jj * len(ARMS) + int(a)) * F
                cross[:, at : at + F] = np.swapaxes(xa, 1, 2) @ dd
        square = np.swapaxes(dd, 1, 2) @ dd  # (R', F, F)
        at = (j * len(ARMS) + arm) * F
        blk = slice(at, at + F)
        # In place on the rows of ``idx`` (unique: np.unique above): only the block's rows
        # and columns change, so copying each replica's whole Gram out and back is not needed.
        rows = idx[:, None, None]
        every = np.arange(self.gram.shape[1])
        cols = np.arange(blk.start, blk.stop)
        self.gram[rows, every[None, :, None], cols[None, None, :]] += cross
        self.gram[rows, cols[None, :, None], every[None, None, :]] += np.swapaxes(cross, 1, 2)
        self.gram[rows, cols[None, :, None], cols[None, None, :]] += square
        block = slice(j * F, (j + 1) * F)
        flat[where, block] += deltas.reshape(-1, F).astype(UNIT_DTYPE)


#: 2: ``batch`` and ``pending_batch`` rows carry the batch-unit counts and their per-second
#: moments (17 batch fields); rows of version 1 (8 batch fields) are read with those at 0
#: (items only).
ROWS_VERSION = 2
#: The batch fields of each rows version.
BATCH_FIELDS_OF = {1: 8, 2: len(BATCH_FIELDS)}


@dataclass
class TallyRows:
    """One rollout's tally as plain rows for the evaluator's snapshots: numbers, strings,
    lists of those and int64/float64 arrays (1-D or 2-D). Pending seconds and queued
    per-bucket deltas are flattened: ``*_meta`` rows say how many entries of the concatenated
    arrays each holds."""

    version: int
    control: bool
    warmup_s: float
    shadow_bp: int  #: -1: not a shadow rollout
    slots: list[list[str]]  #: [weight, arm] per slot (the weight as text)
    units: IntArray  #: (buckets + 1, slots * F)
    totals: IntArray  #: (slots, arms * F)
    refreshed_totals: IntArray
    batch: FloatArray  #: (slots, arms * len(BATCH_FIELDS))
    first_second: IntArray  #: (slots,)
    gram: FloatArray
    hist: IntArray
    watermark: int
    refreshed_at: int
    refreshes: int
    pending_meta: IntArray  #: (P, 5): second, slot, arm, rows, has batch moments
    pending_buckets: IntArray
    pending_deltas: IntArray  #: (sum of rows, F)
    pending_batch: FloatArray  #: (P, len(BATCH_FIELDS))
    queue_meta: IntArray  #: (Q, 3): slot, arm, rows
    queue_buckets: IntArray
    queue_deltas: IntArray
    #: The outcome metrics counted after the built-in fields (rows written before outcome
    #: metrics existed have none).
    outcomes: list[str] = field(default_factory=list)
    #: Version 2: ``Tally.open_sums`` as (slots, arms * OPEN_SECONDS * 3) and
    #: ``Tally.open_second`` as (slots, arms * OPEN_SECONDS); None in version 1 rows.
    open_sums: FloatArray | None = None
    open_second: IntArray | None = None


def to_rows(t: Tally) -> TallyRows:
    """The rows of a one-rollout tally (``Tally.to_rows``)."""
    if t.replicas != 1:
        raise ConfigError("only a one-rollout tally is stored as rows")
    pend = [it for second in sorted(t._pending) for it in t._pending[second]]
    nb, F = len(BATCH_FIELDS), t.F
    return TallyRows(
        version=ROWS_VERSION,
        control=t.control,
        warmup_s=t.warmup_s,
        shadow_bp=-1 if t.shadow_bp is None else t.shadow_bp,
        slots=[[str(w), a] for w, a in t.slots],
        units=t.units[0].reshape(BUCKETS + 1, len(t.slots) * F).astype(np.int64),
        totals=t.totals[0].reshape(len(t.slots), len(ARMS) * F).copy(),
        refreshed_totals=t.refreshed_totals[0].reshape(len(t.slots), len(ARMS) * F).copy(),
        batch=t.batch[0].reshape(len(t.slots), len(ARMS) * nb).copy(),
        first_second=t.first_second[0].copy(),
        gram=t.gram[0].copy(),
        hist=t.hist[0].copy(),
        watermark=int(t.watermark[0]),
        refreshed_at=int(t._refreshed_at),
        refreshes=t.version,
        pending_meta=np.array(
            [[it.second, it.j, it.arm, it.buckets.shape[1], it.batch is not None] for it in pend],
            dtype=np.int64,
        ).reshape(-1, 5),
        pending_buckets=np.concatenate([it.buckets[0] for it in pend] or [np.zeros(0, np.int64)]),
        pending_deltas=np.concatenate(
            [it.deltas[0] for it in pend] or [np.zeros((0, F), np.int64)]
        ).reshape(-1, F),
        pending_batch=np.array(
            [it.batch[0] if it.batch is not None else np.zeros(nb) for it in pend], dtype=float
        ).reshape(-1, nb),
        queue_meta=np.array([[j, a, b.shape[1]] for j, a, _, b, _ in t._queue], np.int64).reshape(
            -1, 3
        ),
        queue_buckets=np.concatenate([b[0] for *_, b, _ in t._queue] or [np.zeros(0, np.int64)]),
        queue_deltas=np.concatenate(
            [d[0] for *_, d in t._queue] or [np.zeros((0, F), np.int64)]
        ).reshape(-1, F),
        outcomes=list(t.outcomes),
        open_sums=t.open_sums[0].reshape(len(t.slots), len(ARMS) * OPEN_SECONDS * 3).copy(),
        open_second=t.open_second[0].reshape(len(t.slots), len(ARMS) * OPEN_SECONDS).copy(),
    )


def from_rows(rows: TallyRows) -> Tally:
    """The tally :func:`to_rows` stored (``Tally.from_rows``)."""
    if rows.version not in BATCH_FIELDS_OF:
        raise ConfigError(
            f"tally rows version {rows.version}, this code reads {sorted(BATCH_FIELDS_OF)}"
        )
    width = BATCH_FIELDS_OF[rows.version]
    t = Tally(
        1,
        control=rows.control,
        warmup_s=rows.warmup_s,
        shadow_bp=None if rows.shadow_bp < 0 else rows.shadow_bp,
        outcomes=rows.outcomes,
    )
    F = t.F
    for w, a in rows.slots:
        t.slot(int(w), a)
    n = len(t.slots)
    t.units[0] = np.asarray(rows.units).reshape(BUCKETS + 1, n, F).astype(UNIT_DTYPE)
    t.totals[0] = np.asarray(rows.totals).reshape(n, len(ARMS), F)
    t.refreshed_totals[0] = np.asarray(rows.refreshed_totals).reshape(n, len(ARMS), F)
    t.batch[0, ..., :width] = np.asarray(rows.batch).reshape(n, len(ARMS), width)
    pending_batch = np.zeros((len(np.asarray(rows.pending_meta)), len(BATCH_FIELDS)))
    pending_batch[:, :width] = np.asarray(rows.pending_batch).reshape(-1, width)
    t.first_second[0] = rows.first_second
    if rows.open_sums is not None and rows.open_second is not None:
        t.open_sums[0] = np.asarray(rows.open_sums).reshape(t.open_sums.shape[1:])
        t.open_second[0] = np.asarray(rows.open_second).reshape(t.open_second.shape[1:])
    t.gram[0] = rows.gram
    t.hist[0] = rows.hist
    t.watermark[0] = rows.watermark
    t._refreshed_at = rows.refreshed_at
    t.version = rows.refreshes
    one = np.zeros(1, dtype=np.int64)
    at = 0
    for k, (second, j, arm, count, has_batch) in enumerate(np.asarray(rows.pending_meta)):
        part = slice(at, at + int(count))
        at += int(count)
        moments = pending_batch[k][None, :] if has_batch else None
        item = _Pending(
            int(second),
            int(j),
            int(arm),
            one,
            np.asarray(rows.pending_buckets)[part][None, :],
            np.asarray(rows.pending_deltas)[part][None, :, :],
            moments,
        )
        t._pending.setdefault(int(second), []).append(item)
    at = 0
    for j, arm, count in np.asarray(rows.queue_meta):
        part = slice(at, at + int(count))
        at += int(count)
        b = np.asarray(rows.queue_buckets)[part][None, :]
        d = np.asarray(rows.queue_deltas)[part][None, :, :]
        t._queue.append((int(j), int(arm), one, b, d))
        t._queued_rows += int(b.size)
    return t


def _grid(
    reps: IntArray, buckets: IntArray, deltas: IntArray
) -> tuple[IntArray, IntArray, IntArray]:
    """Rows sorted by replica laid out per replica: (replicas present, their buckets (R', K)
    padded with :data:`TRASH`, their deltas (R', K, F) padded with zeros)."""
    F = deltas.shape[-1]
    idx, start, count = np.unique(reps, return_index=True, return_counts=True)
    if idx.size == 0:
        return idx, np.zeros((0, 0), np.int64), np.zeros((0, 0, F), np.int64)
    width = int(count.max())
    pos = np.arange(reps.size) - np.repeat(start, count)
    row = np.repeat(np.arange(idx.size), count)
    grid_b = np.full((idx.size, width), TRASH, dtype=np.int64)
    grid_b[row, pos] = buckets
    grid_d = np.zeros((idx.size, width, F), dtype=np.int64)
    grid_d[row, pos] = deltas
    return idx, grid_b, grid_d


def _served_possible(d: IntArray) -> bool:
    """Whether served deltas ``d`` (only the :data:`~.layout.FIELDS` of served evidence set)
    pass every check of :func:`_refuse_served`, in one pass:
    ``0 <= over_p99 <= over_p95 <= timed <= n - errors`` with ``n, errors >= 0`` (``n >= 0``
    first, so ``n - errors`` cannot wrap)."""
    n, e, t = d[..., N], d[..., ERRORS], d[..., TIMED]
    p95, p99 = d[..., OVER_P95], d[..., OVER_P99]
    ok = (n >= 0) & (e >= 0) & (p99 >= 0)
    ok &= p99 <= p95
    ok &= p95 <= t
    ok &= t <= n - e
    return bool(ok.all())


def _refuse_served(d: IntArray) -> None:
    """Raise :class:`ImpossibleEvidence` with the reason served deltas ``d`` are impossible
    (the checks in order; :func:`_served_possible` is the same test in one pass)."""
    if np.any(d < 0):
        raise ImpossibleEvidence("negative-count", "counts cannot be negative")
    if np.any(d[..., ERRORS] > d[..., N]) or np.any(d[..., TIMED] > d[..., N] - d[..., ERRORS]):
        raise ImpossibleEvidence("inconsistent-counts", "more errors or timed items than items")
    if np.any(d[..., OVER_P99] > d[..., OVER_P95]) or np.any(d[..., OVER_P95] > d[..., TIMED]):
        raise ImpossibleEvidence(
            "inconsistent-counts", "exceedances must satisfy over_p99 <= over_p95 <= timed"
        )


def _rows_fit(buckets: IntArray, lo: int, hi: int) -> bool:
    """Rows ``(R', K)`` of strictly increasing buckets within ``lo..hi - 1`` (as evidence
    records carry them): no padding, no repeated bucket, none outside the arm, so
    :func:`_refuse_rows` has nothing to refuse. False does not mean refused (padding, or rows
    out of order): :func:`_refuse_rows` then decides."""
    if buckets.shape[1] == 0:
        return False
    return bool(
        (buckets[:, 0] >= lo).all()
        and (buckets[:, -1] < hi).all()
        and (buckets[:, 1:] > buckets[:, :-1]).all()
    )


def _row_fits(row: IntArray, lo: int, hi: int) -> bool:
    """:func:`_rows_fit` for one row."""
    return bool(
        row.size and lo <= row[0] and row[-1] < hi and (row.size == 1 or (row[1:] > row[:-1]).all())
    )


def _refuse_rows(
    buckets: IntArray, deltas: IntArray, lo: int, hi: int, arm: str, weight_bp: int
) -> None:
    """Raise :class:`ImpossibleEvidence` for a bucket outside ``lo..hi - 1``, counts on a
    padding row, or a bucket repeated in a row."""
    real = buckets != TRASH
    if np.any(real & ((buckets < lo) | (buckets >= hi))):
        raise ImpossibleEvidence(
            "bucket-outside-arm",
            f"a {arm} row names a bucket outside {lo}..{hi - 1} at weight {weight_bp}",
        )
    if np.any(~real & (deltas.sum(axis=-1) > 0)):
        raise ImpossibleEvidence("bucket-outside-arm", "counts on a padding row")
    ordered = np.sort(np.where(real, buckets, -1 - np.arange(buckets.shape[1])), axis=1)
    if np.any(ordered[:, 1:] == ordered[:, :-1]):
        raise ImpossibleEvidence("repeated-bucket", "a bucket appears twice in one record")


def _sum_by_key(keys: IntArray, rows: IntArray) -> tuple[IntArray, IntArray]:
    """The distinct ``keys`` in increasing order, and the ``rows`` ``(len(keys), F)`` summed
    per key (exact: integer sums, in any order).

    >>> u, s = _sum_by_key(np.array([7, 3, 7]), np.array([[1, 0], [2, 0], [4, 0]]))
    >>> u.tolist(), s.tolist()
    ([3, 7], [[2, 0], [5, 0]])
    """
    order = np.argsort(keys)
    ordered = keys[order]
    starts_at = np.empty(ordered.size, dtype=bool)
    starts_at[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts_at[1:])
    starts = np.flatnonzero(starts_at)
    if not starts.size:
        return ordered[starts], np.zeros((0, rows.shape[1]), dtype=np.int64)
    # The rows in key order, then each run of one key summed: all columns in one pass.
    summed = np.add.reduceat(np.asarray(rows, dtype=np.int64)[order], starts, axis=0)
    return ordered[starts], summed


def _subset(item: _Pending, keep: npt.NDArray[np.bool_]) -> _Pending:
    return _Pending(
        item.second,
        item.j,
        item.arm,
        item.replicas[keep],
        item.buckets[keep],
        item.deltas[keep],
        None if item.batch is None else item.batch[keep],
    )


def _ints(values: ArrayIn) -> IntArray:
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ImpossibleEvidence("bad-count", "counts must be whole numbers")
    elif arr.dtype.kind not in "iub":
        raise ImpossibleEvidence("bad-count", f"counts must be numbers, got {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    return np.asarray(arr, dtype=np.int64)


def _int64_vectors(*values: object) -> tuple[IntArray, ...] | None:
    """``values`` when every one is a 1-D int64 array of one length, else None."""
    size = -1
    for v in values:
        if not isinstance(v, np.ndarray) or v.dtype != np.int64 or v.ndim != 1:
            return None
        if size >= 0 and v.size != size:
            return None
        size = v.size
    return values  # type: ignore[return-value]


def _moments(batch: object, rows: int, latency: bool) -> FloatArray:
    """A cell's batch moments as ``(rows, len(BATCH_FIELDS))``, from numbers in that order or
    from a record with those attributes (``m2_timed`` defaults to ``m2``: batches' errors are
    rare, so their timed items are about all their items; the batch-unit counts default to 0:
    the cell carried none: numbers may stop after the 8 moments). ``batch_unit_timed`` is left
    0: :func:`_check_batch_units` sets it.
    """
    if isinstance(batch, np.ndarray | list | tuple):
        given = np.asarray(batch, dtype=np.float64).reshape(rows, -1)
        if given.shape[1] not in (BATCHES_TIMED, PRODUCED):
            raise ImpossibleEvidence(
                "bad-batch-moments", f"{given.shape[1]} batch figures per row, not 8 or 12"
            )
        out = np.zeros((rows, len(BATCH_FIELDS)))
        out[:, : given.shape[1]] = given
        out[:, BATCH_UNIT_TIMED:] = 0.0
    else:
        out = np.zeros((rows, len(BATCH_FIELDS)))
        m2 = getattr(batch, "m2", 0)
        out[:, :BATCH_UNIT_TIMED] = [
            float(getattr(batch, name, m2 if name == "m2_timed" else 0))
            for name in BATCH_FIELDS[:BATCH_UNIT_TIMED]
        ]
    if not latency:
        out[:, BATCH_FIELDS.index("m2_timed") :] = 0.0
    return out


def _moment_figures(batch: object, latency: bool) -> list[float]:
    """:func:`_moments` of one record with the batch figures as attributes, as numbers: read
    at once from a record with every figure but ``m2_timed`` (a
    :class:`~model_canary.streams.evidence.columns.BatchSums`), else by :func:`_moments`."""
    try:
        given = _GIVEN_FIGURES(batch)
    except AttributeError:
        given = None
    if given is None or hasattr(batch, "m2_timed"):
        figures: list[float] = _moments(batch, 1, latency)[0].tolist()
        return figures
    figures = [float(v) for v in given]
    figures.insert(_M2_TIMED, figures[0])  # m2_timed defaults to m2
    figures += [0.0] * (len(BATCH_FIELDS) - BATCH_UNIT_TIMED)
    if not latency:
        figures[_M2_TIMED:] = [0.0] * (len(BATCH_FIELDS) - _M2_TIMED)
    return figures


_M2_TIMED = BATCH_FIELDS.index("m2_timed")
#: The figures a producer gives, m2_timed left out (its default is m2, the first).
_GIVEN_FIGURES = operator.attrgetter(
    *(f for f in BATCH_FIELDS[:BATCH_UNIT_TIMED] if f != "m2_timed")
)
assert BATCH_FIELDS[0] == "m2"  # _moment_figures takes m2 as the first batch figure
# Tally._served_row reads timed, over_p95, over_p99 as adjacent columns.
assert (TIMED + 1, OVER_P95 + 1) == (OVER_P95, OVER_P99)


def _check_batch_units(moments: FloatArray, deltas: IntArray) -> None:
    """Refuse batch-unit counts that cannot be true, and fill in ``batch_unit_timed``: the
    cell's timed items when it carried batch counts (0 when it did not).

    A cell's timed items lie in at least one and at most that many batches, and a batch over
    a threshold has a timed item over it: ``1 <= batches_timed <= timed`` (or no batches and
    no timed items), ``batches_over_p99 <= batches_over_p95 <= batches_timed``, and
    ``batches_over_p95 <= over_p95`` (likewise p99)."""
    sums = deltas.sum(axis=1)  # (R', F)
    if moments.shape[0] == 1:  # the evaluator's one rollout: the same checks on numbers
        moments[0, BATCH_UNIT_TIMED] = _batch_unit_timed(moments[0].tolist(), sums[0].tolist())
        return
    timed, over95, over99 = sums[:, TIMED], sums[:, OVER_P95], sums[:, OVER_P99]
    nb, b95, b99 = (moments[:, BATCHES_TIMED + i] for i in range(3))
    counted = nb > 0
    given = moments[:, BATCHES_TIMED:BATCH_UNIT_TIMED]
    if np.any(given != np.round(given)):
        raise ImpossibleEvidence("bad-batch-moments", "batch counts must be whole numbers")
    wrong = (nb > timed) | (b95 > nb) | (b99 > b95) | (b95 > over95) | (b99 > over99)
    if np.any(counted & wrong) or np.any(~counted & ((b95 > 0) | (b99 > 0))):
        raise ImpossibleEvidence("inconsistent-counts", _BATCH_COUNTS_RULE)
    moments[:, BATCH_UNIT_TIMED] = np.where(counted, timed, 0)


_BATCH_COUNTS_RULE = (
    "batch counts must satisfy batches_over_p99 <= batches_over_p95 <= batches_timed "
    "<= timed items, and no more batches over a threshold than items over it"
)


def _batch_unit_timed(moments: list[float], sums: list[int]) -> int:
    """:func:`_check_batch_units` for one row: ``moments`` (:data:`~.layout.BATCH_FIELDS`)
    and the row's summed ``deltas`` as numbers; returns its ``batch_unit_timed``."""
    timed, over95, over99 = sums[TIMED], sums[OVER_P95], sums[OVER_P99]
    nb, b95, b99 = moments[BATCHES_TIMED : BATCHES_TIMED + 3]
    if not all(float(v).is_integer() for v in (nb, b95, b99)):
        raise ImpossibleEvidence("bad-batch-moments", "batch counts must be whole numbers")
    counted = nb > 0
    wrong = nb > timed or b95 > nb or b99 > b95 or b95 > over95 or b99 > over99
    if (counted and wrong) or (not counted and (b95 > 0 or b99 > 0)):
        raise ImpossibleEvidence("inconsistent-counts", _BATCH_COUNTS_RULE)
    return timed if counted else 0
