"""Completeness: up to which routed second every arm's results have arrived.

The router says how many requests it routed to each arm in each second (``routed``
evidence); workers say how many of them they answered or refused. A second is complete for
an arm when the two match and the router has moved past it; the tests may use a second once
it is complete in every arm (the **watermark**), so an arm that lags - a slow worker group, a
stalled partition - is waited for however long it lags, and never makes the faster arm look
worse or better. An arm nothing was routed to is complete by definition (idle is not late).

Vectorised over replicas like the tally.

>>> c = Completeness(1)
>>> c.add_routed(10, "canary", [3]); c.add_routed(10, "baseline", [5])
>>> c.add_done(10, "baseline", [5])
>>> c.complete_upto(12).tolist(), c.watermark(12).tolist()  # the canary's 3 are missing
([[9, 11, 11]], [9])
>>> c.add_done(10, "canary", [3])
>>> c.watermark(12).tolist()
[11]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from model_canary.streams.stats.layout import ARMS

IntArray = npt.NDArray[np.int64]


class Completeness:
    """Routed and answered counts per (replica, arm, second), from ``origin`` on.

    The one implementation of completeness: the simulator runs it over many replicas, the
    evaluator's :class:`~model_canary.streams.evidence.state.RolloutEvidence` over one.

    * A second is complete for an arm when at least as many of its requests were answered
      (served or refused) as were routed; an arm nothing was routed to is complete.
    * ``origin`` may be None: it is then the first second counted. A second before the
      origin extends the window backwards; :meth:`trim` forgets the seconds already used.
    * Routed requests added to a second an arm had passed reopen that arm from there, so
      the answer never depends on when :meth:`complete_upto` was asked.

    >>> c = Completeness(1, origin=None)
    >>> c.add_routed(1000, "canary", [2]); c.add_done(1000, "canary", [2])
    >>> c.watermark(1001).tolist()
    [1000]
    >>> c.add_routed(999, "baseline", [1])  # late routed evidence for an earlier second
    >>> c.watermark(1001).tolist(), c.gaps(1000)
    ([998], [('baseline', 999, 1, 1)])
    >>> c.trim(998); c.origin
    999
    """

    def __init__(self, replicas: int, origin: int | None = 0) -> None:
        self.replicas = replicas
        self.origin = origin
        width = 64 if origin is not None else 0
        self.routed: IntArray = np.zeros((replicas, len(ARMS), width), dtype=np.int64)
        self.done: IntArray = np.zeros_like(self.routed)
        #: per (replica, arm): every second before this one is complete
        self._next: IntArray = np.full((replicas, len(ARMS)), origin or 0, dtype=np.int64)

    def _slot(self, second: int) -> int:
        if self.origin is None:
            self.origin = second
            self._next[...] = second
        if second < self.origin:
            grow = self.origin - second
            pad = np.zeros((self.replicas, len(ARMS), grow), dtype=np.int64)
            self.routed = np.concatenate([pad, self.routed], axis=2)
            self.done = np.concatenate([pad.copy(), self.done], axis=2)
            self.origin = second
        i = second - self.origin
        if i >= self.routed.shape[2]:
            grow = max(i + 1, 2 * self.routed.shape[2], 8) - self.routed.shape[2]
            pad = np.zeros((self.replicas, len(ARMS), grow), dtype=np.int64)
            self.routed = np.concatenate([self.routed, pad], axis=2)
            self.done = np.concatenate([self.done, pad.copy()], axis=2)
        return i

    def add_routed(
        self, second: int, arm: str, counts: npt.ArrayLike, replicas: npt.ArrayLike | None = None
    ) -> None:
        """Requests of ``arm`` routed in ``second``."""
        i = self._slot(second)
        a = ARMS.index(arm)
        if self._added_one(self.routed, a, i, counts, replicas):
            if second < self._next[0, a]:
                self._next[0, a] = second  # look at it again
            return
        idx = self._idx(replicas)
        self.routed[idx, a, i] += np.asarray(counts, dtype=np.int64)
        self._next[idx, a] = np.minimum(self._next[idx, a], second)  # look at it again

    def add_done(
        self, second: int, arm: str, counts: npt.ArrayLike, replicas: npt.ArrayLike | None = None
    ) -> None:
        """Answered or refused requests of ``arm`` routed in ``second``."""
        i = self._slot(second)
        a = ARMS.index(arm)
        if self._added_one(self.done, a, i, counts, replicas):
            return
        idx = self._idx(replicas)
        self.done[idx, a, i] += np.asarray(counts, dtype=np.int64)

    def _added_one(
        self, into: IntArray, a: int, i: int, counts: npt.ArrayLike, replicas: npt.ArrayLike | None
    ) -> bool:
        """The evaluator's one rollout: a list of one int added to ``into[0, a, i]`` on
        numbers (True); False, nothing added, for anything else, or for a sum beyond int64
        (the array path, which wraps it)."""
        if replicas is not None or self.replicas != 1:
            return False
        n = _one_count(counts)
        if n is None:
            return False
        total = int(into[0, a, i]) + n
        if not _INT64_MIN <= total <= _INT64_MAX:
            return False
        into[0, a, i] = total
        return True

    def _idx(self, replicas: npt.ArrayLike | None) -> IntArray | slice:
        if replicas is None:
            return slice(None)  # every replica (a view: cheaper than indexing by an arange)
        return np.asarray(replicas, dtype=np.int64).reshape(-1)

    def complete_upto(self, now: int) -> IntArray:
        """(R, arms): the newest second before ``now`` up to which each arm is complete (the
        router has moved past every second before ``now``)."""
        if self.origin is None:
            return np.full((self.replicas, len(ARMS)), now - 1, dtype=np.int64)
        end = min(now - self.origin, self.routed.shape[2])  # no counts after the window
        nxt = self._next - self.origin
        lo = max(int(nxt.min()), 0)
        first_gap = np.full_like(nxt, now - self.origin)
        if end > lo:
            span = np.arange(lo, end)
            # Seconds from each arm's current position on: the first that is not complete.
            window = slice(lo, end)
            gap = (self.done[..., window] < self.routed[..., window]) & (span >= nxt[..., None])
            first_gap = np.where(gap.any(axis=-1), lo + np.argmax(gap, axis=-1), first_gap)
        self._next = np.maximum(first_gap, nxt) + self.origin
        return np.minimum(self._next, now) - 1

    def watermark(self, now: int) -> IntArray:
        """(R,): the newest second complete in every arm."""
        return np.asarray(self.complete_upto(now).min(axis=1))

    def gaps(self, upto: int, replica: int = 0) -> list[tuple[str, int, int, int]]:
        """For one replica, the arms with requests routed and not answered in seconds up to
        ``upto``: ``(arm, oldest such second, how many seconds, how many requests)``, oldest
        first."""
        if self.origin is None or upto < self.origin:
            return []
        end = min(upto - self.origin + 1, self.routed.shape[2])
        missing = self.routed[replica, :, :end] - self.done[replica, :, :end]
        out = []
        for a, arm in enumerate(ARMS):
            late = np.flatnonzero(missing[a] > 0)
            if late.size:
                total = int(missing[a][late].sum())
                out.append((arm, int(late[0]) + self.origin, int(late.size), total))
        return sorted(out, key=lambda g: g[1])

    def trim(self, upto: int) -> None:
        """Forget seconds ``<= upto`` (they were used; nothing for them is counted again)."""
        if self.origin is None or upto < self.origin:
            return
        cut = min(upto - self.origin + 1, self.routed.shape[2])
        self.routed = self.routed[..., cut:].copy()
        self.done = self.done[..., cut:].copy()
        self.origin = upto + 1
        self._next = np.maximum(self._next, self.origin)

    def counts(self, replica: int = 0) -> dict[int, tuple[IntArray, IntArray]]:
        """For one replica, every second with anything routed or answered: ``(routed,
        done)`` per arm (in :data:`~model_canary.streams.stats.layout.ARMS` order)."""
        if self.origin is None:
            return {}
        r, d = self.routed[replica], self.done[replica]
        used = np.flatnonzero((r != 0).any(axis=0) | (d != 0).any(axis=0))
        return {int(i) + self.origin: (r[:, i].copy(), d[:, i].copy()) for i in used}


def _one_count(counts: object) -> int | None:
    """The count in ``counts`` when it is a list of one int (the evaluator's records), else
    None (the array path converts and checks it)."""
    if type(counts) is list and len(counts) == 1 and type(counts[0]) is int:
        n: int = counts[0]
        return n
    return None


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def watermark(complete_upto: Mapping[str, int], closed_upto: int) -> int:
    """The newest routed second the tests may use: closed (the router has moved past it) and
    complete in every arm (an arm absent from ``complete_upto`` had nothing routed to it).

    >>> watermark({"canary": 120, "baseline": 61}, closed_upto=121)
    61
    >>> watermark({}, closed_upto=121)
    121
    """
    return min(closed_upto, min(complete_upto.values(), default=closed_upto))
