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

from model_canary.streams.errors import ConfigError
from model_canary.streams.stats.layout import ARMS

IntArray = npt.NDArray[np.int64]


class Completeness:
    """Routed and answered counts per (replica, arm, second), from ``origin`` on."""

    def __init__(self, replicas: int, origin: int = 0) -> None:
        self.replicas = replicas
        self.origin = origin
        self.routed: IntArray = np.zeros((replicas, len(ARMS), 64), dtype=np.int64)
        self.done: IntArray = np.zeros_like(self.routed)
        #: per (replica, arm): every second before this one is complete
        self._next: IntArray = np.full((replicas, len(ARMS)), origin, dtype=np.int64)

    def _slot(self, second: int) -> int:
        i = second - self.origin
        if i < 0:
            raise ConfigError(f"second {second} is before the origin {self.origin}")
        if i >= self.routed.shape[2]:
            grow = max(i + 1, 2 * self.routed.shape[2]) - self.routed.shape[2]
            pad = np.zeros((self.replicas, len(ARMS), grow), dtype=np.int64)
            self.routed = np.concatenate([self.routed, pad], axis=2)
            self.done = np.concatenate([self.done, pad.copy()], axis=2)
        return i

    def add_routed(
        self, second: int, arm: str, counts: npt.ArrayLike, replicas: npt.ArrayLike | None = None
    ) -> None:
        i = self._slot(second)
        idx = self._idx(replicas)
        self.routed[idx, ARMS.index(arm), i] += np.asarray(counts, dtype=np.int64)

    def add_done(
        self, second: int, arm: str, counts: npt.ArrayLike, replicas: npt.ArrayLike | None = None
    ) -> None:
        """Answered or refused requests of ``arm`` routed in ``second``."""
        i = self._slot(second)
        idx = self._idx(replicas)
        self.done[idx, ARMS.index(arm), i] += np.asarray(counts, dtype=np.int64)

    def _idx(self, replicas: npt.ArrayLike | None) -> IntArray:
        if replicas is None:
            return np.arange(self.replicas, dtype=np.int64)
        return np.asarray(replicas, dtype=np.int64).reshape(-1)

    def complete_upto(self, now: int) -> IntArray:
        """(R, arms): the newest second before ``now`` up to which each arm is complete (the
        router has moved past every second before ``now``)."""
        end = now - self.origin
        self._slot(max(now, self.origin))
        nxt = self._next - self.origin
        lo = int(nxt.min())
        if end <= lo:
            return self._next - 1
        span = np.arange(lo, end)
        # Seconds from each arm's current position on: the first that is not complete.
        window = slice(lo, end)
        gap = (self.done[..., window] != self.routed[..., window]) & (span >= nxt[..., None])
        first_gap = np.where(gap.any(axis=-1), lo + np.argmax(gap, axis=-1), end)
        first_gap = np.maximum(first_gap, nxt)
        self._next = first_gap + self.origin
        return self._next - 1

    def watermark(self, now: int) -> IntArray:
        """(R,): the newest second complete in every arm."""
        return np.asarray(self.complete_upto(now).min(axis=1))


def watermark(complete_upto: Mapping[str, int], closed_upto: int) -> int:
    """The newest routed second the tests may use: closed (the router has moved past it) and
    complete in every arm (an arm absent from ``complete_upto`` had nothing routed to it).

    >>> watermark({"canary": 120, "baseline": 61}, closed_upto=121)
    61
    >>> watermark({}, closed_upto=121)
    121
    """
    return min(closed_upto, min(complete_upto.values(), default=closed_upto))
