"""At-least-once consume-transform-produce (``CANARY_DELIVERY=at-least-once``): the exactly-once
loop without transactions, for users who prefer a few milliseconds to exactly-once.

An output is readable as soon as the broker has it (no transaction to wait for); the consumed
offsets are committed after every output written for them is acknowledged, every second
(:data:`~model_canary.streams.latency.AT_LEAST_ONCE_COMMIT_MS`, through
``Settings.data_commit_policy``; ``CANARY_COMMIT_INTERVAL_MS`` when set). An answer does not
wait for that commit, but the loop does: a commit waits for the outputs it covers to be
acknowledged, so it is made at a turn of the loop at which none is on its way (then it waits
for nothing but the evidence it writes), and committing often would only stall the loop more
often; the interval bounds what is handled again after a crash. Nothing is lost: an input
whose outputs are not all acknowledged is handled again. But an input may be answered twice:
after a crash between writing and committing, or when a batch that failed part way is handled
again (the outputs written before the failure stay). Every result an at-least-once agent
writes carries the ``canary-delivery: at-least-once`` header
(:func:`~model_canary.streams.headers.delivery_headers`): clients drop the repeats by request id
and ``canary audit`` counts them instead of failing on them.

Failures are handled as in the exactly-once loop (:mod:`~model_canary.agents.kafka.eos`): an
input whose handling raises, or whose output the broker refuses, is refused (an error result
and a dead letter) when its batch is handled again. "Abort" cannot undo writes here: it waits
for what was written and rewinds to the offsets this loop last committed.

Evidence (what the ``before_commit`` hook writes, citing :meth:`consumed_ranges`) is written
only once every output of its range is acknowledged, and the offsets are committed after it,
so the ranges an agent's evidence cites follow each other without gaps or overlaps, the range
of an aborted commit is cited again (from the same first offset) and never twice by evidence
that was written: the evaluator counts each input once. Only a crash between the evidence's
acknowledgement and the offsets' commit (a few milliseconds per commit) makes the restarted
agent cite part of a range again: the evaluator then counts the overlap twice rather than lose
what follows it (:mod:`~model_canary.streams.evidence.state`), as it counts twice a request
the router routed twice. A rebalance commits synchronously, so the next owner starts exactly
where the evidence ended.

>>> # loop = data_loop(settings, config, handler, refuse=refuse)  # per settings.delivery
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from model_canary.agents import metrics
from model_canary.agents.kafka.clients import new_producer
from model_canary.agents.kafka.eos import (
    _MESSAGE_ERRORS,
    BatchHandler,
    ExactlyOnceLoop,
    LoopConfig,
    RefuseHandler,
    TxnHooks,
)
from model_canary.streams.latency import CommitPolicy
from model_canary.streams.settings import Settings

log = logging.getLogger(__name__)

#: How long a commit waits for the outputs it covers to be acknowledged.
FLUSH_TIMEOUT_S = 30.0
#: A commit due waits for a moment with no output unacknowledged at most this many times the
#: commit interval, then waits for the outputs (see AtLeastOnceLoop._commit_due).
QUIET_WAIT_FACTOR = 1.0


class AtLeastOnceLoop(ExactlyOnceLoop):
    """Run ``handler`` over batches of ``config.topics`` with at-least-once delivery (see the
    module docs); the same interface as :class:`ExactlyOnceLoop`.

    >>> config = LoopConfig("router", "canary.router", ("canary.requests",), "canary.router.h1")
    >>> # AtLeastOnceLoop(settings, config, handler, refuse=refuse).run(stop_event)
    """

    #: Commit offsets synchronously (set around a revocation).
    _synchronous = False
    #: Since when a commit due has waited for every output to be acknowledged (monotonic s).
    _quiet_wait_since: float | None = None

    @classmethod
    def configured(cls, config: LoopConfig) -> LoopConfig:
        """``config`` with offsets committed on the commit policy's time bound only: answers
        are readable without a commit.

        >>> c = LoopConfig("router", "canary.router", ("canary.requests",), "canary.router.h1")
        >>> AtLeastOnceLoop.configured(c).commit == CommitPolicy.every(c.commit.max_ms)
        True
        """
        return replace(config, commit=CommitPolicy.every(config.commit.max_ms))

    @functools.cached_property
    def _acked(self) -> dict[tuple[str, int], int]:
        """The offsets this loop committed last (a rewind goes back to them: the broker's may
        lag behind while an asynchronous commit is on its way). Made on first use, so that
        the loop has one constructor, :class:`ExactlyOnceLoop`'s."""
        return {}

    def _new_producer(self) -> Producer:
        """An idempotent producer without transactions; failed writes are reported to
        :meth:`_delivered` (only failures: ``delivery.report.only.error``)."""
        extra: dict[str, Any] = {
            "queue.buffering.max.messages": 500_000,
            "delivery.report.only.error": True,
            "on_delivery": self._delivered,
        }
        return new_producer(self.settings, f"canary-{self.config.agent}", **extra)

    def _delivered(self, error: KafkaError | None, _msg: Message) -> None:
        if error is not None and self._out is not None:
            self._out.failures.append((None, error))

    def _input_wait_s(self, now: float) -> float:
        # A commit waiting for the producer to go quiet (_commit_due) is not urgent: wait for
        # input as when no commit is due (an input, or the turn's end, checks again).
        if self._in_txn and self._quiet_wait_since is not None:
            return self.config.poll_timeout_s
        return super()._input_wait_s(now)

    def _commit_due(self) -> None:
        """Commit once every output written is acknowledged: the commit then waits for
        nothing but the evidence it writes, and the loop goes on handling inputs meanwhile.
        Under load outputs are often on their way, so a commit due waits for a
        turn of the loop at which none is (served delivery reports first), at most
        ``QUIET_WAIT_FACTOR`` times the commit interval; then it waits for them."""
        producer = self._producer
        now = time.monotonic()
        if producer is not None and self._pending < self.config.max_in_txn:
            if self._quiet_wait_since is None:
                self._quiet_wait_since = now
            waited_ms = (now - self._quiet_wait_since) * 1000
            producer.poll(0)
            if len(producer) and waited_ms < QUIET_WAIT_FACTOR * self.config.commit.max_ms:
                return
        self._quiet_wait_since = None
        self.commit()

    def _begin(self) -> None:
        self._in_txn = True
        self._txn_started = time.monotonic()
        self._pending = 0
        self._quiet_wait_since = None

    def commit(self) -> None:
        """Wait for every output written since the last commit to be acknowledged; then write
        the evidence (``before_commit``) and wait for it too; then commit the consumed
        offsets. When a write failed, rewind instead (the inputs are handled again, the one
        whose output was refused is refused)."""
        consumer, producer = self._open()
        out = self.output
        began = time.monotonic()
        positions = self._positions()
        if not self._acknowledged(producer, positions):
            return
        if self.hooks.before_commit is not None:
            out.source = None
            self.hooks.before_commit(out)
            if not self._acknowledged(producer, positions):
                return
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        if offsets:
            try:
                # Asynchronous but on a revocation: the loop does not wait for the group
                # coordinator (which holds a plain offset commit up to
                # group.coordinator.append.linger.ms, 5 ms by default). A commit that fails
                # only means these inputs are handled again, which at-least-once allows;
                # closing the consumer waits for commits in flight.
                if self._synchronous:
                    consumer.commit(offsets=offsets, asynchronous=False)
                else:
                    consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:
                self.abort(f"offsets not committed: {exc}")
                return
        self._acked.update(positions)
        self._in_txn = False
        self._pending = 0
        metrics.TXN_COMMIT_SECONDS.labels(self.config.agent).observe(time.monotonic() - began)
        self._committed(offsets)
        if self.hooks.after_commit is not None:
            self.hooks.after_commit()

    def _acknowledged(self, producer: Producer, positions: dict[tuple[str, int], int]) -> bool:
        """Wait for everything written to be acknowledged; False (and rewound) when a write
        failed or was not acknowledged in time."""
        left = producer.flush(FLUSH_TIMEOUT_S)
        failures, self.output.failures = self.output.failures, []
        if left or failures:
            self._write_failed(failures, left, positions)
            return False
        return True

    def _write_failed(
        self,
        failures: list[tuple[Message | None, KafkaError]],
        left: int,
        positions: dict[tuple[str, int], int],
    ) -> None:
        """Some outputs were not written: find the input to refuse, then rewind."""
        attributed = self._quarantine_refused(failures, positions)
        if not attributed and any(e.code() in _MESSAGE_ERRORS for _s, e in failures):
            # A write of one message failed, but which? Handle the range again with every
            # write attributed to its input.
            self._careful.update(positions)
            self.output.attribute(True)
        why = failures[0][1].str() if failures else f"{left} outputs not acknowledged"
        self.abort(why)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A partition given starts at the group's committed offset, whoever committed it; the
        # partitions kept (the cooperative protocol: only some move) keep what this loop
        # committed of them.
        for tp in partitions:
            self._acked.pop((tp.topic, tp.partition), None)
        super()._on_assign(consumer, partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The next owner starts at the committed offsets: they must be where this loop's
        # evidence ended.
        self._synchronous = True
        try:
            if not self._in_txn and self._acked:
                # The last commit may still be on its way: wait until it has arrived.
                acked = [TopicPartition(t, p, o) for (t, p), o in self._acked.items()]
                try:
                    consumer.commit(offsets=acked, asynchronous=False)
                except KafkaException as exc:
                    log.warning(
                        "%s: offsets not committed on revocation: %s", self.config.agent, exc
                    )
            super()._on_revoke(consumer, partitions)
        finally:
            self._synchronous = False
            for tp in partitions:
                self._acked.pop((tp.topic, tp.partition), None)

    def _rewind(self, consumer: Consumer) -> None:
        """Back to the offsets this loop committed (the broker's where it committed none)."""
        super()._rewind(consumer)
        for (topic, partition), offset in self._acked.items():
            consumer.seek(TopicPartition(topic, partition, offset))
            self._range_starts[(topic, partition)] = offset

    def _abort_output(self, producer: Producer, *, replace: bool = True) -> None:
        """Writes cannot be undone: let what was queued go (its inputs are handled again, so
        their answers may come twice), then rewind."""
        producer.flush(FLUSH_TIMEOUT_S)
        # A write refused meanwhile (attributed mode) names the input to refuse.
        failures, self.output.failures = self.output.failures, []
        self._quarantine_refused(failures)


def data_loop(
    settings: Settings,
    config: LoopConfig,
    handler: BatchHandler,
    on_idle: Callable[[], None] | None = None,
    *,
    refuse: RefuseHandler | None = None,
    hooks: TxnHooks | None = None,
) -> ExactlyOnceLoop:
    """The loop of a data-path agent (router, worker): exactly-once, or at-least-once when
    ``settings.delivery`` says so."""
    if settings.exactly_once:
        return ExactlyOnceLoop(settings, config, handler, on_idle, refuse=refuse, hooks=hooks)
    config = replace(config, commit=settings.data_commit_policy)
    return AtLeastOnceLoop(settings, config, handler, on_idle, refuse=refuse, hooks=hooks)
