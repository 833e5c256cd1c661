"""Run agents in process, on an in-memory Kafka: unit tests of the router, the controller, the
workers and the exactly-once loop without a broker (in the spirit of ``bytewax.testing``).

:class:`FakeKafka` holds topics as lists of messages and implements the methods of
confluent-kafka's ``Producer``, ``Consumer`` and ``AdminClient`` that the project uses, with
transactions that ``read_committed`` readers see only once committed (an aborted one is never
seen) and consumer groups whose offsets commit with the transaction (or on their own, for the
at-least-once loop).
:func:`~model_canary.agents.kafka.clients.using` makes every client the agents build come from
it; :func:`run_until_idle` runs an agent's loop until its input is consumed and committed.

>>> from model_canary.streams.settings import Settings
>>> kafka = FakeKafka()
>>> kafka.send("canary.requests", b"hello", key=b"k1")
>>> with using(kafka):
...     producer = new_producer(Settings(), "doc", transactional_id="t1")
...     producer.init_transactions(1)
...     producer.begin_transaction()
...     producer.produce("canary.results", b"answer", b"k1")
...     kafka.read("canary.results")          # not committed yet: invisible
...     producer.commit_transaction(1)
[]
>>> [m.value() for m in kafka.read("canary.results")]
[b'answer']
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from model_canary.agents.kafka.clients import new_producer, using
from model_canary.agents.kafka.eos import ExactlyOnceLoop
from model_canary.streams.headers import RawHeaders

__all__ = ["FakeKafka", "FakeMessage", "new_producer", "run_until_idle", "using"]

Headers = list[tuple[str, bytes | None]]


@dataclass
class FakeMessage:
    """A stored message with confluent-kafka's ``Message`` accessors."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: Headers | None
    _timestamp_ms: int
    _error: KafkaError | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers | None:
        return list(self._headers) if self._headers else None

    def error(self) -> KafkaError | None:
        return self._error

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self._timestamp_ms

    def __len__(self) -> int:
        return len(self._value or b"")


@dataclass
class _Partition:
    messages: list[FakeMessage] = field(default_factory=list)
    #: Offsets of messages written in a transaction that has not committed (or aborted).
    open: set[int] = field(default_factory=set)
    aborted: set[int] = field(default_factory=set)

    def stable(self) -> int:
        """The last stable offset: nothing at or after it is visible to read_committed."""
        return min(self.open) if self.open else len(self.messages)


