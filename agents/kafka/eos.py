"""Exactly-once consume-transform-produce: the loop the router, the controller and the model
workers share.

Messages are consumed in batches and handled inside a Kafka transaction; the consumed offsets
are committed in that same transaction every ``commit_interval_ms`` (or ``max_in_txn``
messages), so for ``read_committed`` readers each input produces its outputs exactly once,
even when the process is killed at any point.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from model_canary.agents import metrics
from model_canary.agents.kafka.config import consumer_config, producer_config
from model_canary.agents.kafka.errors import wrap
from model_canary.streams.errors import KafkaOperationError
from model_canary.streams.headers import RawHeaders
from model_canary.streams.settings import Settings

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0

BatchHandler = Callable[[Sequence[Message], "TxnOutput"], None]


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """How an exactly-once loop consumes and commits."""

    agent: str  # "router", "worker", "controller": metric label and client id
    group_id: str
    topics: tuple[str, ...]
    transactional_id: str
    max_batch: int = 1000
    commit_interval_ms: int = 100
    max_in_txn: int = 50_000
    poll_timeout_s: float = 0.05
    transaction_timeout_ms: int = 10_000
    # How long a crashed instance that is not restarted keeps its partitions.
    session_timeout_ms: int = 10_000


class TxnOutput:
    """What a handler produces into the open transaction."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        #: The producer's own ``produce``, for hot loops: call it directly and fall back to
        #: :meth:`produce` on ``BufferError`` (the local queue is full).
        self.fast_produce = producer.produce

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: RawHeaders | None = None,
    ) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers)
                return
            except BufferError:
                # The local queue is full: let librdkafka send, then try again.
                self._producer.poll(0.05)


