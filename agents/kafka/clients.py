"""The one place Kafka clients are made, and the ways every agent, command and client uses them.

* :func:`new_producer`, :func:`new_consumer`, :func:`new_reader`, :func:`new_admin` build
  confluent-kafka clients
  from :class:`~model_canary.streams.settings.Settings` through
  :mod:`~model_canary.agents.kafka.config` (defaults, the user's pass-through librdkafka
  settings, librdkafka's log and errors into Python logging). Nothing else in the project calls
  ``Producer(...)`` or ``Consumer(...)`` (a test keeps it so; the benchmark's reference loop is
  the one exception, on purpose). :func:`using` swaps in other clients for the code inside it
  (:mod:`model_canary.agents.testing` runs agents in process on in-memory ones).
* :func:`produce` waits instead of failing when librdkafka's local queue is full
  (``BufferError``): it serves delivery reports and tries again, the back-pressure every
  producing loop needs.
* :class:`LazyProducer` connects on first use, so building a client costs nothing.
* :func:`usable` is the consumer's error handling: end-of-partition events are skipped,
  other errors are logged (rate limited) and skipped, a fatal error raises.
* :func:`fetch` takes a batch without waiting for it to fill: what is there at once, else the
  first message to arrive within the wait (every loop that answers requests reads this way).
  A group member passes a :class:`Held` so that a rebalance served between the two calls
  that make a batch cannot hand it a message its partition's next owner reads again.

>>> lazy = LazyProducer(Settings(bootstrap="kafka:9092"), "canary-doc")  # no connection yet
>>> lazy.connected
False
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, cast

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from model_canary.agents.kafka.config import (
    admin_config,
    consumer_config,
    producer_config,
    reader_config,
)
from model_canary.agents.kafka.errors import wrap
from model_canary.streams.headers import RawHeaders
from model_canary.streams.settings import Settings

log = logging.getLogger(__name__)

#: How long :func:`produce` lets librdkafka send before trying a full queue again.
BACKOFF_S = 0.05
#: At most one log line per consumer error code this often.
ERROR_LOG_INTERVAL_S = 10.0

Delivery = Callable[[KafkaError | None, Message], None]


class ClientFactory(Protocol):
    """What makes clients from librdkafka configurations (confluent-kafka's by default; a
    stand-in must offer the methods the project calls)."""

    def producer(self, config: dict[str, Any]) -> object: ...

    def consumer(self, config: dict[str, Any]) -> object: ...

    def admin(self, config: dict[str, Any]) -> object: ...


class _ConfluentKafka:
    def producer(self, config: dict[str, Any]) -> Producer:
        return Producer(config)

    def consumer(self, config: dict[str, Any]) -> Consumer:
        return Consumer(config)

    def admin(self, config: dict[str, Any]) -> AdminClient:
        return AdminClient(config)


_factory: ClientFactory = _ConfluentKafka()


@contextmanager
def using(factory: ClientFactory) -> Iterator[ClientFactory]:
    """Make every client with ``factory`` inside the block (in every thread)."""
    global _factory
    previous, _factory = _factory, factory
    try:
        yield factory
    finally:
        _factory = previous


def new_producer(settings: Settings, client_id: str, **required: Any) -> Producer:
    """A producer (idempotent, ``acks=all``; ``transactional_id=...`` for a transactional one)."""
    return cast(Producer, _factory.producer(producer_config(settings, client_id, **required)))


def new_consumer(settings: Settings, client_id: str, group_id: str, **required: Any) -> Consumer:
    """A consumer in group ``group_id`` (``read_committed``, offsets committed by the caller)."""
    config = consumer_config(settings, client_id, group_id, **required)
    return cast(Consumer, _factory.consumer(config))


def new_reader(settings: Settings, client_id: str, **required: Any) -> Consumer:
    """A consumer that is assigned partitions and never commits (tails, views, audits)."""
    return cast(Consumer, _factory.consumer(reader_config(settings, client_id, **required)))


def new_admin(settings: Settings) -> AdminClient:
    """An admin client (topics, configurations, groups)."""
    return cast(AdminClient, _factory.admin(admin_config(settings)))


def produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None = None,
    headers: RawHeaders | None = None,
    on_delivery: Delivery | None = None,
) -> None:
    """Produce one message; while the local queue is full, let librdkafka send and retry."""
    while True:
        try:
            if on_delivery is None:
                producer.produce(topic, value, key, headers=headers)
            else:
                producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(BACKOFF_S)


class LazyProducer:
    """A non-transactional producer made on first use; :meth:`produce` applies back-pressure.
    Thread-safe as confluent-kafka's producer is (make it before sharing across threads:
    :attr:`producer`)."""

    def __init__(self, settings: Settings, client_id: str, **required: Any) -> None:
        self.settings = settings
        self.client_id = client_id
        self.required = required
        self._producer: Producer | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = new_producer(self.settings, self.client_id, **self.required)
        return self._producer

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: RawHeaders | None = None,
        on_delivery: Delivery | None = None,
    ) -> None:
        produce(self.producer, topic, value, key, headers, on_delivery)
        self.producer.poll(0)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every message to be delivered; returns how many are still queued."""
        return self._producer.flush(timeout) if self._producer is not None else 0

    def close(self, timeout: float = 10.0) -> int:
        """Flush and forget the producer (a later produce makes a new one)."""
        left = self.flush(timeout)
        self._producer = None
        return left