class FakeKafka:
    """An in-memory cluster: topics, transactions and consumer groups (see the module docs).

    ``partitions`` is the partition count of a topic created on first use.
    """

    def __init__(self, partitions: int = 1) -> None:
        self.default_partitions = partitions
        self.topics: dict[str, list[_Partition]] = {}
        self.configs: dict[str, dict[str, str]] = {}
        self.group_offsets: dict[tuple[str, str, int], int] = {}
        self.lock = threading.RLock()
        self.idle_polls = 0  # consecutive consume calls of group members that found nothing
        #: Called with each message a producer writes (before it is stored); may raise
        #: KafkaException to refuse it, as a broker would.
        self.on_produce: Callable[[str, bytes | None, bytes | None], None] | None = None
        #: Called with each message a producer queues; a KafkaError it returns is the broker
        #: refusing that message *after* it was queued: its delivery report carries the error
        #: and the message is not stored; in a transaction, the transaction must be aborted
        #: (later writes fail with _STATE, the commit with an abortable error), as librdkafka
        #: does.
        self.refuse_queued: (
            Callable[[str, bytes | None, bytes | None], KafkaError | None] | None
        ) = None
        #: Called on each ``abort_transaction``; a KafkaError it returns is the transaction
        #: coordinator refusing the abort (INVALID_TXN_STATE when it is still completing the
        #: previous commit, say): a fatal error, as librdkafka makes it. The producer is then
        #: unusable; a new one with the same transactional id fences it and aborts what it
        #: left open.
        self.refuse_abort: Callable[[], KafkaError | None] | None = None
        #: Called on each ``commit_transaction``; a KafkaError it returns is raised by it and
        #: the transaction stays open (a retriable ``_TIMED_OUT``: the coordinator away).
        self.refuse_commit: Callable[[], KafkaError | None] | None = None
        #: Every producer made, oldest first.
        self.producers: list[FakeProducer] = []
        #: Per transactional id, the current producer epoch and the producer that holds it
        #: (the last to call ``init_transactions``): a producer of an older epoch is fenced.
        self.epochs: dict[str, int] = {}
        self.owners: dict[str, FakeProducer] = {}
        self.generation = 0  # bumped by rebalance()
        #: The partitions the last rebalance moved (None: every one); see rebalance().
        self.moving: frozenset[tuple[str, int]] | None = None
        #: Kafka's ``commit_transaction`` returns once the coordinator has decided, before the
        #: transaction's markers are written to its partitions: until they are, read_committed
        #: readers stop before its writes. True: commits leave their markers unwritten until
        #: :meth:`write_markers` (False: written at once).
        self.hold_markers = False
        self._unmarked: list[tuple[str, int, int]] = []

    # -- the factory of clients (see clients.using) ------------------------------------------
    def producer(self, config: dict[str, Any]) -> FakeProducer:
        producer = FakeProducer(self, config)
        self.producers.append(producer)
        return producer

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        return FakeConsumer(self, config)

    def admin(self, config: dict[str, Any]) -> FakeAdmin:
        return FakeAdmin(self)

    def rebalance(self, moving: Iterable[tuple[str, int]] | None = None) -> None:
        """Make every group member's next ``consume`` or ``poll`` revoke its partitions (its
        ``on_revoke`` callback runs) and take them back at the group's committed offsets (its
        ``on_assign`` runs), as an eager rebalance does.

        ``moving`` (topic, partition) pairs: the partitions the new assignment gives another
        member. A member with the cooperative protocol (``partition.assignment.strategy``
        ``cooperative-sticky``, KIP-429) gives up only those, and keeps consuming the others
        from its positions: ``on_revoke`` gets the ones it loses, and ``on_assign`` only the
        ones it is given (here the same ones back at their committed offsets, as when they
        move away and come back). An eager member gives up everything whatever moves."""
        with self.lock:
            self.moving = None if moving is None else frozenset(moving)
            self.generation += 1

    def write_markers(self) -> None:
        """Write the markers of the transactions committed while ``hold_markers``: their
        writes become visible to read_committed readers."""
        with self.lock:
            for topic, partition, offset in self._unmarked:
                self.topics[topic][partition].open.discard(offset)
            self._unmarked = []

    def time_out(self, transactional_id: str) -> None:
        """The coordinator aborts the open transaction of ``transactional_id`` (it outlived its
        transaction timeout) and bumps the epoch: the producer that held it is fenced."""
        with self.lock:
            owner = self.owners.get(transactional_id)
            if owner is not None:
                owner._abort_written()
            self.epochs[transactional_id] = self.epochs.get(transactional_id, 0) + 1

    # -- topics ------------------------------------------------------------------------------
    def create(self, topic: str, partitions: int | None = None) -> None:
        with self.lock:
            if topic not in self.topics:
                n = partitions or self.default_partitions
                self.topics[topic] = [_Partition() for _ in range(n)]

    def partition_for(self, topic: str, key: bytes | None) -> int:
        self.create(topic)
        n = len(self.topics[topic])
        return zlib.crc32(key) % n if key else 0

    def append(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: RawHeaders | None,
        *,
        in_txn: bool,
    ) -> FakeMessage:
        if self.on_produce is not None:
            self.on_produce(topic, value, key)
        with self.lock:
            p = self.partition_for(topic, key)
            part = self.topics[topic][p]
            msg = FakeMessage(
                topic, p, len(part.messages), key, value, _bytes_headers(headers), _now_ms()
            )
            part.messages.append(msg)
            if in_txn:
                part.open.add(msg.offset())
            return msg

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: RawHeaders | None = None,
    ) -> None:
        """Write one committed message (what a client outside the test would produce)."""
        self.append(topic, value, key, headers, in_txn=False)

    def read(self, topic: str) -> list[FakeMessage]:
        """Every committed message of ``topic`` (read_committed), by partition then offset."""
        with self.lock:
            out = []
            for part in self.topics.get(topic, []):
                stable = part.stable()
                out += [
                    m
                    for m in part.messages[:stable]
                    if m.offset() not in part.aborted and m.offset() not in part.open
                ]
            return out

    def everything(self, topic: str) -> list[FakeMessage]:
        """Every message of ``topic``, aborted ones included (read_uncommitted)."""
        with self.lock:
            return [m for part in self.topics.get(topic, []) for m in part.messages]


