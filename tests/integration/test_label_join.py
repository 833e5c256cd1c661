"""The label joiner on a real broker: predictions (written as workers write them) meet their
labels however the labels are keyed, once each, across two evaluators (each starting its
joiner), and across a SIGKILL of a joiner (``canary joiner``) with predictions pending."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from model_canary.agents.bench.evidence_load import SimulatedServing
from model_canary.agents.bench.scrape import free_port, scrape, total
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.kafka.clients import new_producer
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.messages import Feedback, RolloutState, utc_now
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, read_topic

pytestmark = pytest.mark.integration


def _serving(settings: Settings, start_rollout: Callable[..., RolloutState]) -> SimulatedServing:
    # Never rolled back during the test (the simulated canary is as good).
    metrics = {"accuracy": {"rollback_tolerance": 10, "min_label_coverage": 0.1}}
    state = start_rollout("bench", metrics)
    return SimulatedServing(settings, state, predictions=True, label_delay_s=0.0)


def _labelled(ports: list[int]) -> float:
    return sum(
        total(scrape(p) or {}, "canary_evaluated_requests", having='metric="accuracy"')
        for p in ports
    )


def _joined(port: int) -> float:
    return total(scrape(port) or {}, "canary_labels_joined_total")


def _wait(what: Callable[[], float], n: float, timeout: float = 90.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what() >= n:
            time.sleep(3.0)  # a double count would show now
            return what()
        time.sleep(0.25)
    raise AssertionError(f"{what()} of {n}")


def _wait_for_members(settings: Settings, group: str, n: int, timeout: float = 60.0) -> None:
    """Until the group is stable with ``n`` members that each own partitions."""
    admin = Admin(settings).client
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = admin.describe_consumer_groups([group])[group].result(10)
        owners = [m for m in described.members if m.assignment.topic_partitions]
        if len(owners) == n and described.state.name == "STABLE":
            time.sleep(3)  # the joiners restore their partitions
            return
        time.sleep(0.5)
    raise AssertionError(f"{group} never had {n} members with partitions")


def _send_labels(serving: SimulatedServing, settings: Settings, keyed_by_model_every: int) -> int:
    """The labels due (every one), some keyed by model as older clients did."""
    topic = TopicCatalogue(settings.topic_prefix).feedback
    producer = new_producer(settings, "test-labels")
    codec = codec_for(Feedback)
    n = 0
    while serving._labels:
        _due, rid, label = serving._labels.popleft()
        if n % 10 == 0:  # feedback without a label first: it never joins, nor is refused
            rated = Feedback(request_id=rid, model="bench", value=4.0, observed_at=utc_now())
            producer.produce(topic, codec.encode(rated), key=rid.encode())
        fb = Feedback(request_id=rid, model="bench", label=label, observed_at=utc_now())
        key = b"bench" if n % keyed_by_model_every == 0 else rid.encode()
        producer.produce(topic, codec.encode(fb), key=key)
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
    producer.flush(30)
    return n


def test_labels_join_once_across_two_instances_however_they_are_keyed(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_rollout: Callable[..., RolloutState],
) -> None:
    serving = _serving(settings, start_rollout)
    ports = [free_port(), free_port()]
    joiners = [free_port(), free_port()]
    for i, (port, jport) in enumerate(zip(ports, joiners, strict=True)):
        spawn(
            "evaluator",
            "--metrics-port",
            str(port),
            "--joiner-metrics-port",
            str(jport),
            "--instance",
            f"ev{i}",
        )
    _wait_for_members(settings, f"{settings.topic_prefix}.joiner", 2)
    for _ in range(3):
        serving.tick(1000, time.time())
    sent = _send_labels(serving, settings, keyed_by_model_every=5)
    assert sent == 3000
    assert _wait(lambda: _joined(joiners[0]) + _joined(joiners[1]), 3000) == 3000
    assert _joined(joiners[0]) > 0 and _joined(joiners[1]) > 0, "both instances joined labels"
    assert _wait(lambda: _labelled(ports), 3000) == 3000, "the evaluator counted each once"
    rekeyed = sum(total(scrape(p) or {}, "canary_feedback_rekeyed_total") for p in joiners)
    assert rekeyed == 600
    assert read_topic(settings, topics.dead_letters, 0, timeout=0, settle=0.5) == []


def test_pending_predictions_survive_a_sigkill(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_rollout: Callable[..., RolloutState],
) -> None:
    serving = _serving(settings, start_rollout)
    jport = free_port()
    first = spawn("joiner", "--metrics-port", str(jport), "--instance", "j1")
    for _ in range(2):
        serving.tick(1000, time.time())
    _wait(lambda: total(scrape(jport) or {}, "canary_label_join_pending"), 2000)
    first.kill()
    port, jport = free_port(), free_port()
    spawn("evaluator", "--metrics-port", str(port), "--no-joiner")
    spawn("joiner", "--metrics-port", str(jport), "--instance", "j1")
    _send_labels(serving, settings, keyed_by_model_every=10**9)
    assert _wait(lambda: _joined(jport), 2000) == 2000, "every label met its prediction"
    assert _wait(lambda: _labelled([port]), 2000) == 2000
    assert total(scrape(jport) or {}, "canary_label_join_pending") == 0, "joined: forgotten"