_last_logged: dict[int, float] = {}


def usable(msg: Message) -> bool:
    """Whether a consumed message carries data. End-of-partition events are not; other errors
    are logged (once per code every :data:`ERROR_LOG_INTERVAL_S`) and skipped; a fatal error
    (the consumer is unusable, e.g. a static member fenced after a broker restart) raises
    :class:`~model_canary.streams.errors.KafkaOperationError`, so the process stops and a
    supervisor restarts it instead of it consuming nothing, silently."""
    err = msg.error()
    if err is None:
        return True
    # The consumer's fatal error event has the code _FATAL but is not always flagged fatal
    # itself (a static member fenced after a coordinator's failover).
    if err.fatal() or err.code() == KafkaError._FATAL:
        raise wrap("consume", err)
    code = err.code()
    if code != KafkaError._PARTITION_EOF:
        now = time.monotonic()
        if now - _last_logged.get(code, -ERROR_LOG_INTERVAL_S) >= ERROR_LOG_INTERVAL_S:
            _last_logged[code] = now
            log.warning("consume error: %s", err.str())
    return False


def consume(consumer: Consumer, num_messages: int, timeout: float) -> list[Message]:
    """The usable messages of one :func:`fetch` (up to ``num_messages``, returning as soon as
    there is one, waiting at most ``timeout`` seconds for it); a failing call raises
    :class:`~model_canary.streams.errors.KafkaOperationError`."""
    try:
        batch = fetch(consumer, num_messages, timeout)
    except KafkaException as exc:
        raise wrap("consume", exc) from None
    return [m for m in batch if usable(m)]


class Held:
    """The message :func:`fetch` has polled but not returned yet, while a second call takes
    what came with it. That call may serve a rebalance (librdkafka runs the rebalance
    callbacks inside consumer calls), and the consumer's position already counts the held
    message although no one has handled it. So, while a message is held:

    * an offset commit made in the callback must not count it: :meth:`cap` the positions;
    * a revocation that takes its partition (:meth:`revoke`) makes :func:`fetch` drop it: the
      partition's next owner (this consumer again, or another) reads it again from the
      committed offset, which is at or before it. Kept, it would be handled twice.

    librdkafka drops such messages itself within one call (a rebalance's version barrier);
    this covers the gap between two calls.

    >>> held = Held()
    >>> held.cap([TopicPartition("requests", 0, 42)])[0].offset  # nothing held: unchanged
    42
    """

    def __init__(self) -> None:
        self.message: Message | None = None
        self.revoked = False

    def _coords(self) -> tuple[str, int, int] | None:
        msg = self.message
        if msg is None or msg.error() is not None:
            return None  # an event (end of partition, an error) moved no position
        offset = msg.offset()
        if offset is None or offset < 0:
            return None
        return msg.topic() or "", msg.partition() or 0, offset

    def revoke(self, partitions: Sequence[TopicPartition]) -> None:
        """The group took ``partitions`` away: drop the held message if it is in one."""
        coords = self._coords()
        if coords is not None and any((tp.topic, tp.partition) == coords[:2] for tp in partitions):
            self.revoked = True

    def cap(self, positions: list[TopicPartition]) -> list[TopicPartition]:
        """``positions`` with the held message's partition no further than the message."""
        coords = self._coords()
        if coords is None:
            return positions
        topic, partition, offset = coords
        return [
            TopicPartition(tp.topic, tp.partition, offset)
            if (tp.topic, tp.partition) == (topic, partition) and tp.offset > offset
            else tp
            for tp in positions
        ]


def fetch(
    consumer: Consumer, max_batch: int, wait_s: float, held: Held | None = None
) -> list[Message]:
    """Up to ``max_batch`` messages (errors and end-of-partition events included: see
    :func:`usable`): at once whatever the consumer has fetched already;
    when it has none, wait up to ``wait_s`` for the first to arrive, then take it with
    whatever came with it.

    ``consume(num_messages=N, timeout=T)`` alone would wait the whole of ``T`` unless ``N``
    messages come (the timeout bounds each wait for the next message, not the call): under a
    steady load below ``N`` per ``T`` every batch would wait ``T``. ``poll`` returns with the
    first message.

    ``held`` (a group member's): the first message is held while the second call runs, and
    dropped when a rebalance served by that call revoked its partition (see :class:`Held`).
    """
    msgs = consumer.consume(num_messages=max_batch, timeout=0)
    if msgs or wait_s <= 0:
        return msgs
    first = consumer.poll(wait_s)
    if first is None:
        return []
    if max_batch == 1:
        return [first]
    if held is None:
        return [first, *consumer.consume(num_messages=max_batch - 1, timeout=0)]
    held.message, held.revoked = first, False
    try:
        rest = consumer.consume(num_messages=max_batch - 1, timeout=0)
    finally:
        revoked, held.message, held.revoked = held.revoked, None, False
    return rest if revoked else [first, *rest]