class FakeProducer:
    """``Producer``: transactional when its configuration has a ``transactional.id``."""

    def __init__(self, kafka: FakeKafka, config: dict[str, Any]) -> None:
        self.kafka = kafka
        self.config = config
        self.transactional = bool(config.get("transactional.id"))
        self._in_txn = False
        self._written: list[FakeMessage] = []
        self._offsets: list[tuple[str, list[TopicPartition]]] = []
        self._reports: list[tuple[Callable[..., None], KafkaError | None, FakeMessage]] = []
        self._failed: KafkaError | None = None  # a queued write the broker refused
        self._fatal: KafkaError | None = None  # every transactional call raises it
        self._epoch = 0
        self._sent = 0  # how many of ``_written`` were sent (their reports served)
        self.purged = False  # ``purge`` was called

    def _note_fencing(self) -> None:
        """A newer producer took this one's transactional id: it is fenced (fatal)."""
        tid = str(self.config.get("transactional.id"))
        if (
            self._fatal is None
            and self.transactional
            and self.kafka.epochs.get(tid, 0) > self._epoch
        ):
            self._fatal = KafkaError(
                KafkaError._FENCED,
                "Local: This instance has been fenced by a newer instance",
                fatal=True,
            )

    def _check_fatal(self) -> None:
        """Raise the producer's fatal error, if any (fenced, or an earlier fatal refusal)."""
        self._note_fencing()
        if self._fatal is not None:
            raise KafkaException(self._fatal)

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        callback: Callable[..., None] | None = None,
        on_delivery: Callable[..., None] | None = None,
        timestamp: int = 0,
        headers: RawHeaders | None = None,
    ) -> None:
        # confluent-kafka's arguments in its order (a hot loop passes them positionally); the
        # partition and timestamp are the fake broker's choice.
        on_delivery = on_delivery or callback
        if self.transactional and not self._in_txn:
            raise KafkaException(KafkaError(KafkaError._STATE, "not in a transaction"))
        if self._fatal is not None:
            raise KafkaException(KafkaError(KafkaError._FATAL, self._fatal.str(), fatal=True))
        self._note_fencing()
        if self._fatal is not None:
            # The broker refuses a fenced producer's write (it is not stored); the fatal
            # error surfaces at the next transactional call.
            return
        if self._failed is not None:
            raise KafkaException(KafkaError(KafkaError._STATE, "Local: Erroneous state"))
        refused = self.kafka.refuse_queued(topic, value, key) if self.kafka.refuse_queued else None
        on_delivery = on_delivery or self.config.get("on_delivery")
        if refused is not None:
            if self.transactional:
                self._failed = refused
                self._fail_batch(topic, self.kafka.partition_for(topic, key), refused)
            if on_delivery is not None:
                lost = FakeMessage(topic, -1, -1, key, value, _bytes_headers(headers), _now_ms())
                self._reports.append((on_delivery, refused, lost))
            return
        msg = self.kafka.append(topic, value, key, headers, in_txn=self.transactional)
        if self.transactional:
            self._written.append(msg)
        if on_delivery is not None and not self.config.get("delivery.report.only.error"):
            self._reports.append((on_delivery, None, msg))

    def _fail_batch(self, topic: str, partition: int, error: KafkaError) -> None:
        """The broker refuses a whole record batch: every message of ``topic[partition]``
        queued with the refused one (not sent yet) fails with its error, in its delivery
        report too, as librdkafka fails every message of the batch (MSG_SIZE_TOO_LARGE)."""
        batch = [
            m
            for m in self._written[self._sent :]
            if m.topic() == topic and m.partition() == partition
        ]
        if not batch:
            return
        failed = {id(m) for m in batch}
        with self.kafka.lock:
            part = self.kafka.topics[topic][partition]
            for msg in batch:
                part.open.discard(msg.offset())
                part.aborted.add(msg.offset())
        self._written = [m for m in self._written if id(m) not in failed]
        self._reports = [
            (callback, error if id(msg) in failed else e, msg) for callback, e, msg in self._reports
        ]

    def poll(self, timeout: float = 0.0) -> int:
        self._sent = len(self._written)
        reports, self._reports = self._reports, []
        for callback, error, msg in reports:
            callback(error, msg)
        return len(reports)

    def flush(self, timeout: float = 0.0) -> int:
        self.poll()
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        """Drop what is queued (served reports are left to ``poll``/``flush``)."""
        self.purged = True

    def __len__(self) -> int:
        return 0

    def init_transactions(self, timeout: float = 0.0) -> None:
        """Take the transactional id: the previous producer with it is fenced and the
        transaction it left open is aborted (as the coordinator does on InitProducerId)."""
        tid = str(self.config["transactional.id"])
        with self.kafka.lock:
            previous = self.kafka.owners.get(tid)
            if previous is not None and previous is not self:
                previous._abort_written()
            self._epoch = self.kafka.epochs[tid] = self.kafka.epochs.get(tid, 0) + 1
            self.kafka.owners[tid] = self
        self._abort_open()

    def begin_transaction(self) -> None:
        # Local in librdkafka: only a fatal error the producer already knows of is raised (a
        # fencing is learnt at the next call that reaches the broker).
        if self._fatal is not None:
            raise KafkaException(self._fatal)
        if self._in_txn:
            raise KafkaException(KafkaError(KafkaError._STATE, "transaction already open"))
        self._in_txn = True

    def send_offsets_to_transaction(
        self, positions: Sequence[TopicPartition], group: Any, timeout: float = 0.0
    ) -> None:
        self._check_fatal()
        if self._failed is not None:
            raise KafkaException(
                KafkaError(self._failed.code(), self._failed.str(), txn_requires_abort=True)
            )
        self._offsets.append((str(group), list(positions)))

    def commit_transaction(self, timeout: float = 0.0) -> None:
        self.poll()
        self._check_fatal()
        self._require_txn("commit_transaction")
        refused = self.kafka.refuse_commit() if self.kafka.refuse_commit is not None else None
        if refused is not None:
            raise KafkaException(refused)
        if self._failed is not None:
            raise KafkaException(
                KafkaError(self._failed.code(), self._failed.str(), txn_requires_abort=True)
            )
        with self.kafka.lock:
            for msg in self._written:
                if self.kafka.hold_markers:
                    self.kafka._unmarked.append((msg.topic(), msg.partition(), msg.offset()))
                else:
                    self.kafka.topics[msg.topic()][msg.partition()].open.discard(msg.offset())
            for group, positions in self._offsets:
                for tp in positions:
                    self.kafka.group_offsets[group, tp.topic, tp.partition] = tp.offset
        self._reset()

    def abort_transaction(self, timeout: float = 0.0) -> None:
        self._check_fatal()
        self._require_txn("abort_transaction")
        refused = self.kafka.refuse_abort() if self.kafka.refuse_abort is not None else None
        if refused is not None:
            self._fatal = KafkaError(refused.code(), refused.str(), fatal=True)
            raise KafkaException(self._fatal)
        self._abort_open()

    def _require_txn(self, call: str) -> None:
        """librdkafka refuses to end a transaction that was not begun (state Ready)."""
        if self.transactional and not self._in_txn:
            raise KafkaException(
                KafkaError(KafkaError._STATE, f"Local: {call}: Operation not valid in state Ready")
            )

    def _abort_open(self) -> None:
        self._abort_written()
        self._reset()

    def _abort_written(self) -> None:
        """The coordinator's side of an abort: the transaction's writes are aborted (the
        producer itself may not know yet: fenced, it learns at its next call)."""
        with self.kafka.lock:
            for msg in self._written:
                part = self.kafka.topics[msg.topic()][msg.partition()]
                part.open.discard(msg.offset())
                part.aborted.add(msg.offset())
            self._written = []

    def _reset(self) -> None:
        self._sent = 0
        self._failed = None
        self._in_txn = False
        self._written = []
        self._offsets = []


