"""The at-least-once loop (``CANARY_DELIVERY=at-least-once``) in process, on the in-memory
Kafka of :mod:`model_canary.agents.testing` (no broker): answers may repeat, but the evidence
its ``before_commit`` hook writes (the product's builder, citing ``loop.consumed_ranges()``)
makes the evaluator's state count every input, and a range cited again once only."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from typing import cast

import pytest
from confluent_kafka import KafkaError, Message, Producer

from model_canary.agents.kafka import alo
from model_canary.agents.kafka.alo import QUIET_WAIT_FACTOR, AtLeastOnceLoop, data_loop
from model_canary.agents.kafka.eos import LoopConfig, TxnHooks, TxnOutput
from model_canary.agents.testing import FakeConsumer, FakeKafka, run_until_idle, using
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
from model_canary.streams.evidence.state import RolloutEvidence
from model_canary.streams.latency import AT_LEAST_ONCE_COMMIT_MS, CommitPolicy, Delivery
from model_canary.streams.messages import Evidence
from model_canary.streams.settings import Settings
from model_canary.streams.stats.tally import Tally

SETTINGS = Settings(
    bootstrap="fake:9092", topic_prefix="t", partitions=1, delivery=Delivery.AT_LEAST_ONCE
)
CODEC = codec_for(Evidence)
SECOND = 1_700_000_000


@pytest.fixture
def kafka() -> Iterator[FakeKafka]:
    fake = FakeKafka()
    with using(fake):
        yield fake


class Copier:
    """An agent in miniature: copies each input to ``out`` and writes routed evidence per
    commit, as the router does (one request per input, refused ones included)."""

    def __init__(self, instance: str) -> None:
        self.evidence = EvidenceBuilder("routed", source=instance)
        self.refused: list[bytes | None] = []
        self.loop = AtLeastOnceLoop(
            SETTINGS,
            LoopConfig("copier", "g", ("in",), f"copier-{instance}"),
            self.handle,
            refuse=self.refuse,
            hooks=TxnHooks(before_commit=self.publish, on_abort=self.evidence.clear),
        )

    def _count(self, msg: Message) -> None:
        self.evidence.add_routed(Cell("iris", "ro1", "", "canary", True, 5000, SECOND), [1])

    def handle(self, batch: Sequence[Message], out: TxnOutput) -> None:
        for msg in batch:
            out.source = msg
            out.produce("out", msg.value(), key=msg.key())
            self._count(msg)

    def refuse(self, out: TxnOutput, msg: Message, reason: str, detail: str) -> None:
        self.refused.append(msg.value())
        out.produce("refused", msg.value())
        self._count(msg)

    def publish(self, out: TxnOutput) -> None:
        for ev in self.evidence.build(self.loop.consumed_ranges()):
            out.produce("evidence", CODEC.encode(ev), key=b"iris")

    def consumer(self) -> FakeConsumer:
        return cast(FakeConsumer, self.loop._open()[0])


def evaluated(kafka: FakeKafka) -> RolloutEvidence:
    """The evaluator's state after reading the whole evidence topic (twice: a re-read counts
    nothing)."""
    state = RolloutEvidence.new("iris", "ro1", Tally(1, control=False, warmup_s=0))
    records = [CODEC.decode(m.value() or b"") for m in kafka.read("evidence")]
    for ev in records + records:
        state.apply(ev)
    return state


def values(kafka: FakeKafka, topic: str) -> list[bytes]:
    return [m.value() or b"" for m in kafka.read(topic)]


def test_outputs_are_readable_before_the_commit_and_offsets_commit_after(kafka: FakeKafka) -> None:
    for i in range(5):
        kafka.send("in", f"m{i}".encode())
    seen_before_commit: list[int] = []
    agent = Copier("a")
    publish = agent.publish

    def publish_and_look(out: TxnOutput) -> None:
        seen_before_commit.append(len(kafka.read("out")))
        publish(out)

    agent.loop.hooks = TxnHooks(before_commit=publish_and_look, on_abort=agent.evidence.clear)
    run_until_idle(agent.loop, kafka)
    assert values(kafka, "out") == [f"m{i}".encode() for i in range(5)]
    assert seen_before_commit == [5]  # no transaction: written is readable
    assert kafka.group_offsets["g", "in", 0] == 5
    assert evaluated(kafka).totals()["canary"]["routed"] == 5


def test_a_refused_write_repeats_answers_but_the_evidence_counts_each_input_once(
    kafka: FakeKafka,
) -> None:
    for i in range(20):
        kafka.send("in", f"m{i}".encode())
    big = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
    kafka.refuse_queued = lambda topic, value, key: (
        big if topic == "out" and value == b"m7" else None
    )
    agent = Copier("a")
    run_until_idle(agent.loop, kafka)
    out = values(kafka, "out")
    # Written before the failure was known: those answers stay, and come again.
    assert sorted(set(out)) == sorted(f"m{i}".encode() for i in range(20) if i != 7)
    assert len(out) > 19
    assert agent.refused == [b"m7"] and values(kafka, "refused") == [b"m7"]
    assert kafka.group_offsets["g", "in", 0] == 20
    # No evidence for the rewound range; the ranges cited follow each other.
    records = [CODEC.decode(m.value() or b"") for m in kafka.read("evidence")]
    ranges = [(r.first, r.last) for ev in records for r in ev.offsets]
    assert ranges[0][0] == 0 and ranges[-1][1] == 19
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
    assert evaluated(kafka).totals()["canary"]["routed"] == 20


def test_a_restart_citing_the_same_range_again_counts_it_once(kafka: FakeKafka) -> None:
    for i in range(10):
        kafka.send("in", f"m{i}".encode())
    first = Copier("a")
    first.consumer().lose_commits = True  # killed after its evidence, before its offsets
    run_until_idle(first.loop, kafka)
    assert ("g", "in", 0) not in kafka.group_offsets
    run_until_idle(Copier("a").loop, kafka)  # restarted: the same inputs again
    assert len(values(kafka, "out")) == 20  # every answer twice
    assert len(kafka.read("evidence")) == 2
    assert evaluated(kafka).totals()["canary"]["routed"] == 10


def test_a_restart_citing_more_than_the_last_range_loses_nothing(kafka: FakeKafka) -> None:
    for i in range(10):
        kafka.send("in", f"m{i}".encode())
    first = Copier("a")
    first.consumer().lose_commits = True
    run_until_idle(first.loop, kafka)
    for i in range(10, 15):
        kafka.send("in", f"m{i}".encode())
    run_until_idle(Copier("a").loop, kafka)  # m0..m14: m0..m9 a second time
    assert len(values(kafka, "out")) == 25
    assert kafka.group_offsets["g", "in", 0] == 15
    # The overlap counts twice, as it was answered twice; m10..m14 are not lost with it.
    assert evaluated(kafka).totals()["canary"]["routed"] == 25


class _InFlight:
    """The loop's producer with ``unacknowledged`` outputs on their way (the in-memory one
    acknowledges everything at once)."""

    def __init__(self, producer: object) -> None:
        self._producer = producer
        self.unacknowledged = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._producer, name)

    def __len__(self) -> int:
        return self.unacknowledged


def test_settings_commit_at_least_once_offsets_every_second_unless_told() -> None:
    assert SETTINGS.data_commit_policy == CommitPolicy.every(AT_LEAST_ONCE_COMMIT_MS)
    assert SETTINGS.with_overrides(commit_interval_ms=30).data_commit_policy == CommitPolicy(30, 30)
    eos = Settings(bootstrap="fake:9092")
    assert eos.data_commit_policy == eos.commit_policy == eos.profile.commit
    loop = data_loop(SETTINGS, LoopConfig("c", "g", ("in",), "c-1"), lambda batch, out: None)
    assert loop.config.commit == CommitPolicy.every(AT_LEAST_ONCE_COMMIT_MS)


def test_a_commit_due_waits_for_the_outputs_in_flight_then_for_at_most_an_interval(
    kafka: FakeKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        kafka.send("in", f"m{i}".encode())
    agent = Copier("a")
    loop = agent.loop
    consumer, producer = loop._open()
    in_flight = _InFlight(producer)
    loop._producer = cast(Producer, in_flight)
    loop._begin()
    agent.handle(consumer.consume(3, 0), loop.output)
    loop._pending = 3
    in_flight.unacknowledged = 2
    loop._commit_due()
    assert loop.in_transaction and ("g", "in", 0) not in kafka.group_offsets
    # While it waits, the loop waits for input as if no commit were due (no busy turn).
    assert loop._input_wait_s(time.monotonic()) == loop.config.poll_timeout_s
    in_flight.unacknowledged = 0
    loop._commit_due()
    assert not loop.in_transaction and kafka.group_offsets["g", "in", 0] == 3

    # Outputs always in flight: the commit waits one interval more at most, then flushes.
    kafka.send("in", b"m3")
    loop._begin()
    agent.handle(consumer.consume(1, 0), loop.output)
    loop._pending = 1
    in_flight.unacknowledged = 5
    began = time.monotonic()
    loop._commit_due()
    assert loop.in_transaction
    later = began + QUIET_WAIT_FACTOR * loop.config.commit.max_ms / 1000 + 0.001
    monkeypatch.setattr(alo.time, "monotonic", lambda: later)
    loop._commit_due()
    assert not loop.in_transaction and kafka.group_offsets["g", "in", 0] == 4
