"""SIGKILL the router or a worker in the middle of a load: every request is routed and answered
exactly once for read_committed readers."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from itertools import pairwise

import pytest
from confluent_kafka import Consumer, TopicPartition

from model_canary.agents.client.control import ControlClient
from model_canary.agents.kafka.config import consumer_config
from model_canary.streams import headers as h
from model_canary.streams.evidence.wire import decode_evidence
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, header, read_topic, route_of, send_requests

pytestmark = pytest.mark.integration


class _Watermarks:
    """Messages written to some topics so far, committed or not (the sum of their high
    watermarks; transaction markers count too), through one consumer kept open so that a
    reading takes a few milliseconds."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self._consumer = Consumer(consumer_config(settings, "watermarks", "watermarks-unused"))
        self._partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]

    def __call__(self) -> int:
        return sum(
            self._consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self._partitions
        )

    def close(self) -> None:
        self._consumer.close()


def _kill_when(agent: Agent, settings: Settings, topics: list[str], at_least: int) -> int:
    """SIGKILL ``agent`` as soon as ``at_least`` messages were written to ``topics`` (read
    every few milliseconds); the count after the kill (nothing more comes from the killed
    process)."""
    written = _Watermarks(settings, topics)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if written() >= at_least:
                agent.kill()
                return written()
            time.sleep(0.005)
    finally:
        written.close()
    raise AssertionError(f"fewer than {at_least} messages arrived in 120 s:\n{agent.log()[-3000:]}")


def test_router_killed_mid_stream_routes_every_request_exactly_once(
    settings: Settings, topics: TopicCatalogue, spawn: Callable[..., Agent]
) -> None:
    n = 50_000
    # A first router applies the rollout (its controller writes the rollout state), then
    # stops gracefully; the requests are queued while no router runs, so the next router
    # starts with all of them waiting and is killed early in that backlog (at 2% of it, read
    # every few milliseconds; a router routes about 100k requests/s, so the whole backlog
    # takes it half a second or more).
    first = spawn("router", "--instance", "r1")
    first.ready()
    control = ControlClient(settings)
    control.send("iris", "start", baseline_version="v1", canary_version="v2")
    control.send("iris", "set_weight", weight_bp=5000)
    assert first.stop() == 0
    send_requests(settings, "iris", [f"user-{i % 7000}" for i in range(n)])
    out = [topics.version_requests("iris", v) for v in ("v1", "v2")]
    busy = spawn("router", "--instance", "r1")
    after_kill = _kill_when(busy, settings, out, 1_000)
    # Fewer than n messages (markers included) were written when it died: it was killed with
    # requests still to route, whichever of them it had committed.
    assert after_kill < n, f"the router finished before it could be killed ({after_kill} written)"
    spawn("router", "--instance", "r1")  # same instance: aborts the killed one's transaction

    routed = read_topic(settings, out, n, timeout=120, settle=2)
    counts = Counter(header(m, h.REQUEST_ID) for m in routed)
    assert len(counts) == n, f"{n - len(counts)} requests lost"
    assert max(counts.values()) == 1, f"duplicates: {[k for k, c in counts.items() if c > 1][:5]}"
    # The restarted router restored the rollout state: every key kept its arm across the kill.
    arms: dict[bytes, set[str]] = {}
    for m in routed:
        arms.setdefault(m.key() or b"", set()).add(route_of(m).arm.value)
    assert all(len(a) == 1 for a in arms.values()), "a key changed arms across the restart"
    # At 50% the default plan's control arm takes the baseline's whole share.
    assert {a for s in arms.values() for a in s} == {"control", "canary"}


def test_worker_killed_mid_stream_answers_every_request_exactly_once(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    n = 20_000
    spawn("router", "--instance", "r1").ready()
    ControlClient(settings).send("iris", "register", baseline_version="v1")
    send_requests(settings, "iris", [f"user-{i}" for i in range(n)])
    first = start_worker("v1", "--metric-events")
    _kill_when(first, settings, [topics.results], 4_000)
    start_worker("v1", "--metric-events")

    results = read_topic(settings, topics.results, n, timeout=120, settle=2)
    counts = Counter((m.key() or b"").decode() for m in results)
    assert len(counts) == n, f"{n - len(counts)} requests unanswered"
    assert max(counts.values()) == 1, "a request was answered twice"
    metrics = read_topic(settings, topics.metrics, n, timeout=30, settle=1)
    assert len(metrics) == n, "one metric event per answered request"


def test_evidence_is_written_exactly_once_when_the_router_and_a_worker_are_killed(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    """Routed and served evidence are aggregated inside the transactions that consume the
    requests: killed mid-stream, the router and a worker write, once restarted, the evidence
    of every request exactly once (read_committed), and every record names the inputs its
    transaction consumed, disjoint from every other transaction's."""
    n = 20_000
    # As in the router test: the rollout applied by a first router, the requests queued while
    # no router runs, a fresh router killed early in that backlog; then the workers start on
    # the routed backlog and one is killed early in it.
    first = spawn("router", "--instance", "r1")
    first.ready()
    control = ControlClient(settings)
    control.send("iris", "start", baseline_version="v1", canary_version="v2")
    control.send("iris", "set_weight", weight_bp=5000)
    assert first.stop() == 0
    send_requests(settings, "iris", [f"user-{i}" for i in range(n)])
    routed_topics = [topics.version_requests("iris", v) for v in ("v1", "v2")]
    at_kill = _kill_when(spawn("router", "--instance", "r1"), settings, routed_topics, 1_000)
    assert at_kill < n, f"the router finished before it could be killed ({at_kill} written)"
    spawn("router", "--instance", "r1")
    workers = {v: start_worker(v) for v in ("v1", "v2")}
    answered_at_kill = _kill_when(workers["v1"], settings, [topics.results], 2_000)
    assert answered_at_kill < n, f"the workers finished first ({answered_at_kill} written)"
    start_worker("v1")

    results = read_topic(settings, topics.results, n, timeout=180, settle=2)
    assert len({(m.key() or b"") for m in results}) == n
    time.sleep(3)  # the last transactions' evidence
    messages = read_topic(settings, topics.evidence, 1)
    # A record alone or a set (the default format) per message.
    evidence = [ev for m in messages for ev in decode_evidence(m.value() or b"")[0]]
    routed = sum(ev.requests for ev in evidence if ev.kind == "routed")
    served = sum(ev.requests for ev in evidence if ev.kind == "served")
    assert (routed, served) == (n, n), "each request's evidence exactly once"
    by_arm = Counter(
        ev.arm.value for ev in evidence for _ in range(ev.requests) if ev.kind == "served"
    )
    assert set(by_arm) == {"control", "canary"}  # at 50%: the control arm, no baseline
    # No two transactions claim the same input offsets.
    seen: dict[tuple[str, str, int], list[tuple[int, int]]] = {}
    for ev in evidence:
        for r in ev.offsets:
            spans = seen.setdefault((ev.kind.value, r.topic, r.partition), [])
            if (r.first, r.last) not in spans:
                spans.append((r.first, r.last))
    for spans in seen.values():
        spans.sort()
        assert all(a[1] < b[0] for a, b in pairwise(spans)), spans