@dataclass
class _Topic:
    partitions: dict[int, Any]
    error: KafkaError | None = None


@dataclass
class _Metadata:
    topics: dict[str, _Topic]
    brokers: dict[int, str] = field(default_factory=lambda: {1: "fake:9092"})


@dataclass
class _PartitionMeta:
    id: int
    leader: int = 1


class FakeConsumer:
    """``Consumer``: a group member (``subscribe``: it is given every partition at once) or a
    reader (``assign``). Reads committed messages only."""

    def __init__(self, kafka: FakeKafka, config: dict[str, Any]) -> None:
        self.kafka = kafka
        self.group = str(config.get("group.id", ""))
        self.eof = str(config.get("enable.partition.eof", "false")).lower() == "true"
        self._topics: list[str] = []
        self._on_assign: Callable[..., None] | None = None
        self._on_revoke: Callable[..., None] | None = None
        self._generation = kafka.generation
        self._positions: dict[tuple[str, int], int] = {}
        self._eof_at: dict[tuple[str, int], int] = {}  # where an end event was given
        self._subscribed = False
        self._revoking = False  # inside on_revoke
        strategy = str(config.get("partition.assignment.strategy", ""))
        #: The cooperative protocol: a rebalance revokes only the partitions that move.
        self.cooperative = strategy.startswith("cooperative")
        self.closed = False
        #: Plain offset commits are lost (a process killed before its commit arrived).
        self.lose_commits = False

    # -- group membership ----------------------------------------------------------------------
    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: Callable[..., None] | None = None,
        on_revoke: Callable[..., None] | None = None,
        **_: Any,
    ) -> None:
        self._topics = list(topics)
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._subscribed = True

    def consumer_group_metadata(self) -> str:
        return self.group

    def commit(
        self, offsets: Sequence[TopicPartition] | None = None, asynchronous: bool = True, **_: Any
    ) -> None:
        """Commit ``offsets`` (default: the positions) for the group, at once."""
        if self.lose_commits:
            return
        with self.kafka.lock:
            for tp in offsets if offsets is not None else self.position(self.assignment()):
                self.kafka.group_offsets[self.group, tp.topic, tp.partition] = tp.offset

    def committed(self, partitions: Sequence[TopicPartition], timeout: float = 0.0) -> list[Any]:
        with self.kafka.lock:
            return [
                TopicPartition(
                    tp.topic,
                    tp.partition,
                    self.kafka.group_offsets.get((self.group, tp.topic, tp.partition), -1001),
                )
                for tp in partitions
            ]

    def _rebalance(self) -> None:
        """Served by consume (as librdkafka serves rebalances from poll): after
        :meth:`FakeKafka.rebalance`, give the partitions up (``on_revoke``), then take them
        again at the committed offsets."""
        if not self._subscribed or self._generation == self.kafka.generation:
            return
        self._generation = self.kafka.generation
        moving = self.kafka.moving
        if self.cooperative and moving is not None:
            self._move(moving)
            return
        if self._positions and self._on_revoke is not None:
            self._revoking = True
            try:
                self._on_revoke(self, [TopicPartition(t, p) for t, p in self._positions])
            finally:
                self._revoking = False
        self._positions = {}
        self._join()

    def _move(self, moving: frozenset[tuple[str, int]]) -> None:
        """A cooperative rebalance: revoke the partitions that move (the others keep their
        positions), then take them back at the committed offsets."""
        lost = [TopicPartition(t, p) for t, p in self._positions if (t, p) in moving]
        if not lost:
            return
        if self._on_revoke is not None:
            self._revoking = True
            try:
                self._on_revoke(self, lost)
            finally:
                self._revoking = False
        for tp in lost:
            del self._positions[tp.topic, tp.partition]
        for tp in self.committed(lost):
            self._positions[tp.topic, tp.partition] = max(tp.offset, 0)
        if self._on_assign is not None:
            self._on_assign(self, [TopicPartition(tp.topic, tp.partition) for tp in lost])

    def _join(self) -> None:
        if not self._subscribed or self._positions:
            return
        self._generation = self.kafka.generation
        for topic in self._topics:
            self.kafka.create(topic)
        assignment = [
            TopicPartition(t, p) for t in self._topics for p in range(len(self.kafka.topics[t]))
        ]
        for tp in self.committed(assignment):
            self._positions[tp.topic, tp.partition] = max(tp.offset, 0)
        if self._on_assign is not None:
            self._on_assign(self, assignment)

    # -- reading -------------------------------------------------------------------------------
    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        self._positions = {}
        for tp in partitions:
            self._seek(tp)

    def seek(self, tp: TopicPartition) -> None:
        """Set the position of an assigned partition (a seek acts on the fetcher of an
        assigned partition; the fake refuses any other). One being revoked is refused too:
        the revocation drops its position (the next assignment starts from the committed
        offset), so a seek there does nothing but cost; the fake refuses it to show a loop
        that does."""
        if (tp.topic, tp.partition) not in self._positions or self._revoking:
            raise KafkaException(
                KafkaError(
                    KafkaError._UNKNOWN_PARTITION,
                    f"{tp.topic}[{tp.partition}] is not assigned"
                    + (" (being revoked)" if self._revoking else ""),
                )
            )
        self._seek(tp)

    def _seek(self, tp: TopicPartition) -> None:
        self.kafka.create(tp.topic)
        part = self.kafka.topics[tp.topic][tp.partition]
        if tp.offset == OFFSET_END:
            offset = part.stable()
        elif tp.offset < 0 or tp.offset == OFFSET_BEGINNING:
            offset = 0
        else:
            offset = tp.offset
        self._positions[tp.topic, tp.partition] = offset

    def assignment(self) -> list[TopicPartition]:
        self._join()
        return [TopicPartition(t, p) for t, p in self._positions]

    def position(self, partitions: Sequence[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self._positions.get((tp.topic, tp.partition), -1)
            )
            for tp in partitions
        ]

    def consume(self, num_messages: int = 1, timeout: float = 0.0) -> list[FakeMessage]:
        self._rebalance()
        self._join()
        out: list[FakeMessage] = []
        with self.kafka.lock:
            for (topic, p), position in list(self._positions.items()):
                part = self.kafka.topics[topic][p]
                stable = part.stable()
                while position < stable and len(out) < num_messages:
                    msg = part.messages[position]
                    position += 1
                    if msg.offset() not in part.aborted:
                        out.append(msg)
                self._positions[topic, p] = position
                if (
                    self.eof
                    and position == stable
                    and len(out) < num_messages
                    and self._eof_at.get((topic, p)) != position
                ):
                    # librdkafka's end-of-partition event: at the last stable offset for
                    # read_committed, once per end reached.
                    self._eof_at[topic, p] = position
                    error = KafkaError(KafkaError._PARTITION_EOF, "Broker: No more messages")
                    out.append(FakeMessage(topic, p, position, None, None, None, 0, error))
            if self._subscribed:
                data = any(m.error() is None for m in out)
                self.kafka.idle_polls = 0 if data else self.kafka.idle_polls + 1
        if not out and timeout:
            time.sleep(min(timeout, 0.001))
        return out

    def poll(self, timeout: float = 0.0) -> FakeMessage | None:
        msgs = self.consume(1, timeout)
        return msgs[0] if msgs else None

    def get_watermark_offsets(self, tp: TopicPartition, **_: Any) -> tuple[int, int]:
        """The low and the high watermark (open transactions' writes included, as Kafka's)."""
        self.kafka.create(tp.topic)
        return 0, len(self.kafka.topics[tp.topic][tp.partition].messages)

    def list_topics(self, topic: str | None = None, timeout: float = 0.0) -> _Metadata:
        return _metadata(self.kafka, topic)

    def offsets_for_times(
        self, partitions: Sequence[TopicPartition], timeout: float = 0.0
    ) -> list[TopicPartition]:
        out = []
        for tp in partitions:
            found = next(
                (
                    m.offset()
                    for m in self.kafka.topics.get(tp.topic, [_Partition()])[tp.partition].messages
                    if m.timestamp()[1] >= tp.offset
                ),
                -1,
            )
            out.append(TopicPartition(tp.topic, tp.partition, found))
        return out

    def close(self) -> None:
        self.closed = True


