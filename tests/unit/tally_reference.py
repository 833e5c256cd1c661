"""The tally's evidence path as it was before its fast paths (eeba27f), kept as the reference
that ``test_tally_fast_paths.py`` compares the current code with: same records in, same
state and same refusals out.

Only the methods the fast paths replaced are here (``add_served``, ``_add``, ``_fold``,
``_merged``), verbatim; everything else is the tally's own."""

from __future__ import annotations

import numpy as np

from model_canary.streams.stats.layout import (
    ARMS,
    BUCKETS,
    ERRORS,
    OVER_P95,
    OVER_P99,
    TIMED,
    N,
)
from model_canary.streams.stats.tally import (
    TRASH,
    ArrayIn,
    FloatArray,
    ImpossibleEvidence,
    IntArray,
    Tally,
    _ints,
    _moments,
    _Pending,
    _subset,
)


class ReferenceTally(Tally):
    """:class:`Tally` with the evidence path of eeba27f."""

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
        d = deltas
        if np.any(d < 0):
            raise ImpossibleEvidence("negative-count", "counts cannot be negative")
        if np.any(d[..., ERRORS] > d[..., N]) or np.any(d[..., TIMED] > d[..., N] - d[..., ERRORS]):
            raise ImpossibleEvidence("inconsistent-counts", "more errors or timed items than items")
        if np.any(d[..., OVER_P99] > d[..., OVER_P95]) or np.any(d[..., OVER_P95] > d[..., TIMED]):
            raise ImpossibleEvidence(
                "inconsistent-counts", "exceedances must satisfy over_p99 <= over_p95 <= timed"
            )
        moments = None
        if batch is not None:
            moments = _moments(batch, b.shape[0], latency)
            if not np.all(np.isfinite(moments)) or np.any(moments < 0):
                raise ImpossibleEvidence("bad-batch-moments", "batch moments must be finite, >= 0")
        self._add(second, weight_bp, arm, b, deltas, moments, replicas)

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
        if np.any(deltas < 0):
            raise ImpossibleEvidence("negative-count", "counts cannot be negative")
        lo, hi = self.ranges(weight_bp)[arm]
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
        j = self.slot(weight_bp, arm)
        busy = idx[deltas.reshape(len(idx), -1).any(axis=1)]
        self.first_second[busy, j] = np.minimum(self.first_second[busy, j], second)
        item = _Pending(second, j, ARMS.index(arm), idx, buckets, deltas, moments)
        self._pending.setdefault(second, []).append(item)
        if np.any(second <= self.watermark[idx]):
            self._fold([_subset(item, second <= self.watermark[idx])])
            keep = second > self.watermark[idx]
            if np.any(keep):
                self._pending[second][-1] = _subset(item, keep)
            else:
                self._pending[second].pop()
                if not self._pending[second]:
                    del self._pending[second]

    def _fold(self, items: list[_Pending]) -> None:
        first = items[0]
        idx, j, arm = first.replicas, first.j, first.arm
        warm = first.second < self.first_second[idx, j] + self.warmup_s
        if np.all(warm):
            return
        buckets = np.concatenate([it.buckets for it in items], axis=1)
        deltas = np.concatenate([it.deltas for it in items], axis=1)
        deltas[warm] = 0
        for it in items:
            self.totals[idx, j, arm] += np.where(warm[:, None], 0, it.deltas.sum(axis=1))
            if it.batch is not None:
                self.batch[idx, j, arm] += np.where(warm[:, None], 0.0, it.batch)
        keep = deltas.any(axis=(1, 2))
        if np.any(keep):
            self._queue.append((j, arm, idx[keep], buckets[keep], deltas[keep]))
            self._queued_rows += int(buckets[keep].size)
            if self._queued_rows > self._compact_at:
                self._compact()

    def _merged(self) -> list[tuple[tuple[int, int], tuple[IntArray, IntArray, IntArray]]]:
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
            key = reps[real] * (BUCKETS + 1) + bks[real]
            uniq, inverse = np.unique(key, return_inverse=True)
            summed = np.zeros((uniq.size, F), dtype=np.int64)
            np.add.at(summed, inverse, ds[real])
            out.append(((j, arm), (uniq // (BUCKETS + 1), uniq % (BUCKETS + 1), summed)))
        return out
