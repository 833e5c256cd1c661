"""Exactly-once consume-transform-produce: the loop the router, the controller and the model
workers share.

Messages are consumed in batches and handled inside a Kafka transaction; the consumed offsets
are committed in that same transaction, so for ``read_committed`` readers each input produces
its outputs exactly once, even when the process is killed at any point.

When to commit is the loop's :class:`~model_canary.streams.latency.CommitPolicy`
(``CANARY_LATENCY``): as soon as the input is drained (everything the consumer had fetched was
handled) and the transaction is ``min_ms`` old, at the latest ``max_ms`` after it began, or
once it holds ``max_in_txn`` inputs. A transaction is never held open waiting for input that
is not there: a request waits for its own commit, not for the next ones.

When code fails instead of the process, nothing is committed that was not handled:

* An open transaction is **aborted, never committed**, when the loop stops on an error, a
  commit that failed without an error state included (a timeout past the retry deadline, the
  coordinator away): no offset is committed, so the next owner (or the restarted agent) starts
  from the committed offsets and handles the whole batch.
* A handler that raises for one input (a bug, or a write Kafka refuses for that message) aborts
  the transaction; the input it was handling (``TxnOutput.source``) is *quarantined*, the batch
  is handled again, and the quarantined input is given to the agent's ``refuse`` callback (an
  error result and a dead letter, written in the new transaction) instead of the handler. An
  input cannot become a poison pill that stops the agent on every restart.
* A write that fails after it was queued (the broker refuses one message) surfaces when the
  transaction commits: the loop aborts, handles the same inputs again with every write
  attributed to its input, finds which input's output failed, and refuses that input. The
  broker refuses a whole record batch (every message of it gets the error), so when the
  failure is pinned on several inputs they are handled again one at a time, each input's
  writes sent on their own, and only the input whose own write fails is refused.
* A commit made when the group takes the partitions away (a rebalance) fails the same way as
  the loop's own: the transaction is aborted, no offset is committed, and the next owner
  handles the range again from the committed offsets (it finds the failed write as above).
  Inside librdkafka's rebalance callback the loop only aborts: no rewind (the next assignment
  starts from the committed offsets), no backoff, and what it must raise (too many aborts, a
  zombie) or a producer it must replace waits until the callback has returned. With the
  cooperative protocol (``partition.assignment.strategy`` ``cooperative-sticky``) a rebalance
  takes only the partitions that move: the aborted transaction had consumed those the loop
  keeps too, and no new assignment rewinds them, so the loop does once the callback has
  returned (what that fetch returned is read again).
* A rebalance served between the two consumer calls that make a batch (librdkafka runs the
  rebalance callbacks inside them) finds the first message polled but not handled: the commit
  made on the revocation stops before it, and the batch drops it when its partition was
  revoked (its next owner reads it again from the committed offset). Kept, it was handled
  twice (:class:`~model_canary.agents.kafka.clients.Held`).
* An abort refused with a fatal error (``INVALID_TXN_STATE``: the coordinator was still
  completing the previous commit; or the producer fenced by the broker after this process
  stalled past its transaction timeout) replaces the producer: a new one with the same
  transactional id fences the old one and the coordinator aborts what it left open; the old
  one is purged. Fenced while it did not stall (the time spent retrying a commit is not a
  stall), another instance has its transactional id: the loop raises. A loop that is stopping
  does not replace its producer.
* Failures that are not about one message (the broker away, a topic not writable) abort and
  retry with a backoff; after ``max_failures`` in a row without a commit, the loop raises.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.kafka.clients import Held, fetch, new_consumer, new_producer, usable
from model_canary.agents.kafka.errors import wrap
from model_canary.agents.kafka.limits import PRODUCER_DEFAULT_MAX, OutputLimits
from model_canary.agents.kafka.watchdog import Watchdog
from model_canary.streams.errors import KafkaOperationError, OutputRefusedError
from model_canary.streams.headers import RawHeaders
from model_canary.streams.latency import CommitPolicy
from model_canary.streams.messages import OffsetRange
from model_canary.streams.settings import Settings

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0
#: How long a commit is retried on retriable errors (a cluster electing new leaders and
#: coordinators after a node failed) before the agent gives up.
RETRY_S = 60.0
#: A transactional call (30 s timeout) still blocked after this long is a hang: the agent exits.
STUCK_S = 45.0
#: The longest a loop waits for input in one call, so that a stop request is seen in time.
STOP_CHECK_S = 1.0

BatchHandler = Callable[[Sequence[Message], "TxnOutput"], None]
#: ``refuse(out, msg, reason, detail)``: answer an input the agent cannot handle (an error
#: result and a dead letter), inside the open transaction.
RefuseHandler = Callable[["TxnOutput", Message, str, str], None]

# Kafka errors about one message (not the cluster or the client): retrying the same message
# fails the same way, so the input is refused instead.
_MESSAGE_ERRORS = frozenset(
    code
    for name in (
        "MSG_SIZE_TOO_LARGE",
        "INVALID_MSG_SIZE",
        "INVALID_MSG",
        "RECORD_LIST_TOO_LARGE",
        "INVALID_RECORD",
        "INVALID_TIMESTAMP",
        "_INVALID_ARG",
    )
    if (code := getattr(KafkaError, name, None)) is not None
)
_TOO_LARGE = frozenset(
    code
    for name in ("MSG_SIZE_TOO_LARGE", "INVALID_MSG_SIZE", "RECORD_LIST_TOO_LARGE")
    if (code := getattr(KafkaError, name, None)) is not None
)

Coords = tuple[str, int, int]


def refusal_reason(error: KafkaError) -> str:
    """The refusal reason for a Kafka error about one message: ``too-large`` for every size
    error, else Kafka's error name in lower case with dashes.

    >>> refusal_reason(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    'too-large'
    >>> refusal_reason(KafkaError(KafkaError.INVALID_RECORD))
    'invalid-record'
    """
    if error.code() in _TOO_LARGE:
        return "too-large"
    return error.name().strip("_").lower().replace("_", "-")


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The :class:`KafkaError` a :class:`KafkaException` carries (None for anything else).

    >>> kafka_error(KafkaException(KafkaError(KafkaError._STATE))).name()
    '_STATE'
    >>> kafka_error(ValueError("no")) is None
    True
    """
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        err: KafkaError = exc.args[0]
        return err
    return None


def message_error(exc: BaseException) -> KafkaError | None:
    """The Kafka error in ``exc`` when it is about one message (see :data:`_MESSAGE_ERRORS`)."""
    err = kafka_error(exc)
    return err if err is not None and err.code() in _MESSAGE_ERRORS else None


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """How an exactly-once loop consumes and commits."""

    agent: str  # "router", "worker", "controller": metric label and client id
    group_id: str
    topics: tuple[str, ...]
    transactional_id: str
    max_batch: int = 1000
    #: When to commit (``Settings.commit_policy``: the latency profile's, or a fixed interval).
    commit: CommitPolicy = field(default_factory=CommitPolicy)
    max_in_txn: int = 50_000
    #: How long one turn waits for input when no transaction is open.
    poll_timeout_s: float = 0.05
    transaction_timeout_ms: int = 10_000
    # How long a crashed instance that is not restarted keeps its partitions.
    session_timeout_ms: int = 10_000
    #: Transactions aborted in a row (no commit in between) before the loop gives up.
    max_failures: int = 8
    #: librdkafka's ``partition.assignment.strategy``; ``range`` keeps partition ``p`` of
    #: every topic with one member (co-partitioned inputs, such as the label joiner's).
    assignment_strategy: str | None = None


@dataclass(frozen=True, slots=True)
class TxnHooks:
    """What an agent does around each transaction.

    * ``before_commit(out)``: write what the agent aggregated over the transaction (evidence,
      say) into it, just before it commits;
    * ``after_commit()``: the transaction is durable (local state may now be trusted);
    * ``on_abort()``: the transaction was aborted: forget local state it would have written;
    * ``on_assign(partitions)`` / ``on_revoke(partitions)``: the group gave or took
      partitions (restore or drop per-partition state; a revocation's open transaction is
      committed first, or aborted when it cannot be).
    """

    before_commit: Callable[[TxnOutput], None] | None = None
    after_commit: Callable[[], None] | None = None
    on_abort: Callable[[], None] | None = None
    on_assign: Callable[[list[TopicPartition]], None] | None = None
    on_revoke: Callable[[list[TopicPartition]], None] | None = None


#: confluent-kafka's ``produce`` arguments between ``key`` and ``headers`` at their defaults
#: (``partition`` -1: the partitioner's choice; ``callback``, ``on_delivery``: none; ``timestamp``
#: 0: now), for a call that passes ``headers`` positionally.
PRODUCE_DEFAULTS = (-1, None, None, 0)


class TxnOutput:
    """What a handler produces into the open transaction.

    A handler sets ``source`` to the input it is working on, so a failure can be pinned on that
    input. :meth:`produce` refuses, before writing anything, a message larger than its topic
    takes (:class:`OutputRefusedError`); ``fast_produce`` is the producer's own ``produce`` for
    hot loops that checked sizes themselves (call :meth:`produce` on ``BufferError``). It takes
    confluent-kafka's arguments, also positionally in their order (:data:`PRODUCE_DEFAULTS`):
    ``fast_produce(topic, value, key, *PRODUCE_DEFAULTS, headers)`` gives no keyword to look up,
    which cost confluent-kafka about a fifth of a plain produce (measured in process).
    """

    def __init__(self, producer: Producer, limits: OutputLimits) -> None:
        self._producer = producer
        self.limits = limits
        self.source: Message | None = None
        self.fast_produce: Callable[..., None] = producer.produce
        #: Writes that failed after being queued, with the input they were for (attributed
        #: mode only).
        self.failures: list[tuple[Message | None, KafkaError]] = []
        self._attributed = False

    @property
    def attributed(self) -> bool:
        return self._attributed

    def use(self, producer: Producer) -> None:
        """Write through ``producer`` from now on (the loop replaced a failed one)."""
        self._producer = producer
        self.attribute(self._attributed)

    def attribute(self, on: bool) -> None:
        """Attribute every write to its input (a delivery callback each: slower, so only while
        a failed write is being tracked down)."""
        self._attributed = on
        self.fast_produce = self._produce_attributed if on else self._producer.produce

    def _produce_attributed(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        _partition: int = -1,
        _callback: object = None,
        _on_delivery: object = None,
        _timestamp: int = 0,
        headers: RawHeaders | None = None,
    ) -> None:
        # The arguments of confluent-kafka's produce, in its order (partition, callbacks and
        # timestamp at their defaults: what the hot loops pass).
        callback = functools.partial(self._delivered, self.source)
        self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=callback)

    def _delivered(self, source: Message | None, error: KafkaError | None, _msg: object) -> None:
        if error is not None:
            self.failures.append((source, error))

    def send(self) -> None:
        """Send what is queued and serve its delivery reports (a write refused is then in
        :attr:`failures`, in attributed mode)."""
        self._producer.flush(30)

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: RawHeaders | None = None,
        partition: int | None = None,
    ) -> None:
        """Write one message into the transaction (to ``partition`` when given, else by its
        key); :class:`OutputRefusedError` (nothing written) when Kafka would refuse this
        message whatever the retries."""
        problem = self.limits.check(topic, value, key, headers)
        if problem is not None:
            raise OutputRefusedError("too-large", problem)
        while True:
            try:
                if partition is None:
                    self.fast_produce(topic, value, key, headers=headers)
                else:
                    self._producer.produce(topic, value, key, headers=headers, partition=partition)
                return
            except BufferError:
                # The local queue is full: let librdkafka send, then try again.
                self._producer.poll(0.05)
            except KafkaException as exc:
                err = message_error(exc)
                if err is None:
                    raise
                raise OutputRefusedError(refusal_reason(err), f"{topic}: {err.str()}") from None