class FakeAdmin:
    """``AdminClient``: topic creation, metadata and configurations."""

    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka

    def create_topics(self, topics: Iterable[Any], **_: Any) -> dict[str, Future[None]]:
        out = {}
        for new in topics:
            future: Future[None] = Future()
            if new.topic in self.kafka.topics:
                future.set_exception(
                    KafkaException(KafkaError(KafkaError.TOPIC_ALREADY_EXISTS, "exists"))
                )
            else:
                self.kafka.create(new.topic, new.num_partitions)
                self.kafka.configs[new.topic] = dict(new.config or {})
                future.set_result(None)
            out[new.topic] = future
        return out

    def list_topics(self, topic: str | None = None, timeout: float = 0.0) -> _Metadata:
        return _metadata(self.kafka, topic)

    def describe_configs(self, resources: Sequence[Any], **_: Any) -> dict[Any, Future[Any]]:
        out = {}
        for resource in resources:
            future: Future[Any] = Future()
            future.set_result({})  # every topic on the broker's defaults
            out[resource] = future
        return out


def run_until_idle(
    loop: ExactlyOnceLoop, kafka: FakeKafka, *, timeout: float = 10.0, idle_polls: int = 3
) -> None:
    """Run ``loop`` in this thread until its consumer has found nothing ``idle_polls`` times
    in a row and everything it consumed is committed, with nothing left to consume (a commit
    that aborts rewinds it and sends it round again, as a running agent would go on); then it
    closes, as on SIGTERM."""
    stop = threading.Event()
    deadline = time.monotonic() + timeout
    original = loop.on_idle

    def on_idle() -> None:
        if original is not None:
            original()
        if time.monotonic() > deadline:
            stop.set()
        elif kafka.idle_polls >= idle_polls:
            if loop.in_transaction:
                loop.commit()
            if loop.settled and not any(loop.lag().values()):
                stop.set()
            else:
                kafka.idle_polls = 0

    kafka.idle_polls = 0
    loop.on_idle = on_idle
    try:
        loop.run(stop)
    finally:
        loop.on_idle = original


def _metadata(kafka: FakeKafka, topic: str | None) -> _Metadata:
    with kafka.lock:
        names = [topic] if topic is not None else list(kafka.topics)
        topics = {}
        for name in names:
            if name in kafka.topics:
                parts = {p: _PartitionMeta(p) for p in range(len(kafka.topics[name]))}
                topics[name] = _Topic(parts)
        return _Metadata(topics)


def _bytes_headers(headers: RawHeaders | None) -> Headers | None:
    if not headers:
        return None
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in headers]


def _now_ms() -> int:
    return int(time.time() * 1000)