class ExactlyOnceLoop:
    """Run ``handler`` over batches of ``config.topics`` inside transactions.

    >>> config = LoopConfig("router", "canary.router", ("canary.requests",), "canary.router.h1")
    >>> # ExactlyOnceLoop(settings, config, handler).run(stop_event)
    """

    def __init__(
        self,
        settings: Settings,
        config: LoopConfig,
        handler: BatchHandler,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.handler = handler
        self.on_idle = on_idle
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._in_txn = False
        self._txn_started = 0.0
        self._pending = 0
        self.processed = 0
        self.assigned: list[TopicPartition] = []
        self._lag_at = 0.0
        self.assignments = 0  # how many times partitions were assigned (rebalances)

    # -- set-up --------------------------------------------------------------------------
    def _open(self) -> tuple[Consumer, Producer]:
        if self._consumer is None or self._producer is None:
            c = self.config
            producer = Producer(
                producer_config(
                    self.settings,
                    f"canary-{c.agent}",
                    transactional_id=c.transactional_id,
                    **{
                        "transaction.timeout.ms": c.transaction_timeout_ms,
                        "queue.buffering.max.messages": 500_000,
                    },
                )
            )
            try:
                producer.init_transactions(30)
            except KafkaException as exc:
                raise wrap(f"init transactions ({c.transactional_id})", exc) from None
            consumer = Consumer(
                consumer_config(
                    self.settings,
                    f"canary-{c.agent}",
                    c.group_id,
                    **{
                        "enable.auto.offset.store": False,
                        # Static membership: a restarted instance takes its partitions back at
                        # once instead of waiting for the group to expel its dead predecessor.
                        "group.instance.id": c.transactional_id,
                        "session.timeout.ms": c.session_timeout_ms,
                    },
                )
            )
            consumer.subscribe(list(c.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
            self._consumer, self._producer = consumer, producer
        return self._consumer, self._producer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)
        self.assignments += 1
        log.info("%s assigned %s", self.config.agent, _describe(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what was handled while we still own the partitions, so the next owner
        # starts exactly after it.
        if self._in_txn:
            self.commit()
        self.assigned = []
        log.info("%s revoked %s", self.config.agent, _describe(partitions))

    # -- the loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; then commit the open transaction and close."""
        consumer, producer = self._open()
        out = TxnOutput(producer)
        c = self.config
        try:
            while not stop.is_set():
                msgs = consumer.consume(num_messages=c.max_batch, timeout=c.poll_timeout_s)
                batch = [m for m in msgs if _usable(m)]
                if batch:
                    if not self._in_txn:
                        self._begin(producer)
                    metrics.BATCH_SIZE.labels(c.agent).observe(len(batch))
                    self.handler(batch, out)
                    self._pending += len(batch)
                    self.processed += len(batch)
                if self.on_idle is not None:
                    self.on_idle()
                if time.monotonic() - self._lag_at >= LAG_INTERVAL_S:
                    self._report_lag()
                if self._in_txn and (
                    time.monotonic() - self._txn_started >= c.commit_interval_ms / 1000
                    or self._pending >= c.max_in_txn
                ):
                    self.commit()
            if self._in_txn:
                self.commit()
        finally:
            self.close()

    def _begin(self, producer: Producer) -> None:
        producer.begin_transaction()
        self._in_txn = True
        self._txn_started = time.monotonic()
        self._pending = 0

    def commit(self) -> None:
        """Commit the open transaction with the consumed offsets; on an abortable error,
        abort and rewind to the last committed offsets so nothing is lost."""
        consumer, producer = self._open()
        began = time.monotonic()
        try:
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            if positions:
                producer.send_offsets_to_transaction(
                    positions, consumer.consumer_group_metadata(), 30
                )
            producer.commit_transaction(30)
        except KafkaException as exc:
            self._recover(exc, consumer, producer)
        else:
            metrics.TXN_COMMIT_SECONDS.labels(self.config.agent).observe(time.monotonic() - began)
        finally:
            self._in_txn = False
            self._pending = 0

    def _recover(self, exc: KafkaException, consumer: Consumer, producer: Producer) -> None:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.txn_requires_abort():
            log.warning("%s: aborting transaction: %s", self.config.agent, err.str())
            metrics.TXN_ABORTS.labels(self.config.agent).inc()
            producer.abort_transaction(30)
            self._rewind(consumer)
            return
        error = wrap("commit transaction", exc)
        if isinstance(err, KafkaError) and err.code() == KafkaError._FENCED:
            raise KafkaOperationError(
                "commit transaction",
                error.code,
                f"{error.description}: another instance uses transactional id "
                f"{self.config.transactional_id!r}; give each instance its own --instance",
            ) from None
        raise error from None

    def _rewind(self, consumer: Consumer) -> None:
        assignment = consumer.assignment()
        if not assignment:
            return
        for tp in consumer.committed(assignment, timeout=30):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages not yet consumed per assigned partition (high watermark - position).

        Uses the high watermark of the last fetch response (no broker round trip: a blocking
        query would wait behind the consumer's long-poll fetch).
        """
        consumer, _ = self._open()
        out: dict[tuple[str, int], int] = {}
        for tp in consumer.position(consumer.assignment()):
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            out[(tp.topic, tp.partition)] = max(0, high - tp.offset) if tp.offset >= 0 else high
        return out

    def _report_lag(self) -> None:
        self._lag_at = time.monotonic()
        try:
            lag = self.lag()
        except KafkaException as exc:
            log.debug("lag not measured: %s", exc)
            return
        for (topic, partition), n in lag.items():
            metrics.LAG.labels(self.config.agent, topic, str(partition)).set(n)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None


def _usable(msg: Message) -> bool:
    err = msg.error()
    if err is None:
        return True
    if err.fatal():
        # The consumer is unusable (a static member fenced after a broker restart, say):
        # going on would consume nothing, silently. Stop, so a supervisor restarts us.
        raise wrap("consume", err)
    if err.code() != KafkaError._PARTITION_EOF:
        log.warning("consume error: %s", err.str())
    return False


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def tune_gc() -> None:
    """Collect reference cycles less often in an agent's hot loop.

    Routing and answering allocate many short-lived objects that form no cycles (header lists,
    records); the default thresholds run the cycle collector every 700 allocations, which cost
    the router about a tenth of its throughput. Cycles are still collected, only less often;
    the objects alive at start-up are frozen out of every collection.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for a graceful stop (commit, then exit)."""
    stop = threading.Event()

    def _set(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping after the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _set)
    signal.signal(signal.SIGINT, _set)
    return stop
