"""What lowers latency, checked as behaviour (the figures come from ``canary bench latency``):
a transaction commits as soon as its input is drained, not when a timer fires; the client
reads the one partition its answers land on; at-least-once answers that come twice are
dropped by the client and counted by the audit, while the evidence the evaluator reads counts
every request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer

from model_canary.agents.audit import audit
from model_canary.agents.client import CanaryClient, ControlClient
from model_canary.agents.kafka.clients import new_producer
from model_canary.agents.kafka.eos import ExactlyOnceLoop, LoopConfig, TxnOutput
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.evidence.state import RolloutEvidence
from model_canary.streams.evidence.wire import decode_evidence
from model_canary.streams.latency import CommitPolicy
from model_canary.streams.messages import Arm, InferenceResult, utc_now
from model_canary.streams.partitioning import partition_of
from model_canary.streams.plan import plan_of
from model_canary.streams.settings import Settings
from model_canary.streams.stats.snapshot import tally_for
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import (
    Agent,
    answers,
    consume_n,
    header,
    read_topic,
    send_requests,
)

pytestmark = pytest.mark.integration

#: Longer than any test waits: a transaction committed within a test was not committed by it.
NEVER_MS = 600_000


def _copy(batch: Sequence[Message], out: TxnOutput, topic: str) -> None:
    for msg in batch:
        out.produce(topic, msg.value(), key=msg.key())


@pytest.fixture
def run_loop(settings: Settings, unique: str) -> Iterator[Callable[[str, str, CommitPolicy], None]]:
    """Factory: an exactly-once loop copying one topic to another, run in a thread."""
    running: list[tuple[threading.Event, threading.Thread]] = []

    def start(source: str, target: str, policy: CommitPolicy) -> None:
        name = f"copy-{unique}-{len(running)}"
        loop = ExactlyOnceLoop(
            settings,
            LoopConfig("test", name, (source,), name, commit=policy),
            lambda batch, out: _copy(batch, out, target),
        )
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
        thread.start()
        running.append((stop, thread))

    yield start
    for stop, _thread in running:
        stop.set()
    for _stop, thread in running:
        thread.join(30)
        # A loop whose policy holds its transaction open still stops when asked (it blocked
        # in its wait for input until the next message arrived, on 3e41a43).
        assert not thread.is_alive(), "the loop did not stop"


def test_a_transaction_commits_as_soon_as_its_input_is_drained(
    make_topic: Callable[..., str],
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
    run_loop: Callable[[str, str, CommitPolicy], None],
) -> None:
    source, target = make_topic(), make_topic()
    run_loop(source, target, CommitPolicy(min_ms=0, max_ms=NEVER_MS))
    committed = make_consumer(target, **{"isolation.level": "read_committed"})
    producer = make_producer()
    for i in range(3):
        producer.produce(source, f"m{i}".encode(), key=b"k")
        producer.flush(10)
        # Readable long before the time bound: the loop committed when it had nothing more.
        got = consume_n(committed, 1, timeout=60)
        assert [m.value() for m in got] == [f"m{i}".encode()]


def test_a_fixed_interval_holds_the_transaction_open(
    make_topic: Callable[..., str],
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
    run_loop: Callable[[str, str, CommitPolicy], None],
) -> None:
    source, target = make_topic(), make_topic()
    run_loop(source, target, CommitPolicy.every(NEVER_MS))
    uncommitted = make_consumer(target, **{"isolation.level": "read_uncommitted"})
    committed = make_consumer(target, **{"isolation.level": "read_committed"})
    producer = make_producer()
    producer.produce(source, b"held", key=b"k")
    producer.flush(10)
    # Written into the open transaction, which the policy keeps open although the input is
    # drained: a read_committed reader does not see it.
    assert [m.value() for m in consume_n(uncommitted, 1, timeout=60)] == [b"held"]
    assert consume_n(committed, 1, timeout=3) == []


def _result(rid: str) -> bytes:
    result = InferenceResult(
        request_id=rid,
        model="iris",
        version="v1",
        arm=Arm.BASELINE,
        outputs=b'{"outputs":[]}',
        latency_ms=0.0,
        created_at=utc_now(),
    )
    return codec_for(InferenceResult).encode(result)


def test_the_client_reads_the_partition_its_answers_land_on(
    settings: Settings, topics: TopicCatalogue
) -> None:
    # Results are written as the workers write them: keyed by request id, murmur2.
    producer = new_producer(settings, "test-answers")
    landed: dict[str, int] = {}

    def delivered(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        landed[(msg.key() or b"").decode()] = msg.partition() or 0

    for i in range(200):
        producer.produce(
            topics.results, _result(f"k{i}"), key=f"k{i}".encode(), on_delivery=delivered
        )
    producer.flush(30)
    partitions = topics.partitions
    assert landed == {f"k{i}": partition_of(f"k{i}".encode(), partitions) for i in range(200)}

    with CanaryClient(settings) as client:
        rid = client.new_request_id()
        home = partition_of(rid.encode(), partitions)
        future = client.infer_nowait(b'{"inputs":[]}', model="iris", request_id=rid)
        assert client.results_partitions == [home]
        producer.produce(topics.results, _result(rid), key=rid.encode())
        producer.flush(30)
        assert future.result(60).request_id == rid
        # The same answer again (at-least-once): dropped and counted.
        producer.produce(topics.results, _result(rid), key=rid.encode())
        producer.flush(30)
        deadline = time.monotonic() + 60
        while client.repeats < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.repeats == 1
        # A request id chosen elsewhere: its partition is read too, from before it is sent.
        other = next(
            f"mine-{i}"
            for i in range(1000)
            if partition_of(f"mine-{i}".encode(), partitions) != home
        )
        future = client.infer_nowait(b'{"inputs":[]}', model="iris", request_id=other)
        assert client.results_partitions == sorted({home, partition_of(other.encode(), partitions)})
        producer.produce(topics.results, _result(other), key=other.encode())
        producer.flush(30)
        assert future.result(60).request_id == other


def test_at_least_once_repeats_are_dropped_by_the_client_and_counted_by_the_audit(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
) -> None:
    alo = {"CANARY_DELIVERY": "at-least-once"}
    spawn("router", "--instance", "r1", extra_env=alo).ready()
    ControlClient(settings).send("iris", "register", baseline_version="v1")
    # A worker that writes its answers but never commits its offsets (within this test).
    first = _worker(spawn, {**alo, "CANARY_COMMIT_INTERVAL_MS": str(NEVER_MS)})
    n = 30
    with CanaryClient(settings) as client:
        futures = [client.infer_nowait(b'{"inputs":[]}', model="iris") for _ in range(n)]
        ids = [f.result(120).request_id for f in futures]
        first.kill()
        # Its successor starts from the last committed offsets: every request is answered
        # again, and every answer says it may repeat.
        _worker(spawn, alo)
        counts = answers(settings, topics.results, ids, timeout=120)
        deadline = time.monotonic() + 120
        while min(counts.values()) < 2 and time.monotonic() < deadline:
            counts = answers(settings, topics.results, ids, timeout=120, settle=0.5)
        assert set(counts.values()) == {2}, counts
        deadline = time.monotonic() + 60
        while client.repeats < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.repeats == n  # each future completed once; the repeats were dropped
    marks = {header(m, h.DELIVERY) for m in read_topic(settings, topics.results, 2 * n)}
    assert marks == {"at-least-once"}
    report = audit(settings, timeout=60)
    assert report.ok, report.to_dict()
    assert (report.accounting.repeats, report.duplicated, report.lost) == (n, 0, 0)


def _worker(spawn: Callable[..., Agent], env: dict[str, str]) -> Agent:
    return spawn(
        "worker",
        *("--model", "iris", "--version", "v1", "--adapter", "noop:", "--instance", "w1"),
        extra_env=env,
    )


def test_at_least_once_still_refuses_the_input_whose_handling_fails(
    settings: Settings, topics: TopicCatalogue, spawn: Callable[..., Agent]
) -> None:
    # A model output of the wrong type makes the worker raise while it publishes, in the middle
    # of its batch: without a transaction to abort, what was written before stays (repeats),
    # the failing request is answered with an error and dead-lettered once, nothing is lost.
    alo = {"CANARY_DELIVERY": "at-least-once"}
    spawn("router", "--instance", "r1", extra_env=alo).ready()
    ControlClient(settings).send("iris", "register", baseline_version="v1")
    spawn(
        "worker",
        *("--model", "iris", "--version", "v1", "--adapter", "noop:", "--instance", "w1"),
        "--inject-marked-faults",
        extra_env=alo,
    )
    client = CanaryClient(settings)
    ids = []
    for i in range(9):
        body = b'{"inputs":[],"canary_fault":"bad-output"}' if i == 4 else b'{"inputs":[]}'
        ids.append(client.send(body, model="iris", request_id=f"r{i}", flush=False))
    client.close()

    report = audit(settings, timeout=60)
    assert report.ok and report.lost == 0 and report.duplicated == 0, report.to_dict()
    codec = codec_for(InferenceResult)
    results = [codec.decode(m.value() or b"") for m in read_topic(settings, topics.results, 9)]
    failed = {r.request_id for r in results if r.error is not None}
    assert failed == {"r4"} and {r.request_id for r in results} == set(ids)
    assert {r.error_type for r in results if r.error is not None} == {"internal-error"}
    dead = read_topic(settings, topics.dead_letters, 1)
    assert [header(m, h.REQUEST_ID) for m in dead] == ["r4"]
    assert header(dead[0], h.DLQ_REASON) == "internal-error"


def test_an_at_least_once_worker_stopped_gracefully_commits_what_it_answered(
    settings: Settings, topics: TopicCatalogue, spawn: Callable[..., Agent]
) -> None:
    alo = {"CANARY_DELIVERY": "at-least-once"}
    spawn("router", "--instance", "r1", extra_env=alo).ready()
    ControlClient(settings).send("iris", "register", baseline_version="v1")
    first = _worker(spawn, alo)
    with CanaryClient(settings) as client:
        ids = [client.infer(b'{"inputs":[]}', model="iris").request_id for _ in range(10)]
        assert first.stop() == 0  # SIGTERM: its last offsets are committed before it exits
        _worker(spawn, alo)
        ids.append(client.infer(b'{"inputs":[]}', model="iris", timeout=120).request_id)
    assert set(answers(settings, topics.results, ids).values()) == {1}
    report = audit(settings, timeout=60)
    assert report.ok and report.accounting.repeats == 0, report.to_dict()


def test_at_least_once_evidence_counts_every_request_when_a_worker_is_killed(
    settings: Settings, topics: TopicCatalogue, spawn: Callable[..., Agent]
) -> None:
    # The router and workers of a rollout run at least once; a worker is killed mid-stream
    # and restarted: answers repeat, but the evidence the evaluator reads counts every request
    # routed once and answered at least once, per routed second and arm (no second is left
    # incomplete, which would hold the evaluator's watermark for ever).
    alo = {"CANARY_DELIVERY": "at-least-once"}
    n = 6_000
    spawn("router", "--instance", "r1", extra_env=alo).ready()
    control = ControlClient(settings)
    control.send("iris", "start", baseline_version="v1", canary_version="v2")
    control.send("iris", "set_weight", weight_bp=5000)
    worker = "--model", "iris", "--adapter", "noop:", "--max-batch", "16"
    spawn("worker", *worker, "--version", "v2", "--instance", "w2", extra_env=alo)
    first = spawn("worker", *worker, "--version", "v1", "--instance", "w1", extra_env=alo)
    ids = send_requests(settings, "iris", [f"user-{i}" for i in range(n)])
    read_topic(settings, topics.results, n // 3, timeout=120, settle=0)
    first.kill()
    spawn("worker", *worker, "--version", "v1", "--instance", "w1", extra_env=alo)
    counts = answers(settings, topics.results, ids, timeout=180)
    assert min(counts.values()) >= 1
    time.sleep(3)  # the last commits' evidence
    messages = read_topic(settings, topics.evidence, 1)
    # A record alone or a set (the default format) per message.
    evidence = [ev for m in messages for ev in decode_evidence(m.value() or b"")[0]]
    # What the evaluator makes of it (every record read twice: a re-read counts nothing).
    state = RolloutEvidence.new(
        "iris", evidence[0].rollout_id, tally_for(plan_of("iris", "v2", None))
    )
    for ev in evidence + evidence:
        state.apply(ev)
    totals = state.totals()
    assert {arm for arm, t in totals.items() if t["routed"]} == {"control", "canary"}
    assert sum(t["routed"] for t in totals.values()) == n  # the router was not killed
    later_ms = (max(ev.second for ev in evidence) + 60) * 1000
    assert state.lagging(later_ms) == [], "answers missing from the evidence"
    assert state.settle(later_ms) >= max(ev.second for ev in evidence)
    # Answers counted twice were written twice (the killed worker's last range, again).
    extra = sum(t["answered"] for t in totals.values()) - n
    assert 0 <= extra <= sum(counts.values()) - n
