"""How long a fault disturbed the service, from each request's send and answer times."""

from __future__ import annotations

from collections.abc import Mapping


def recovery_seconds(
    sent: Mapping[str, float], served: Mapping[str, float], fault_at: float, slack_s: float = 1.0
) -> float | None:
    """Seconds from ``fault_at`` until every request the fault made late was answered.

    Requests in flight at the fault count as well as those sent after it.

    A request is late when its answer took longer than ``slack_s`` or three times the median
    before the fault, whichever is more (the median: a loaded machine's tail before the fault
    would hide the fault itself). ``0.0`` if none was late; ``None`` if a
    request was never answered. Times are one clock's (``time.monotonic()``).

    >>> sent = {"a": 0.0, "b": 10.0, "c": 11.0, "d": 20.0}
    >>> served = {"a": 0.1, "b": 15.0, "c": 15.0, "d": 20.1}
    >>> recovery_seconds(sent, served, fault_at=9.0)
    6.0
    """
    before = sorted(served[r] - t for r, t in sent.items() if r in served and served[r] < fault_at)
    median = before[len(before) // 2] if before else 0.0
    limit = max(slack_s, 3 * median)
    drained = None
    for rid, t in sent.items():
        arrival = served.get(rid)
        if arrival is None:
            return None
        if arrival < fault_at:
            continue
        if arrival - t > limit:
            drained = max(drained or arrival, arrival)
    return 0.0 if drained is None else round(drained - fault_at, 2)
