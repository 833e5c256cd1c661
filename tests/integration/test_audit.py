"""``canary audit`` against a real broker: balanced traffic through the agents passes, and
each kind of discrepancy written by hand is found, listed and fails the exit code."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer

from model_canary.agents.audit import audit
from model_canary.agents.cli.main import main
from model_canary.agents.client.control import ControlClient
from model_canary.agents.kafka.config import producer_config
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.messages import Arm, InferenceResult, utc_now
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, read_topic, send_requests

pytestmark = pytest.mark.integration


def _cli(
    settings: Settings, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any]]:
    code = main(
        [
            "audit",
            "--bootstrap",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
            "--json",
            *extra,
        ]
    )
    out = capsys.readouterr().out
    return code, json.loads(out.strip().splitlines()[-1])


def _result(request_id: str, *, served: bool = True) -> bytes:
    return codec_for(InferenceResult).encode(
        InferenceResult(
            request_id=request_id,
            model="iris",
            version="v1",
            arm=Arm.BASELINE,
            served=served,
            outputs=b"{}",
            latency_ms=1.0,
            created_at=utc_now(),
        )
    )


def _produce(settings: Settings, topic: str, value: bytes, **kwargs: object) -> Message:
    """Produce one message and return it as delivered (with its partition and offset)."""
    producer = Producer(producer_config(settings, "audit-test"))
    delivered: list[Message] = []

    def done(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        delivered.append(msg)

    producer.produce(topic, value, on_delivery=done, **kwargs)  # type: ignore[arg-type]
    producer.flush(10)
    return delivered[0]


def test_traffic_through_the_agents_balances(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
    capsys: pytest.CaptureFixture[str],
) -> None:
    router = spawn("router", "--instance", "r1")
    start_worker("v1")
    start_worker("v2")
    router.ready()
    control = ControlClient(settings)
    control.send("iris", "start", baseline_version="v1", canary_version="v2", wait=60)
    control.send("iris", "set_weight", weight_bp=5000)
    n = 500
    send_requests(settings, "iris", [f"user-{i}" for i in range(n)])
    assert len(read_topic(settings, topics.results, n, timeout=90, settle=0.5)) >= n

    code, summary = _cli(settings, capsys)
    assert code == 0, summary
    assert (summary["requests"], summary["served_results"], summary["lost"]) == (n, n, 0)
    assert summary["duplicated"] == 0 and summary["orphans"] == 0


def test_each_discrepancy_is_listed_and_fails_the_audit(
    settings: Settings, topics: TopicCatalogue, capsys: pytest.CaptureFixture[str]
) -> None:
    send_requests(settings, "iris", ["k0", "k1", "k2", "k3"])  # ids r0..r3
    for rid, served in (("r0", True), ("r0", False), ("r1", True), ("r1", True), ("x9", True)):
        _produce(settings, topics.results, _result(rid, served=served), key=rid.encode())
    # r2: never answered. r3: dead-lettered by a worker, so accounted for.
    _produce(
        settings,
        topics.dead_letters,
        b"payload",
        headers=[
            (h.REQUEST_ID, b"r3"),
            (h.MODEL, b"iris"),
            (h.DLQ_REASON, b"invalid-record"),
            (h.DLQ_TOPIC, topics.version_requests("iris", "v1").encode()),
        ],
    )
    # Garbage on the requests topic has no id: its dead letter is matched by position.
    garbage = _produce(settings, topics.requests, b"\xc3\x01not avro")
    _produce(
        settings,
        topics.dead_letters,
        b"\xc3\x01not avro",
        headers=[
            (h.DLQ_REASON, b"undecodable"),
            (h.DLQ_TOPIC, topics.requests.encode()),
            (h.DLQ_PARTITION, str(garbage.partition()).encode()),
            (h.DLQ_OFFSET, str(garbage.offset()).encode()),
        ],
    )

    code, summary = _cli(settings, capsys, "--timeout", "1")
    assert code == 1
    assert summary["requests"] == 5 and summary["dead_letters"] == 2
    assert (summary["served_results"], summary["shadow_results"]) == (4, 1)
    assert summary["lost_ids"] == ["r2"]
    assert summary["duplicated_ids"] == ["r1"]
    assert summary["orphan_ids"] == ["x9"]
    assert summary["dead_letter_reasons"] == {"invalid-record": 1, "undecodable": 1}


def test_since_counts_only_later_requests_and_knows_the_earlier_ones(
    settings: Settings, topics: TopicCatalogue
) -> None:
    send_requests(settings, "iris", ["a"], prefix="before")
    time.sleep(1.5)  # timestamps are in milliseconds: make the two batches distinct
    since = utc_now()
    time.sleep(0.5)
    send_requests(settings, "iris", ["b"], prefix="after")
    for rid in ("before0", "after0"):
        _produce(settings, topics.results, _result(rid), key=rid.encode())

    report = audit(settings, since=since, timeout=1)
    assert report.ok, report.to_dict()
    assert (report.accounting.requests, report.accounting.served_results) == (1, 1)


def test_an_answer_still_in_flight_is_awaited(settings: Settings, topics: TopicCatalogue) -> None:
    import threading

    send_requests(settings, "iris", ["a"], prefix="late")
    timer = threading.Timer(
        2.0, lambda: _produce(settings, topics.results, _result("late0"), key=b"late0")
    )
    timer.start()
    try:
        report = audit(settings, timeout=30)
    finally:
        timer.join()
    assert report.ok and report.accounting.served_results == 1
