"""The exactly-once loop when a transaction cannot be committed or aborted, in process (on
:class:`~model_canary.agents.testing.FakeKafka`): a commit made on a rebalance that finds the
transaction failed, a commit that fails without an error state, an abort the coordinator
refuses, a producer fenced by its own stall or by another instance, and a write refused with
the record batch it shared with other inputs' writes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from model_canary.agents.kafka import eos
from model_canary.agents.kafka.alo import AtLeastOnceLoop
from model_canary.agents.kafka.eos import ExactlyOnceLoop, LoopConfig, TxnHooks, TxnOutput
from model_canary.agents.kafka.watchdog import Watchdog
from model_canary.agents.testing import (
    FakeConsumer,
    FakeKafka,
    FakeMessage,
    FakeProducer,
    new_producer,
    run_until_idle,
    using,
)
from model_canary.streams.errors import KafkaOperationError
from model_canary.streams.latency import CommitPolicy
from model_canary.streams.settings import Settings

SETTINGS = Settings(bootstrap="fake:9092", topic_prefix="t", partitions=1)
INPUTS = [f"m{i}".encode() for i in range(5)]
BIG = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
INVALID_TXN_STATE = KafkaError(
    KafkaError.INVALID_TXN_STATE,
    "Failed to end transaction: Broker: Producer attempted a transactional operation in an "
    "invalid state",
)
#: The coordinator not answering (retriable, not abortable: no error state).
TIMED_OUT = KafkaError(KafkaError._TIMED_OUT, "Local: Timed out", retriable=True)


@pytest.fixture
def kafka() -> Iterator[FakeKafka]:
    fake = FakeKafka()
    with using(fake):
        for value in INPUTS:
            fake.send("in", value)
        yield fake


class Copier:
    """Copies each input to ``out``; refuses into ``refused``; writes a summary of each
    transaction into it before it commits (as the router's and workers' evidence)."""

    def __init__(self, kafka: FakeKafka, big: bytes | None = None) -> None:
        self.kafka = kafka
        self.big = big  # the input whose copy is written a thousand times larger
        self.refused: list[tuple[bytes | None, str]] = []
        self.copied = 0
        self.aborts = 0  # how often on_abort ran
        #: Exceptions the handler raises on an input, one per attempt, before copying it.
        self.failing: dict[bytes, list[Exception]] = {}

    def handle(self, batch: Sequence[Message], out: TxnOutput) -> None:
        for msg in batch:
            out.source = msg
            value = msg.value() or b""
            if self.failing.get(value):
                raise self.failing[value].pop(0)
            out.produce("out", value * 1000 if value == self.big else value)
            self.copied += 1

    def refuse(self, out: TxnOutput, msg: Message, reason: str, detail: str) -> None:
        self.refused.append((msg.value(), reason))
        out.produce("refused", msg.value())

    def summary(self, out: TxnOutput) -> None:
        out.produce("summary", str(self.copied).encode())
        self.copied = 0

    def loop(self, config: LoopConfig) -> ExactlyOnceLoop:
        hooks = TxnHooks(before_commit=self.summary, on_abort=self._forget)
        return ExactlyOnceLoop(SETTINGS, config, self.handle, refuse=self.refuse, hooks=hooks)

    def _forget(self) -> None:
        self.copied = 0
        self.aborts += 1


def values(kafka: FakeKafka, topic: str) -> list[bytes]:
    return [m.value() or b"" for m in kafka.read(topic)]


@pytest.mark.parametrize("culprit", [b"m2", b"m4"])
def test_a_commit_on_revocation_in_a_failed_transaction_leaves_the_range_to_the_next_owner(
    kafka: FakeKafka, culprit: bytes
) -> None:
    # m2's copy is refused by the broker after it was queued (too large for the topic): the
    # transaction is in an error state. Before the loop commits, the group rebalances; the
    # commit made on revocation writes the summary first, which fails with _STATE ("Unable to
    # produce message: Local: Erroneous state", the worker's exit in `canary chaos`
    # produce-error). It must abort, commit no offset, and let the range be handled again.
    kafka.refuse_queued = lambda topic, value, key: BIG if value == culprit * 1000 else None
    copier = Copier(kafka, big=culprit)
    rebalanced: list[int] = []

    def rebalance_once(batch: Sequence[Message], out: TxnOutput) -> None:
        copier.handle(batch, out)
        if any(m.value() == culprit for m in batch) and not rebalanced:
            rebalanced.append(loop.assignments)
            kafka.rebalance()

    # One input per batch, no commit before the rebalance (only run_until_idle's, once idle).
    config = LoopConfig("h", "g", ("in",), "h-1", max_batch=1, commit=CommitPolicy.every(60_000))
    loop = copier.loop(config)
    loop.handler = rebalance_once
    run_until_idle(loop, kafka)

    assert rebalanced and loop.assignments > rebalanced[0], "no rebalance happened"
    assert values(kafka, "out") == [v for v in INPUTS if v != culprit]
    assert copier.refused == [(culprit, "too-large")]
    assert values(kafka, "refused") == [culprit]
    assert sum(int(v) for v in values(kafka, "summary")) == len(INPUTS) - 1
    assert kafka.group_offsets["g", "in", 0] == len(INPUTS)


class RebalancedAfterPoll(FakeConsumer):
    """A consumer whose group rebalances right after ``poll`` returned the first message to
    arrive (``late``, sent just then): the fetch's second call serves the revocation while
    that message is polled but not handled yet (the CI failure of session 18: a worker
    resumed after a freeze polled a request, then its session's expiry revoked its
    partitions; the request was answered twice)."""

    late: list[bytes]

    def poll(self, timeout: float = 0.0) -> FakeMessage | None:
        if not self.late:
            return super().poll(timeout)
        self.kafka.send("in", self.late.pop())
        msg = super().poll(timeout)
        self.kafka.rebalance()
        return msg


@pytest.mark.parametrize(
    "policy",
    [CommitPolicy(min_ms=0, max_ms=50), CommitPolicy.every(60_000)],
    ids=["nothing-open", "open-transaction"],
)
def test_a_message_polled_just_before_a_rebalance_is_handled_exactly_once(
    kafka: FakeKafka, policy: CommitPolicy
) -> None:
    # nothing-open: the inputs were committed before the loop polled; the revocation commits
    # nothing, the partition comes back at the committed offset, before the late message.
    # open-transaction: the revocation commits m0..m4; the offset it commits must stop
    # before the late message, which no one has handled.
    def consumer(config: dict[str, Any]) -> FakeConsumer:
        made = RebalancedAfterPoll(kafka, config)
        made.late = [b"late"]
        return made

    kafka.consumer = consumer  # type: ignore[method-assign]
    copier = Copier(kafka)
    loop = copier.loop(LoopConfig("h", "g", ("in",), "h-1", commit=policy))
    run_until_idle(loop, kafka)

    assert loop.assignments == 2, "no rebalance happened"
    assert values(kafka, "out") == [*INPUTS, b"late"]
    assert kafka.group_offsets["g", "in", 0] == len(INPUTS) + 1


def test_an_abort_the_coordinator_refuses_replaces_the_producer_and_the_loop_goes_on(
    kafka: FakeKafka,
) -> None:
    # The handler fails on m3; the abort is refused as INVALID_TXN_STATE (fatal: the
    # coordinator still completing the previous commit). A new producer with the same
    # transactional id fences the old one and aborts what it left open; the consumer is
    # rewound; m3 is refused and the rest copied once.
    refusals = [INVALID_TXN_STATE]
    kafka.refuse_abort = lambda: refusals.pop() if refusals else None
    copier = Copier(kafka)
    copier.failing[b"m3"] = [RuntimeError("bug on m3")]
    loop = copier.loop(LoopConfig("h", "g", ("in",), "h-1"))
    run_until_idle(loop, kafka)

    assert not refusals, "the abort was not refused"
    assert values(kafka, "out") == [v for v in INPUTS if v != b"m3"]
    assert copier.refused == [(b"m3", "internal-error")]
    assert kafka.epochs["h-1"] == 2  # the producer was replaced once
    # The replaced producer was purged (it can deliver nothing more), the new one was not.
    assert [p.purged for p in kafka.producers] == [True, False]
    assert kafka.group_offsets["g", "in", 0] == len(INPUTS)


def test_a_producer_fenced_after_the_agent_stalled_past_its_transaction_timeout_is_replaced(
    kafka: FakeKafka,
) -> None:
    # The agent stalls (a long GC, swapping) in the middle of a transaction; the coordinator
    # aborts it and bumps the epoch, so the commit fails with _FENCED. Nobody else has the
    # transactional id: the loop replaces its producer and handles the range again.
    # The stall is in the first turn of the transaction; the commit that meets the fencing
    # comes in a later turn (one input per turn, no commit before idle): the stall is found
    # in the transaction's turns, not only in the turn that commits.
    copier = Copier(kafka)
    stalls = [True]

    def stall(batch: Sequence[Message], out: TxnOutput) -> None:
        copier.handle(batch, out)
        if stalls:
            stalls.pop()
            time.sleep(0.3)  # a stall longer than the 200 ms transaction timeout below
            kafka.time_out("h-1")

    config = LoopConfig(
        "h",
        "g",
        ("in",),
        "h-1",
        max_batch=1,
        commit=CommitPolicy.every(60_000),
        transaction_timeout_ms=200,
    )
    loop = copier.loop(config)
    loop.handler = stall
    run_until_idle(loop, kafka)

    assert not stalls, "the handler did not stall"
    assert values(kafka, "out") == INPUTS
    assert kafka.epochs["h-1"] == 3  # init, the coordinator's bump, the replacement
    assert kafka.group_offsets["g", "in", 0] == len(INPUTS)


def test_a_producer_fenced_by_another_instance_still_exits_saying_so(kafka: FakeKafka) -> None:
    # Another process started with the same transactional id (the same --instance): a real
    # zombie. Replacing the producer would fence the other process in turn; the loop exits.
    copier = Copier(kafka)
    zombie: list[object] = []

    def handle(batch: Sequence[Message], out: TxnOutput) -> None:
        copier.handle(batch, out)
        if not zombie:
            other = new_producer(SETTINGS, "other", transactional_id="h-1")
            other.init_transactions(1)
            zombie.append(other)

    loop = copier.loop(LoopConfig("h", "g", ("in",), "h-1"))
    loop.handler = handle
    with pytest.raises(KafkaOperationError, match="another instance uses transactional id"):
        run_until_idle(loop, kafka)
    assert values(kafka, "out") == []
    assert ("g", "in", 0) not in kafka.group_offsets
    assert copier.aborts == 1  # the agent forgot the transaction's state


def test_a_zombie_is_not_taken_for_a_stall_because_the_commit_was_retried(
    kafka: FakeKafka,
) -> None:
    # The commit is retried (the coordinator not answering) for longer than the transaction
    # timeout; meanwhile another instance takes the transactional id. The retries are the
    # loop running, not stalling: it must exit as fenced by another instance, not replace
    # its producer (which would fence the other instance in turn).
    copier = Copier(kafka)
    timeouts = [TIMED_OUT, TIMED_OUT]

    def refuse_commit() -> KafkaError | None:
        if len(timeouts) == 1:
            other = new_producer(SETTINGS, "other", transactional_id="h-1")
            other.init_transactions(1)
        return timeouts.pop() if timeouts else None

    kafka.refuse_commit = refuse_commit
    loop = copier.loop(LoopConfig("h", "g", ("in",), "h-1", transaction_timeout_ms=200))
    with pytest.raises(KafkaOperationError, match="another instance uses transactional id"):
        run_until_idle(loop, kafka)
    assert not timeouts, "the commit was not retried"
    assert kafka.epochs["h-1"] == 2  # the other instance's; this loop did not replace its own


def test_a_commit_that_fails_without_an_error_state_is_aborted_before_the_loop_stops(
    kafka: FakeKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The commit times out past the retry deadline (no error state: the coordinator away).
    # The loop stops on it; its transaction must not be left open (read_committed readers of
    # its outputs would stall until the broker's transaction timeout).
    monkeypatch.setattr(eos, "RETRY_S", 0.0)
    kafka.refuse_commit = lambda: TIMED_OUT
    copier = Copier(kafka)
    loop = copier.loop(LoopConfig("h", "g", ("in",), "h-1"))
    with pytest.raises(KafkaOperationError, match="_TIMED_OUT"):
        run_until_idle(loop, kafka)
    written = kafka.topics["out"][0]
    assert written.messages, "nothing was written"
    assert not written.open, "the transaction was left open"
    assert copier.aborts == 1
    assert ("g", "in", 0) not in kafka.group_offsets


def test_a_loop_stopping_on_an_error_does_not_replace_a_producer_whose_abort_was_refused(
    kafka: FakeKafka,
) -> None:
    # The loop stops (an error it does not handle); its abort is refused (fatal). A stopping
    # loop has no use for a new producer: it says so and exits.
    kafka.refuse_abort = lambda: INVALID_TXN_STATE
    copier = Copier(kafka)
    copier.failing[b"m1"] = [KeyboardInterrupt()]  # type: ignore[list-item]
    loop = copier.loop(LoopConfig("h", "g", ("in",), "h-1"))
    with pytest.raises(KeyboardInterrupt):
        run_until_idle(loop, kafka)
    assert kafka.epochs["h-1"] == 1
    assert len(kafka.producers) == 1
    assert copier.aborts == 1


def test_a_revocation_whose_commit_fails_neither_seeks_nor_raises_inside_the_callback(
    kafka: FakeKafka,
) -> None:
    # As in the first test, the commit made on revocation fails (a write refused after it
    # was queued); with max_failures=1 that failure is the last the loop takes. It must not
    # rewind (seek partitions being revoked) nor raise inside the callback: the revocation
    # completes, the partitions are assigned again, then the loop raises.
    kafka.refuse_queued = lambda topic, value, key: BIG if value == b"m2" * 1000 else None
    copier = Copier(kafka, big=b"m2")

    def rebalance_on_m2(batch: Sequence[Message], out: TxnOutput) -> None:
        copier.handle(batch, out)
        if any(m.value() == b"m2" for m in batch):
            kafka.rebalance()

    config = LoopConfig(
        "h", "g", ("in",), "h-1", max_batch=1, commit=CommitPolicy.every(60_000), max_failures=1
    )
    loop = copier.loop(config)
    loop.handler = rebalance_on_m2
    with pytest.raises(KafkaOperationError, match="aborted in a row"):
        run_until_idle(loop, kafka)
    assert loop.assignments == 2  # the revocation completed and the group assigned again
    assert ("g", "in", 0) not in kafka.group_offsets
    assert values(kafka, "out") == []


def test_a_too_large_write_fails_its_record_batch_and_only_its_input_is_refused(
    kafka: FakeKafka,
) -> None:
    # m2's copy is too large for the broker; the copies of m0 and m1, queued before it for the
    # same partition, share its record batch and fail with its error (as librdkafka reports
    # every message of a refused batch). Only m2 may be refused: the inputs whose writes
    # failed together are handled again one at a time.
    kafka.refuse_queued = lambda topic, value, key: BIG if value == b"m2" * 1000 else None
    copier = Copier(kafka, big=b"m2")
    loop = copier.loop(LoopConfig("h", "g", ("in",), "h-1"))
    run_until_idle(loop, kafka)

    assert copier.refused == [(b"m2", "too-large")]
    assert values(kafka, "out") == [v for v in INPUTS if v != b"m2"]
    assert values(kafka, "refused") == [b"m2"]
    assert kafka.group_offsets["g", "in", 0] == len(INPUTS)


def test_the_fake_ends_only_a_begun_transaction_and_begins_one_locally(kafka: FakeKafka) -> None:
    # As librdkafka: commit or abort with no transaction open is refused (_STATE); begin is
    # local, so a producer the broker fenced learns it at its next call to the broker.
    producer = new_producer(SETTINGS, "p", transactional_id="p-1")
    producer.init_transactions(1)
    for end in (producer.commit_transaction, producer.abort_transaction):
        with pytest.raises(KafkaException) as refused:
            end(1)
        assert refused.value.args[0].code() == KafkaError._STATE
    kafka.time_out("p-1")
    producer.begin_transaction()
    with pytest.raises(KafkaException) as fenced:
        producer.commit_transaction(1)
    assert fenced.value.args[0].code() == KafkaError._FENCED


def test_a_producer_whose_init_transactions_hangs_is_caught_by_the_watchdog(
    kafka: FakeKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    # init_transactions (on opening, and on replacing a producer) is a transactional call
    # that can block like the others: the watchdog must watch it.
    fired: list[str] = []
    reported = threading.Event()

    def on_stuck(what: str) -> None:
        fired.append(what)
        reported.set()

    def hangs(producer: FakeProducer, timeout: float = 0.0) -> None:
        reported.wait(5)  # stands for librdkafka blocking: returns once reported (or not)

    monkeypatch.setattr(FakeProducer, "init_transactions", hangs)
    loop = Copier(kafka).loop(LoopConfig("h", "g", ("in",), "h-1"))
    loop._watchdog = Watchdog(0.05, on_stuck, interval_s=0.01)
    try:
        assert loop.output is not None  # opens the clients
    finally:
        loop.close()
    assert fired == ["init transactions"]


def test_a_rebalance_while_inputs_are_handled_again_one_at_a_time_refuses_only_the_culprit(
    kafka: FakeKafka,
) -> None:
    # As above, the writes of m0..m2 fail together (m2's copy too large for the broker), and
    # the loop decides to handle them again one at a time; but the group rebalances first.
    # The partition comes back at the committed offset and the range is handled again: its
    # writes fail together again, and still only m2 may be refused (the rebalance dropped the
    # range being handled one at a time; the decision to do so must go with it).
    kafka.refuse_queued = lambda topic, value, key: BIG if value == b"m2" * 1000 else None
    copier = Copier(kafka, big=b"m2")

    def rebalance_on_the_second_abort() -> None:
        copier.aborts += 1
        copier.copied = 0
        if copier.aborts == 2:  # the writes were attributed: several inputs share the failure
            kafka.rebalance()

    hooks = TxnHooks(before_commit=copier.summary, on_abort=rebalance_on_the_second_abort)
    loop = ExactlyOnceLoop(
        SETTINGS,
        LoopConfig("h", "g", ("in",), "h-1"),
        copier.handle,
        refuse=copier.refuse,
        hooks=hooks,
    )
    run_until_idle(loop, kafka)

    assert loop.assignments == 2, "no rebalance happened"
    assert copier.refused == [(b"m2", "too-large")]
    assert values(kafka, "out") == [v for v in INPUTS if v != b"m2"]
    assert values(kafka, "refused") == [b"m2"]
    assert kafka.group_offsets["g", "in", 0] == len(INPUTS)


@pytest.mark.parametrize("kind", [ExactlyOnceLoop, AtLeastOnceLoop])
def test_a_cooperative_revocation_whose_commit_fails_loses_no_input_of_the_partitions_kept(
    kind: type[ExactlyOnceLoop],
) -> None:
    # With the cooperative protocol a rebalance takes only the partitions that move: here
    # in[1], while the open transaction holds d0 and d1 of in[0] (kept). d1's copy is refused
    # by the broker after it was queued, so the commit made on the revocation fails and the
    # transaction is aborted. The loop must then read in[0] again from its committed offset:
    # it keeps that partition, so no new assignment does it (an eager rebalance would), and
    # going on from its position would skip d0 and d1 (committed with the next transaction).
    # The at-least-once loop cannot undo d0's copy: it may come twice, but must come.
    kafka = FakeKafka(partitions=2)
    with using(kafka):
        for i in range(4):
            kafka.send("in", f"d{i}".encode(), key=b"d")  # in[0]
            kafka.send("in", f"a{i}".encode(), key=b"a")  # in[1]
        kafka.refuse_queued = lambda topic, value, key: BIG if value == b"d1" * 1000 else None
        copier = Copier(kafka, big=b"d1")
        citing: list[tuple[int, int, int]] = []  # the open transaction's consumed ranges
        cited: list[tuple[int, int, int]] = []  # those of the transactions committed
        moved: list[int] = []

        def move_in1_on_d1(batch: Sequence[Message], out: TxnOutput) -> None:
            copier.handle(batch, out)
            if any(m.value() == b"d1" for m in batch) and not moved:
                moved.append(loop.assignments)
                kafka.rebalance(moving=[("in", 1)])

        def summary(out: TxnOutput) -> None:
            citing[:] = [(r.partition, r.first, r.last) for r in loop.consumed_ranges()]
            copier.summary(out)

        def committed() -> None:
            cited.extend(citing)

        config = LoopConfig(
            "h",
            "g",
            ("in",),
            "h-1",
            max_batch=1,
            commit=CommitPolicy.every(60_000),
            assignment_strategy="cooperative-sticky",
        )
        hooks = TxnHooks(before_commit=summary, after_commit=committed, on_abort=copier._forget)
        loop = kind(SETTINGS, config, move_in1_on_d1, refuse=copier.refuse, hooks=hooks)
        run_until_idle(loop, kafka)

    assert moved and loop.assignments == moved[0] + 1, "in[1] did not move"
    copies = values(kafka, "out")
    if kind is AtLeastOnceLoop:
        copies = sorted(set(copies))
    assert sorted(copies) == [b"a0", b"a1", b"a2", b"a3", b"d0", b"d2", b"d3"]
    assert copier.refused == [(b"d1", "too-large")]
    assert kafka.group_offsets["g", "in", 0] == 4
    assert kafka.group_offsets["g", "in", 1] == 4
    assert sorted((tp.topic, tp.partition) for tp in loop.assigned) == [("in", 0), ("in", 1)]
    # The committed transactions' evidence cites every input of both partitions once.
    for partition in (0, 1):
        offsets = [o for p, first, last in cited if p == partition for o in range(first, last + 1)]
        assert offsets == [0, 1, 2, 3], (partition, cited)


def test_after_a_cooperative_rebalance_the_evidence_cites_the_ranges_of_every_partition() -> None:
    # in[1] moves away and comes back while in[0] is kept (the revocation's commit succeeds):
    # every committed transaction's consumed ranges (what the router's and workers' evidence
    # cites, and the evaluator counts each input once by) must still cover both partitions.
    kafka = FakeKafka(partitions=2)
    with using(kafka):
        for i in range(4):
            kafka.send("in", f"d{i}".encode(), key=b"d")  # in[0]
            kafka.send("in", f"a{i}".encode(), key=b"a")  # in[1]
        copier = Copier(kafka)
        citing: list[tuple[int, int, int]] = []
        cited: list[tuple[int, int, int]] = []

        def move_in1_on_d1(batch: Sequence[Message], out: TxnOutput) -> None:
            copier.handle(batch, out)
            if any(m.value() == b"d1" for m in batch):
                kafka.rebalance(moving=[("in", 1)])

        def summary(out: TxnOutput) -> None:
            citing[:] = [(r.partition, r.first, r.last) for r in loop.consumed_ranges()]
            copier.summary(out)

        config = LoopConfig(
            "h",
            "g",
            ("in",),
            "h-1",
            max_batch=1,
            commit=CommitPolicy.every(60_000),
            assignment_strategy="cooperative-sticky",
        )
        hooks = TxnHooks(before_commit=summary, after_commit=lambda: cited.extend(citing))
        loop = ExactlyOnceLoop(SETTINGS, config, move_in1_on_d1, hooks=hooks)
        run_until_idle(loop, kafka)

    assert loop.assignments == 2, "in[1] did not move"
    assert len(values(kafka, "out")) == 8
    for partition in (0, 1):
        offsets = [o for p, first, last in cited if p == partition for o in range(first, last + 1)]
        assert offsets == [0, 1, 2, 3], (partition, cited)


def test_an_at_least_once_rewind_goes_to_what_it_committed_of_the_partitions_it_keeps() -> None:
    # The at-least-once loop commits offsets asynchronously and rewinds, after a failure, to
    # what it committed last (the broker's offsets may lag behind: a commit on its way, or
    # one that failed). Here every commit fails to reach the broker. in[1] moves away and
    # back (cooperative protocol) while the loop keeps in[0]; then d2 fails. The rewind of
    # in[0] must go back to where the loop committed (after d1), not to the broker's offsets
    # (nothing): d0 and d1 would be answered again and their evidence cited twice.
    kafka = FakeKafka(partitions=2)

    def losing(config: dict[str, Any]) -> FakeConsumer:
        made = FakeConsumer(kafka, config)
        made.lose_commits = True
        return made

    kafka.consumer = losing  # type: ignore[method-assign]
    with using(kafka):
        for i in range(4):
            kafka.send("in", f"d{i}".encode(), key=b"d")  # in[0]
            kafka.send("in", f"a{i}".encode(), key=b"a")  # in[1]
        copier = Copier(kafka)
        copier.failing[b"d2"] = [RuntimeError("a bug")]
        citing: list[tuple[int, int, int]] = []
        cited: list[tuple[int, int, int]] = []

        moved: list[int] = []

        def move_in1_on_d1(batch: Sequence[Message], out: TxnOutput) -> None:
            copier.handle(batch, out)
            if any(m.value() == b"d1" for m in batch) and not moved:
                moved.append(loop.assignments)
                kafka.rebalance(moving=[("in", 1)])

        def summary(out: TxnOutput) -> None:
            citing[:] = [(r.partition, r.first, r.last) for r in loop.consumed_ranges()]
            copier.summary(out)

        config = LoopConfig(
            "h",
            "g",
            ("in",),
            "h-1",
            max_batch=1,
            max_in_txn=1,  # a commit after every input
            assignment_strategy="cooperative-sticky",
        )
        hooks = TxnHooks(before_commit=summary, after_commit=lambda: cited.extend(citing))
        loop = AtLeastOnceLoop(SETTINGS, config, move_in1_on_d1, refuse=copier.refuse, hooks=hooks)
        run_until_idle(loop, kafka)

    assert moved and loop.assignments == moved[0] + 1, "in[1] did not move"
    assert copier.refused == [(b"d2", "internal-error")]
    assert sorted(values(kafka, "out")) == [b"a0", b"a1", b"a2", b"a3", b"d0", b"d1", b"d3"]
    offsets = [o for p, first, last in cited if p == 0 for o in range(first, last + 1)]
    assert offsets == [0, 1, 2, 3], cited