class ExactlyOnceLoop:
    """Run ``handler`` over batches of ``config.topics`` inside transactions (see the module
    docs for what happens when it fails).

    >>> config = LoopConfig("router", "canary.router", ("canary.requests",), "canary.router.h1")
    >>> # ExactlyOnceLoop(settings, config, handler, refuse=refuse).run(stop_event)
    """

    def __init__(
        self,
        settings: Settings,
        config: LoopConfig,
        handler: BatchHandler,
        on_idle: Callable[[], None] | None = None,
        *,
        refuse: RefuseHandler | None = None,
        hooks: TxnHooks | None = None,
    ) -> None:
        self.settings = settings
        self.config = self.configured(config)
        self.handler = handler
        self.on_idle = on_idle
        self.refuse = refuse
        self.hooks = hooks or TxnHooks()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._out: TxnOutput | None = None
        self._in_txn = False
        self._txn_started = time.monotonic()
        self._turn_started = time.monotonic()  # when the loop last came round
        #: Time spent on calls that failed and were retried, in this turn and in the open
        #: transaction (the loop running, not stalling: see _stalled_s).
        self._retried_s = 0.0
        self._txn_retried_s = 0.0
        self._pending = 0
        self.processed = 0
        self.assigned: list[TopicPartition] = []
        self._lag_at = 0.0
        self.assignments = 0  # how many times partitions were assigned (rebalances)
        #: Inputs to refuse instead of handle, with (reason, detail), until committed.
        self.quarantine: dict[Coords, tuple[str, str]] = {}
        self._refusals: dict[Coords, int] = {}  # how often each input's refusal failed
        #: While an aborted range is handled again: the positions it ends at, per partition.
        self._careful: dict[tuple[str, int], int] = {}
        self._one_by_one = False  # handle the careful range one input at a time
        self._failures = 0  # transactions aborted since the last commit
        #: Per input partition, the first offset the open transaction consumes (the position
        #: at the last commit or rewind, or the first message seen after an assignment).
        self._range_starts: dict[tuple[str, int], int] = {}
        self._watchdog = Watchdog(STUCK_S, self._stuck)
        self._revoking = False  # inside the revocation callback
        #: What a revocation's failed commit left to do once the callback returned: an error
        #: to raise, a producer to replace.
        self._deferred: Exception | None = None
        self._replace_deferred = False
        #: A revocation's failed commit aborted a transaction that also consumed partitions
        #: this loop keeps (the cooperative protocol): they are rewound once it has returned.
        self._rewind_deferred = False
        #: While the before-commit hook runs: the positions the commit sends (read once).
        self._commit_positions: list[TopicPartition] | None = None
        #: The message a fetch holds while a rebalance may be served (see clients.Held).
        self._held = Held()

    @classmethod
    def configured(cls, config: LoopConfig) -> LoopConfig:
        """``config`` as this kind of loop runs it (the exactly-once loop: unchanged).

        >>> c = LoopConfig("router", "canary.router", ("canary.requests",), "canary.router.h1")
        >>> ExactlyOnceLoop.configured(c) == c
        True
        """
        return config

    # -- set-up --------------------------------------------------------------------------
    def _open(self) -> tuple[Consumer, Producer]:
        if self._consumer is None or self._producer is None:
            c = self.config
            producer = self._new_producer()
            consumer = new_consumer(
                self.settings,
                f"canary-{c.agent}",
                c.group_id,
                **{
                    "enable.auto.offset.store": False,
                    # Static membership: a restarted instance takes its partitions back at
                    # once instead of waiting for the group to expel its dead predecessor.
                    "group.instance.id": c.transactional_id,
                    "session.timeout.ms": c.session_timeout_ms,
                    **(
                        {"partition.assignment.strategy": c.assignment_strategy}
                        if c.assignment_strategy
                        else {}
                    ),
                },
            )
            consumer.subscribe(list(c.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
            admin = Admin(self.settings)
            producer_max = int(
                self.settings.extra_config.get("message.max.bytes", PRODUCER_DEFAULT_MAX)
            )
            self._out = TxnOutput(producer, OutputLimits(admin.topic_config, producer_max))
            self._consumer, self._producer = consumer, producer
        return self._consumer, self._producer

    def _new_producer(self) -> Producer:
        """The transactional producer, its transactions initialised (fencing any predecessor
        with the same transactional id)."""
        c = self.config
        extra = {
            "transaction.timeout.ms": c.transaction_timeout_ms,
            "queue.buffering.max.messages": 500_000,
        }
        producer = new_producer(
            self.settings, f"canary-{c.agent}", transactional_id=c.transactional_id, **extra
        )
        try:
            self._watched("init transactions", lambda: producer.init_transactions(30))
        except KafkaException as exc:
            raise wrap(f"init transactions ({c.transactional_id})", exc) from None
        return producer

    @property
    def in_transaction(self) -> bool:
        """A transaction is open (inputs handled, not committed yet)."""
        return self._in_txn

    @property
    def settled(self) -> bool:
        """Nothing handled is uncommitted, and no aborted range is being handled again."""
        return not self._in_txn and not self._careful

    @property
    def output(self) -> TxnOutput:
        """The transaction's output (opens the clients on first use)."""
        self._open()
        assert self._out is not None
        return self._out

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Eager protocol: every partition (all were revoked before). Cooperative: only the
        # partitions added; those kept go on where they are.
        given = {(tp.topic, tp.partition) for tp in partitions}
        kept = [tp for tp in self.assigned if (tp.topic, tp.partition) not in given]
        self.assigned = [*kept, *partitions]
        self.assignments += 1
        for tp in given:
            self._range_starts.pop(tp, None)
        log.info("%s assigned %s", self.config.agent, _describe(partitions))
        if self.hooks.on_assign is not None:
            self.hooks.on_assign(list(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what was handled while we still own the partitions, so the next owner
        # starts exactly after it. This runs inside librdkafka's rebalance callback: a failed
        # commit is aborted without rewinding or backing off (the next assignment starts from
        # the committed offsets), and what the loop must raise is raised once the callback
        # has returned (:meth:`_after_rebalance`).
        self._held.revoke(partitions)
        if self._in_txn:
            self._revoking = True
            try:
                self.commit()
            except Exception as exc:
                self._deferred = exc
            finally:
                self._revoking = False
        # Eager protocol: every partition. Cooperative: only those that move; the others are
        # kept, and so is what the loop knows of them.
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.assigned = [tp for tp in self.assigned if (tp.topic, tp.partition) not in revoked]
        if not self.assigned:
            self._rewind_deferred = False  # no partition left to rewind
        # The range being handled again carefully goes with the partitions (their next owner
        # starts from the committed offsets), and so does the decision to handle it one input
        # at a time: kept, the next failure pinned on several inputs would refuse them all.
        for tp in revoked:
            self._careful.pop(tp, None)
            self._range_starts.pop(tp, None)
        if not self._careful:
            self._one_by_one = False
        log.info("%s revoked %s", self.config.agent, _describe(partitions))
        if self.hooks.on_revoke is not None:
            self.hooks.on_revoke(list(partitions))

    # -- the loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; then commit the open transaction and close. If
        anything raises, the open transaction is aborted (never committed) before closing."""
        consumer, _ = self._open()
        out = self.output
        c = self.config
        self._turn_started = time.monotonic()
        try:
            while not stop.is_set():
                now = self._turn_started = time.monotonic()
                self._retried_s = 0.0
                wait = self._input_wait_s(now)
                msgs = fetch(consumer, c.max_batch, wait, self._held)
                if self._after_rebalance():
                    msgs = []  # read again from the committed offsets
                # usable() only for the rare event or error: a call per message costs.
                batch = [m for m in msgs if m.error() is None or usable(m)]
                if batch:
                    if len(self._range_starts) < len(self.assigned):
                        self._note_starts(batch)
                    if not self._in_txn:
                        self._begin()
                    metrics.BATCH_SIZE.labels(c.agent).observe(len(batch))
                    if self._handle(batch, out):
                        self._pending += len(batch)
                        self.processed += len(batch)
                if self.on_idle is not None:
                    self.on_idle()
                if time.monotonic() - self._lag_at >= LAG_INTERVAL_S:
                    self._report_lag()
                if self._in_txn and (
                    self._pending >= c.max_in_txn
                    or c.commit.due(
                        (time.monotonic() - self._txn_started) * 1000,
                        drained=len(msgs) < c.max_batch,
                    )
                ):
                    self._commit_due()
            if self._in_txn:
                self.commit()
        except BaseException:
            try:
                self.abort("the loop stopped on an error", retrying=False)
            except Exception:
                log.exception("%s: could not abort the open transaction", c.agent)
            raise
        finally:
            self.close()

    def _input_wait_s(self, now: float) -> float:
        """How long this turn may wait for input."""
        if self._in_txn:
            # Waits for more input at most STOP_CHECK_S at a time, so that ``stop`` is seen
            # even when the policy holds the transaction open for long.
            age_ms = (now - self._txn_started) * 1000
            return min(self.config.commit.wait_s(age_ms), STOP_CHECK_S)
        return self.config.poll_timeout_s

    def _commit_due(self) -> None:
        """The commit policy says the open transaction is due: commit it."""
        self.commit()

    def _after_rebalance(self) -> bool:
        """What a revocation left to do outside librdkafka's callback: raise its error (too
        many aborts in a row, a zombie), replace a producer whose abort was refused, rewind
        the partitions kept after an abort (True: what the fetch returned is dropped, it is
        read again)."""
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            raise deferred
        if self._replace_deferred:
            self._replace_deferred = False
            self._replace_producer()
        if self._rewind_deferred:
            self._rewind_deferred = False
            if self._consumer is not None:
                self._rewind(self._consumer)
                return True
        return False

    def _note_starts(self, batch: Sequence[Message]) -> None:
        starts = self._range_starts
        for msg in batch:
            tp = (msg.topic() or "", msg.partition() or 0)
            if tp not in starts:
                starts[tp] = msg.offset() or 0

    def consumed_ranges(self) -> tuple[OffsetRange, ...]:
        """The input offsets the open transaction consumed, per partition (first..last,
        inclusive; transaction markers in between included): what its outputs derive from.

        >>> # ExactlyOnceLoop(...).consumed_ranges()  ->  (OffsetRange(topic=..., ...), ...)
        """
        if self._consumer is None:
            return ()
        out = []
        positions = self._commit_positions
        if positions is None:
            positions = self._consumed(self._consumer)
        for tp in positions:
            start = self._range_starts.get((tp.topic, tp.partition))
            if start is not None and tp.offset > start:
                out.append(
                    OffsetRange(
                        topic=tp.topic, partition=tp.partition, first=start, last=tp.offset - 1
                    )
                )
        return tuple(sorted(out, key=lambda r: (r.topic, r.partition)))

    def _begin(self) -> None:
        _, producer = self._open()
        producer.begin_transaction()
        self._in_txn = True
        self._txn_started = time.monotonic()
        self._txn_retried_s = 0.0
        self._pending = 0

    def _handle(self, batch: Sequence[Message], out: TxnOutput) -> bool:
        """Handle a batch in the open transaction; False when it failed (and was aborted)."""
        careful = bool(self._careful) and any(
            (m.topic() or "", m.partition() or 0) in self._careful for m in batch
        )
        try:
            if self.quarantine or (careful and self._one_by_one):
                self._handle_carefully(batch, out, one_by_one=careful and self._one_by_one)
            else:
                out.source = None
                self.handler(batch, out)
            return True
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise
            self._handler_failed(exc, out.source)
            return False

    def _handle_carefully(self, batch: Sequence[Message], out: TxnOutput, one_by_one: bool) -> None:
        run: list[Message] = []

        def flush_run() -> None:
            if run:
                out.source = run[0] if len(run) == 1 else None
                self.handler(list(run), out)
                run.clear()

        for msg in batch:
            refusal = self.quarantine.get(_coords(msg))
            if refusal is not None:
                flush_run()
                out.source = msg
                if self.refuse is None:
                    raise KafkaOperationError(
                        "handle", "REFUSED", f"{_at(msg)}: {refusal[1]} (no refusal path)"
                    )
                self.refuse(out, msg, *refusal)
            else:
                run.append(msg)
                if one_by_one:
                    flush_run()
                    # Its writes in a record batch of their own: a refusal names it alone.
                    out.send()
        flush_run()

    def _handler_failed(self, exc: Exception, source: Message | None) -> None:
        err = message_error(exc)
        infra = err is None and isinstance(exc, KafkaException | KafkaOperationError)
        if isinstance(exc, OutputRefusedError):
            reason, detail = exc.reason, str(exc)
        elif err is not None:
            reason, detail = refusal_reason(err), err.str()
        else:
            reason, detail = "internal-error", f"{type(exc).__name__}: {exc}"
        positions = self._positions()
        consumer, producer = self._open()
        if self._in_txn:
            self._in_txn = False
            self._pending = 0
            if self._abort_attributing(detail, consumer, producer, self.output, positions):
                # A write refused after it was queued put the transaction in an error state,
                # so the handler's next write failed: the refused write's input is the one
                # to refuse (now quarantined), not the input the handler was on.
                return
        if infra:
            log.warning("%s: %s; aborted, retrying", self.config.agent, exc)
            if _in_error_state(exc):
                # The transaction failed under the handler (a write refused after queueing,
                # with no attribution yet): handle the range again attributing every write.
                self._careful.update(positions)
                self.output.attribute(True)
            return
        if source is not None:
            log.error(
                "%s: %s failed (%s); it will be refused",
                self.config.agent,
                _at(source),
                detail,
                exc_info=exc,
            )
            coords = _coords(source)
            if coords in self.quarantine:
                # Its refusal failed too: nothing more can be done for it here.
                self._refusals[coords] = self._refusals.get(coords, 0) + 1
                if self._refusals[coords] >= 2:
                    raise KafkaOperationError(
                        "refuse", "REFUSAL_FAILED", f"{_at(source)} could not be refused: {detail}"
                    ) from exc
            self.quarantine[coords] = (reason, detail[:1000])
        else:
            log.error(
                "%s: a batch failed (%s); handling it again one input at a time",
                self.config.agent,
                detail,
                exc_info=exc,
            )
            self._careful.update(positions)
            self._one_by_one = True

    # -- committing ----------------------------------------------------------------------
    def commit(self) -> None:
        """Commit the open transaction with the consumed offsets; on an abortable error,
        abort and rewind to the last committed offsets so nothing is lost."""
        consumer, producer = self._open()
        out = self.output
        began = time.monotonic()
        try:
            # Read once: the hook's consumed_ranges() and the offsets committed are the same.
            positions = self._consumed(consumer)
            if self.hooks.before_commit is not None:
                out.source = None
                self._commit_positions = positions
                try:
                    self.hooks.before_commit(out)
                finally:
                    self._commit_positions = None
            if positions:
                offsets_began = time.monotonic()
                self._retrying(
                    "add offsets to the transaction",
                    lambda: producer.send_offsets_to_transaction(
                        positions, consumer.consumer_group_metadata(), 30
                    ),
                )
                metrics.TXN_OFFSETS_SECONDS.labels(self.config.agent).observe(
                    time.monotonic() - offsets_began
                )
            # commit_transaction would flush first; flushing here times the wait for what
            # the transaction produced apart from the coordinator's EndTxn.
            flush_began = time.monotonic()
            self._watched("flush", lambda: producer.flush(30))
            metrics.TXN_FLUSH_SECONDS.labels(self.config.agent).observe(
                time.monotonic() - flush_began
            )
            self._retrying("commit", lambda: producer.commit_transaction(30))
        except KafkaException as exc:
            self._in_txn = False
            self._pending = 0
            self._commit_failed(exc, consumer, producer, out)
            return
        self._in_txn = False
        self._pending = 0
        metrics.TXN_COMMIT_SECONDS.labels(self.config.agent).observe(time.monotonic() - began)
        self._committed(positions)
        if self.hooks.after_commit is not None:
            self.hooks.after_commit()

    def _retrying(self, what: str, call: Callable[[], None]) -> None:
        """``call()``, called again on a retriable error (the transaction coordinator moved or
        is loading, a broker of a cluster went away) for up to :data:`RETRY_S` seconds, as
        librdkafka asks; an abortable or fatal error, or one past the deadline, is raised."""
        deadline = time.monotonic() + RETRY_S
        while True:
            attempt = time.monotonic()
            try:
                self._watched(what, call)
                return
            except KafkaException as exc:
                err = kafka_error(exc)
                if not (
                    err is not None
                    and err.retriable()
                    and not err.txn_requires_abort()
                    and not err.fatal()
                    and time.monotonic() < deadline
                ):
                    raise
                log.warning("%s: %s failed, retrying: %s", self.config.agent, what, err.str())
                time.sleep(0.5)
                retried = time.monotonic() - attempt
                self._retried_s += retried
                self._txn_retried_s += retried

    def _watched(self, what: str, call: Callable[[], object]) -> None:
        """``call()``, a transactional call with a 30 s timeout, under a watchdog: if it has
        not returned after :data:`STUCK_S`, the process exits. librdkafka can block past the
        timeout in send_offsets_to_transaction when the group coordinator's broker went away
        (confluentinc/librdkafka#5456, #5511); nothing but a new process gets out of that, and
        the open transaction is aborted by the broker or by the restarted instance."""
        with self._watchdog.watching(what):
            call()

    def _stuck(self, what: str) -> None:
        log.critical(
            "%s: %s has not returned after %.0fs (a librdkafka hang after a broker left the "
            "cluster): exiting so that a supervisor restarts this agent; the open "
            "transaction is aborted, nothing is lost",
            self.config.agent,
            what,
            STUCK_S,
        )
        logging.shutdown()
        os._exit(3)

    def _committed(self, positions: list[TopicPartition]) -> None:
        self._failures = 0
        committed = {(tp.topic, tp.partition): tp.offset for tp in positions}
        self._range_starts.update(committed)
        if self.quarantine:
            self.quarantine = {
                c: r for c, r in self.quarantine.items() if c[2] >= committed.get(c[:2], -1)
            }
            self._refusals = {c: n for c, n in self._refusals.items() if c in self.quarantine}
        for tp, end in list(self._careful.items()):
            if committed.get(tp, -1) >= end:
                del self._careful[tp]
        if not self._careful:
            self._one_by_one = False
            self.output.attribute(False)

    def _commit_failed(
        self, exc: KafkaException, consumer: Consumer, producer: Producer, out: TxnOutput
    ) -> None:
        """The commit failed (on the loop's turn or on a revocation): abort and rewind, so the
        range is handled again (by this loop, or by the next owner of its partitions), unless
        the error says aborting cannot help (see :meth:`_abort_output`)."""
        err = kafka_error(exc)
        if err is None or not (_in_error_state(exc) or err.fatal()):
            # Not an error state (a retriable error past RETRY_S, the coordinator away): the
            # loop stops on it. The transaction is marked closed already, so the loop's own
            # abort would do nothing: abort it here, before raising, or it stays open (and
            # read_committed readers stall) until the broker's transaction timeout.
            try:
                self._abort_and_rewind(
                    f"the commit failed: {exc}", consumer, producer, retrying=False
                )
            except Exception as abort_exc:
                log.warning("%s: could not abort: %s", self.config.agent, abort_exc)
            raise wrap("commit transaction", exc) from None
        try:
            self._refuse_zombie("commit transaction", err)
        except KafkaOperationError:
            # Fenced by another instance: nothing can be aborted, but the agent's state of
            # this transaction is forgotten all the same.
            if self.hooks.on_abort is not None:
                self.hooks.on_abort()
            raise
        positions = self._positions()
        attributed = self._abort_attributing(err.str(), consumer, producer, out, positions)
        if not attributed and (err.code() in _MESSAGE_ERRORS or err.code() == KafkaError._STATE):
            # A write of one message failed (_STATE: the transaction failed under a write made
            # before committing, the cause not said), but which? Handle the range again with
            # every write attributed to its input.
            self._careful.update(positions)
            out.attribute(True)

    def _abort_attributing(
        self,
        why: str,
        consumer: Consumer,
        producer: Producer,
        out: TxnOutput,
        positions: dict[tuple[str, int], int],
    ) -> bool:
        """Abort and rewind; then quarantine every input whose write Kafka refused after
        queueing (attributed mode only). True when at least one was."""
        try:
            self._abort_and_rewind(why, consumer, producer)
        finally:
            # Serve the delivery reports still queued (the failed write's). A producer that
            # failed fatally raises here too: its error is the one already on its way out.
            with contextlib.suppress(KafkaException):
                producer.poll(0)
            failures, out.failures = out.failures, []
        return self._quarantine_refused(failures, positions)

    def _quarantine_refused(
        self,
        failures: list[tuple[Message | None, KafkaError]],
        positions: dict[tuple[str, int], int] | None = None,
    ) -> bool:
        """Quarantine every input among ``failures`` whose write Kafka refused (attributed
        writes only). True when at least one was, or when the failure was pinned on several
        inputs: the broker refuses a whole record batch (librdkafka fails every message of
        it with the one message's error), so the inputs that shared it are handled again one
        at a time, each input's writes sent on their own, up to ``positions`` (default: the
        consumer's), and only the input whose own writes fail is refused."""
        attributed = [
            (source, e)
            for source, e in failures
            if source is not None and e.code() in _MESSAGE_ERRORS
        ]
        sources = {_coords(source) for source, _e in attributed}
        if len(sources) > 1 and not self._one_by_one:
            log.warning(
                "%s: writes of %d inputs refused together (%s); handling them again one at a time",
                self.config.agent,
                len(sources),
                attributed[0][1].str(),
            )
            self._careful.update(self._positions() if positions is None else positions)
            self._one_by_one = True
            return True
        for source, e in attributed:
            log.warning("%s: %s refused: %s", self.config.agent, _at(source), e.str())
            self.quarantine[_coords(source)] = (refusal_reason(e), e.str()[:1000])
        return bool(attributed)

    def _stalled_s(self) -> float:
        """How long this loop's turn, or its last transaction (the one failing: the loop marks
        it closed before handling the failure), has lasted, without the time spent on calls
        that failed and were retried (a commit retried while the coordinator moves is the
        loop running, not stalling; counting it would take a real zombie's fencing for a
        stall)."""
        now = time.monotonic()
        return max(
            now - self._turn_started - self._retried_s,
            now - self._txn_started - self._txn_retried_s,
        )

    def _refuse_zombie(self, what: str, err: KafkaError) -> None:
        """Raise when ``err`` says another instance took this loop's transactional id: fenced
        (``_FENCED``) although this loop did not stall past its transaction timeout. Replacing
        the producer would fence that instance in turn; the loop exits, saying so.

        Fenced after a stall longer than the transaction timeout, it was the broker that
        aborted the open transaction and bumped the producer's epoch (a frozen process, a
        long pause): that is recovered from like any refused abort (:meth:`_abort_output`)."""
        if err.code() == KafkaError._FENCED and not self._stalled_past_timeout():
            raise KafkaOperationError(
                what,
                err.name(),
                f"{err.str()}: another instance uses transactional id "
                f"{self.config.transactional_id!r}; give each instance its own --instance",
            )

    def _stalled_past_timeout(self) -> bool:
        return self._stalled_s() > self.config.transaction_timeout_ms / 1000

    def _why_refused(self, err: KafkaError) -> str:
        """What a fatal error refusing an abort means, for the log."""
        if err.code() == KafkaError._FENCED:
            return (
                f"this {self.config.agent} did not run for {self._stalled_s():.0f}s, or held "
                "its transaction open that long (frozen: SIGSTOP, a paused VM or container, "
                "heavy swapping), longer than its transaction timeout of "
                f"{self.config.transaction_timeout_ms / 1000:g}s, so the broker aborted its "
                f"open transaction and fenced it ({err.str()})"
            )
        return f"the abort was refused ({err.name()}: {err.str()})"

    def abort(self, why: str, *, retrying: bool = True) -> None:
        """Abort the open transaction (if any) and rewind to the committed offsets.

        ``retrying``: the loop goes on and will handle the same inputs again (counted towards
        ``max_failures``, with a backoff); False when it is stopping.
        """
        if not self._in_txn or self._consumer is None or self._producer is None:
            return
        self._in_txn = False
        self._pending = 0
        self.output.failures = []
        self._abort_and_rewind(why, self._consumer, self._producer, retrying=retrying)

    def _abort_and_rewind(
        self, why: str, consumer: Consumer, producer: Producer, *, retrying: bool = True
    ) -> None:
        log.warning("%s: aborting transaction: %s", self.config.agent, why)
        metrics.TXN_ABORTS.labels(self.config.agent).inc()
        try:
            self._abort_output(producer, replace=retrying)
        finally:
            if self.hooks.on_abort is not None:
                self.hooks.on_abort()
        if not retrying:
            return
        self._failures += 1
        if self._failures >= self.config.max_failures:
            raise KafkaOperationError(
                "commit transaction",
                "TOO_MANY_ABORTS",
                f"{self._failures} transactions aborted in a row, the last because: {why}",
            )
        if self._revoking:
            # The partitions are being taken away: their next assignment (here or elsewhere)
            # starts from the committed offsets; no seek, no wait inside the callback. Those
            # the loop keeps (the cooperative protocol: only some move) are rewound once the
            # callback has returned.
            self._rewind_deferred = True
            return
        self._rewind(consumer)
        if self._failures > 1:
            time.sleep(min(5.0, 0.1 * 2 ** (self._failures - 1)))

    def _abort_output(self, producer: Producer, *, replace: bool = True) -> None:
        """Undo what the open transaction wrote.

        An abort refused with a fatal error leaves a producer that can do nothing more: the
        coordinator refused it as INVALID_TXN_STATE (an abort sent while the transaction's
        first writes were still being added to it, the coordinator still completing the
        previous commit), or the broker fenced it after a stall. The loop replaces it: a new
        producer with the same transactional id fences the old epoch and makes the coordinator
        abort what it left open. Fenced by another instance, the loop exits instead
        (:meth:`_refuse_zombie`). ``replace`` False (the loop is stopping): the refusal is
        logged, the producer left as it is (the broker aborts the transaction when it times
        out, or the restarted instance when it starts)."""
        try:
            self._watched("abort", lambda: producer.abort_transaction(30))
        except KafkaException as exc:
            err = kafka_error(exc)
            if err is None or not err.fatal():
                raise wrap("abort transaction", exc) from None
            self._refuse_zombie("abort transaction", err)
            if not replace:
                log.warning(
                    "%s: %s; stopping without replacing the producer (its transaction is "
                    "aborted by the broker when it times out, or by the next instance)",
                    self.config.agent,
                    self._why_refused(err),
                )
                return
            log.warning(
                "%s: %s; replacing the producer (the transaction is aborted, nothing is lost: "
                "its inputs are handled again)",
                self.config.agent,
                self._why_refused(err),
            )
            if self._revoking:
                self._replace_deferred = True  # not inside librdkafka's callback
            else:
                self._replace_producer()

    def _replace_producer(self) -> None:
        """A new transactional producer in place of the failed one (see
        :meth:`_new_producer`: it fences the old one and its open transaction is aborted)."""
        old = self._producer
        producer = self._new_producer()
        metrics.PRODUCER_REPLACEMENTS.labels(self.config.agent).inc()
        self._producer = producer
        if self._out is not None:
            self._out.use(producer)
        if old is not None:
            # The old one can deliver nothing more: drop what it queued and serve its
            # delivery reports (the failures of an aborted transaction), without waiting.
            with contextlib.suppress(KafkaException, BufferError):
                old.purge(blocking=False)
                old.flush(0)

    def _consumed(self, consumer: Consumer) -> list[TopicPartition]:
        """Where the handled inputs end, per assigned partition: the consumer's positions,
        but not past a message a fetch holds unhandled (a commit made in a rebalance callback
        the fetch served: see :class:`~model_canary.agents.kafka.clients.Held`).

        The partitions are the loop's own record of its assignment (:attr:`assigned`, kept by
        the rebalance callbacks, which librdkafka calls for every change, a lost assignment
        included), not ``consumer.assignment()``: that is a request served by librdkafka's
        main thread, made holding the interpreter lock, so it waits until that thread is
        scheduled (most of a commit's own Python time under load, per py-spy)."""
        positions = consumer.position(self.assigned) if self.assigned else []
        return self._held.cap([tp for tp in positions if tp.offset >= 0])

    def _positions(self) -> dict[tuple[str, int], int]:
        if self._consumer is None:
            return {}
        return {(tp.topic, tp.partition): tp.offset for tp in self._consumed(self._consumer)}

    def _rewind(self, consumer: Consumer) -> None:
        assignment = consumer.assignment()
        if not assignment:
            return
        self._range_starts.clear()
        for tp in consumer.committed(assignment, timeout=30):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            if tp.offset >= 0:
                self._range_starts[(tp.topic, tp.partition)] = tp.offset

    # -- observing -----------------------------------------------------------------------
    def positions(self) -> dict[tuple[str, int], int]:
        """The consumer's position in each assigned partition (nothing before it opens)."""
        return self._positions()

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
        self._watchdog.close()
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            try:
                self._producer.flush(10)
            except KafkaException as exc:
                # A fenced or otherwise failed producer has nothing left to deliver; its error
                # was raised already and must not be replaced by this one.
                log.debug("%s: producer not flushed: %s", self.config.agent, exc)
            self._producer = None


def _in_error_state(exc: BaseException) -> bool:
    """Whether ``exc`` says the producer's transaction is in an error state (a write failed
    earlier, asynchronously), rather than naming the failure itself."""
    err = kafka_error(exc)
    return err is not None and (err.code() == KafkaError._STATE or err.txn_requires_abort())


def _coords(msg: Message) -> Coords:
    return (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


def _at(msg: Message) -> str:
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


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
