"""Rollback with a canary backlog, and shadow mode, on a real broker with real workers."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest

from model_canary.agents.client.control import ControlClient
from model_canary.agents.client.inference import CanaryClient
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.messages import Arm, InferenceResult
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, header, read_topic, send_requests

pytestmark = pytest.mark.integration

ECHO = "python:tests.integration.models:echo"


def _results(settings: Settings, topics: TopicCatalogue, n: int) -> list[InferenceResult]:
    """The results of both topics: the served answers and the shadows'."""
    codec = codec_for(InferenceResult)
    messages = read_topic(settings, [topics.results, topics.shadow_results], n, settle=2)
    return [codec.decode(m.value() or b"") for m in messages]


def test_rollback_answers_the_canary_backlog_from_the_baseline_exactly_once(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    router = spawn("router", "--instance", "r1")
    start_worker(adapter=ECHO, version="v1")
    router.ready()
    control = ControlClient(settings)
    control.send("iris", "start", baseline_version="v1", canary_version="v2")
    control.send("iris", "set_weight", weight_bp=5000)
    # No v2 worker is running: the canary's share queues up on its topic.
    before = send_requests(settings, "iris", [f"u{i}" for i in range(2000)], prefix="a")
    time.sleep(1.0)
    outcome = control.send("iris", "rollback", reason="test")
    assert outcome.event.weight_bp == 0
    after = send_requests(settings, "iris", [f"u{i}" for i in range(500)], prefix="b")
    canary_worker = start_worker(
        adapter=ECHO, version="v2"
    )  # sees the rollback, hands its backlog back

    results = _results(settings, topics, len(before) + len(after))
    served = Counter(r.request_id for r in results if r.served)
    assert set(served) == set(before) | set(after), "a request went unanswered"
    assert max(served.values()) == 1, "a request was answered twice"
    assert {r.version for r in results} == {"v1"}, "the rolled-back canary answered"
    backlog = read_topic(settings, topics.version_requests("iris", "v2"), 0, timeout=0)
    assert 800 < len(backlog) < 1200, "about half the first requests were queued for v2"
    backlog_ids = {header(m, h.REQUEST_ID) for m in backlog}
    answered = [r for r in results if r.request_id in backlog_ids]
    assert len(answered) == len(backlog_ids)
    assert {(r.version, r.arm) for r in answered} == {("v1", Arm.BASELINE)}
    assert canary_worker.alive


def test_shadow_serves_every_request_from_the_baseline_and_mirrors_it(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    router = spawn("router", "--instance", "r1")
    start_worker(adapter=ECHO, version="v1")
    start_worker(adapter=ECHO, version="v2")
    router.ready()
    control = ControlClient(settings)
    control.send("iris", "start", baseline_version="v1", canary_version="v2", mode="shadow")
    with CanaryClient(settings) as client:
        answers = [
            client.infer({"x": [[float(i)]]}, model="iris", key=f"k{i}", timeout=30)
            for i in range(20)
        ]
    assert {(a.version, a.served) for a in answers} == {("v1", True)}
    ids = send_requests(settings, "iris", [f"user-{i}" for i in range(1000)])

    results = _results(settings, topics, 2 * (len(ids) + 20))
    by_id: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for r in results:
        by_id[r.request_id].append((r.version, r.served))
    assert len(by_id) == len(ids) + 20
    for rid, got in by_id.items():
        assert sorted(got) == [("v1", True), ("v2", False)], (rid, got)
    # A plain reader of the results topic sees the served answers only, each marked so.
    served = read_topic(settings, topics.results, len(ids) + 20, settle=1)
    assert len(served) == len(ids) + 20
    assert {(header(m, "canary-served"), header(m, "canary-version")) for m in served} == {
        ("true", "v1")
    }
