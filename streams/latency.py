"""What a served request waits for, and what it buys: the latency profiles (``CANARY_LATENCY``)
and the delivery guarantee of the data path (``CANARY_DELIVERY``).

Every hop that moves a request (router, worker) consumes it, produces its output and commits
its offset in one Kafka transaction; a ``read_committed`` reader sees the output only once that
transaction has committed. So a request waits at each hop for the transaction it was handled
in to be committed, and each commit costs a few broker round trips and writes. The profile
says how long a transaction may stay open to carry more requests:

==========  ===============  ==================  ===========  ==================
profile     commit once the  commit at the       linger.ms    fetch.wait.max.ms
            input is drained latest after
            and it is ...
==========  ===============  ==================  ===========  ==================
low         0 ms old         20 ms               0            10
balanced    0 ms old         50 ms               1            50
throughput  (never early)    100 ms              5            100
==========  ===============  ==================  ===========  ==================

"Drained": the loop took everything its consumer had fetched, so nothing waits behind the open
transaction; it commits at once instead of holding the transaction open for more input. Under
load, inputs that arrive during a commit go into the next transaction, so transactions grow
with the load by themselves; the time bound caps their age when the input never drains (a
backlog). ``throughput`` commits on the time bound only: the fewest transactions (and the
fewest evidence records, one per transaction) at the cost of latency. ``linger.ms`` is every
producer's batching delay (agents and clients; a transaction's commit sends at once whatever
lingers). ``fetch.wait.max.ms`` is how long the broker holds a consumer's fetch when there is
nothing to return: new data, or a transaction committing, ends the wait at once, but a
partition the consumer starts reading (a client's new results partition, a loop rewound after
an abort, a rebalance) waits for the fetch in flight first, so up to that long; a shorter wait
costs more fetch requests while idle.

The default is ``balanced``. ``docs/latency.md`` has the figures measured with each.

>>> profile_of(LatencyMode.LOW).commit
CommitPolicy(min_ms=0, max_ms=20)
>>> profile_of("throughput").linger_ms
5
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from model_canary.streams.errors import ConfigError


class LatencyMode(StrEnum):
    """The trade-off between latency and work per transaction (``CANARY_LATENCY``)."""

    LOW = "low"
    BALANCED = "balanced"
    THROUGHPUT = "throughput"


class Delivery(StrEnum):
    """The data path's guarantee (``CANARY_DELIVERY``).

    ``exactly-once`` (the default): router and workers read, write and commit in Kafka
    transactions; each request is answered once for a ``read_committed`` reader.
    ``at-least-once``: no transactions; offsets are committed after the outputs are
    acknowledged. An answer is readable as soon as it is written (no commit to wait for), but
    after a crash or a failed write the same request may be answered again (the results carry
    the ``canary-delivery: at-least-once`` header; clients drop the repeats by request id and
    ``canary audit`` counts them).
    """

    EXACTLY_ONCE = "exactly-once"
    AT_LEAST_ONCE = "at-least-once"


@dataclass(frozen=True, slots=True)
class CommitPolicy:
    """When the exactly-once loop commits its open transaction: once the input is drained
    and the transaction is at least ``min_ms`` old, or at the latest ``max_ms`` after it began.

    >>> policy = CommitPolicy(min_ms=0, max_ms=50)
    >>> policy.due(age_ms=1.0, drained=True), policy.due(age_ms=1.0, drained=False)
    (True, False)
    >>> policy.due(age_ms=50.0, drained=False)
    True
    >>> fixed = CommitPolicy.every(100)  # the time bound only
    >>> fixed.due(age_ms=99.0, drained=True), fixed.wait_s(age_ms=40.0)
    (False, 0.06)
    """

    min_ms: int = 0
    max_ms: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.min_ms <= self.max_ms or self.max_ms < 1:
            raise ConfigError(
                f"a commit policy needs 0 <= min_ms <= max_ms and max_ms >= 1, "
                f"got min_ms={self.min_ms}, max_ms={self.max_ms}"
            )

    @classmethod
    def every(cls, interval_ms: int) -> CommitPolicy:
        """Commit every ``interval_ms``, drained or not (``CANARY_COMMIT_INTERVAL_MS``)."""
        return cls(min_ms=interval_ms, max_ms=interval_ms)

    def due(self, age_ms: float, drained: bool) -> bool:
        """Whether a transaction open for ``age_ms`` must commit now; ``drained``: the loop
        has taken every input its consumer had."""
        return age_ms >= self.max_ms or (drained and age_ms >= self.min_ms)

    def wait_s(self, age_ms: float) -> float:
        """How long the loop may wait for more input with a transaction open for ``age_ms``
        before the commit is due (0: do not wait)."""
        return max(0.0, self.min_ms - age_ms) / 1000


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """Everything ``CANARY_LATENCY`` sets: the commit policy of every exactly-once loop,
    every producer's ``linger.ms`` and every consumer's ``fetch.wait.max.ms``."""

    mode: LatencyMode
    commit: CommitPolicy
    linger_ms: int
    fetch_wait_ms: int


DEFAULT_LATENCY = LatencyMode.BALANCED
DEFAULT_DELIVERY = Delivery.EXACTLY_ONCE

#: How often an at-least-once loop commits its consumed offsets (ms), whatever the profile.
#: An answer never waits for this commit; it bounds what is handled again after a crash
#: (a second's inputs at most, as Kafka consumers' ``auto.commit.interval.ms`` bounds it
#: with five), and each commit first waits for the outputs it covers to be acknowledged,
#: which holds up the loop: the rarer, the fewer requests wait behind one.
AT_LEAST_ONCE_COMMIT_MS = 1000

PROFILES: dict[LatencyMode, LatencyProfile] = {
    LatencyMode.LOW: LatencyProfile(LatencyMode.LOW, CommitPolicy(0, 20), 0, 10),
    LatencyMode.BALANCED: LatencyProfile(LatencyMode.BALANCED, CommitPolicy(0, 50), 1, 50),
    LatencyMode.THROUGHPUT: LatencyProfile(LatencyMode.THROUGHPUT, CommitPolicy.every(100), 5, 100),
}


def latency_mode(value: str | LatencyMode) -> LatencyMode:
    """``value`` as a :class:`LatencyMode`; :class:`ConfigError` naming the choices if not.

    >>> latency_mode("low")
    <LatencyMode.LOW: 'low'>
    >>> latency_mode("fast")
    Traceback (most recent call last):
    ...
    model_canary.streams.errors.ConfigError: latency 'fast' is not one of low, balanced, throughput
    """
    try:
        return LatencyMode(value)
    except ValueError:
        choices = ", ".join(m.value for m in LatencyMode)
        raise ConfigError(f"latency {value!r} is not one of {choices}") from None


def delivery_of(value: str | Delivery) -> Delivery:
    """``value`` as a :class:`Delivery`; :class:`ConfigError` naming the choices if not.

    >>> delivery_of("at-least-once")
    <Delivery.AT_LEAST_ONCE: 'at-least-once'>
    """
    try:
        return Delivery(value)
    except ValueError:
        choices = ", ".join(d.value for d in Delivery)
        raise ConfigError(f"delivery {value!r} is not one of {choices}") from None


def profile_of(mode: str | LatencyMode) -> LatencyProfile:
    """The profile of ``mode``."""
    return PROFILES[latency_mode(mode)]
