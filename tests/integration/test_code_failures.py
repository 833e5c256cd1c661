"""Exactly-once when code fails, not only when processes die (issue #10, items 1-3).

An oversized request (the requests topic takes 10 MB; the router's outputs do not) and an
oversized model output (2 MB) are answered with an error result and dead-lettered with a
bounded copy; no other request of their batch is lost, nothing is answered twice. (Before the
fix the router and the worker stopped, and their batch's offsets were committed on the way out:
11 and 6 requests lost.)
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from model_canary.agents.audit import audit
from model_canary.agents.client import CanaryClient, ControlClient
from model_canary.agents.kafka.admin import Admin
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.messages import InferenceResult
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, header, read_topic

pytestmark = pytest.mark.integration

BIG = 5 * 1024 * 1024
TEN_MB = str(10 * 1024 * 1024)


def _results(settings: Settings, catalogue: TopicCatalogue, n: int) -> dict[str, InferenceResult]:
    codec = codec_for(InferenceResult)
    results = [codec.decode(m.value() or b"") for m in read_topic(settings, catalogue.results, n)]
    return {r.request_id: r for r in results}


def test_an_oversized_request_is_refused_and_its_batch_is_not_lost(
    settings: Settings,
    catalogue: TopicCatalogue,
    make_topic: Callable[..., str],
    admin: Admin,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    # Users may raise the requests topic's limit; the version and dead-letter topics keep theirs.
    make_topic(catalogue.requests, partitions=1, **{"max.message.bytes": TEN_MB})
    admin.ensure_topics(catalogue.core_specs())
    spawn("router", "--instance", "r1").ready()
    ControlClient(settings).send("iris", "register", baseline_version="v1")
    start_worker("v1")

    client = CanaryClient(settings)
    ids = [
        client.send(b'{"inputs":[]}', model="iris", request_id=f"a{i}", flush=False)
        for i in range(5)
    ]
    big = Producer({"bootstrap.servers": settings.bootstrap_servers, "message.max.bytes": TEN_MB})
    headers: h.RawHeaders = [
        (h.MODEL, b"iris"),
        (h.REQUEST_ID, b"big"),
        (h.CONTENT_TYPE, b"avro/binary"),
    ]
    big.produce(catalogue.requests, b"\x00" * BIG, key=b"big", headers=headers)
    big.flush(30)
    ids += [
        client.send(b'{"inputs":[]}', model="iris", request_id=f"b{i}", flush=False)
        for i in range(5)
    ]
    client.close()

    report = audit(settings, timeout=60)
    assert report.lost == 0 and report.duplicated == 0, report.to_dict()
    assert report.accounting.requests == 11
    results = _results(settings, catalogue, 11)
    assert set(results) == {*ids, "big"}
    assert results["big"].error_type == "too-large"
    assert all(results[i].error is None for i in ids)
    dead = read_topic(settings, catalogue.dead_letters, 1)
    assert len(dead) == 1
    assert header(dead[0], h.DLQ_REASON) == "too-large"
    assert header(dead[0], h.DLQ_SIZE) == str(BIG)
    assert header(dead[0], h.DLQ_TRUNCATED) == "1"
    assert len(dead[0].value() or b"") < 100_000


def test_an_oversized_model_output_is_refused_and_its_batch_is_not_lost(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    spawn("router", "--instance", "r1").ready()
    ControlClient(settings).send("iris", "register", baseline_version="v1")
    start_worker("v1", adapter="python:tests.integration.models:huge_on_negative")

    client = CanaryClient(settings)
    values = [1.0, 2.0, -3.0, 4.0, 5.0, -6.0, 7.0]
    ids = [
        client.send({"x": [[v]]}, model="iris", request_id=f"r{i}", flush=False)
        for i, v in enumerate(values)
    ]
    client.close()

    report = audit(settings, timeout=60)
    assert report.lost == 0 and report.duplicated == 0, report.to_dict()
    results = _results(settings, topics, len(ids))
    assert set(results) == set(ids)
    failed = {rid for rid, r in results.items() if r.error is not None}
    assert failed == {"r2", "r5"}
    assert {results[r].error_type for r in failed} == {"too-large"}
    dead = read_topic(settings, topics.dead_letters, 2)
    assert len(dead) == 2
    assert {header(m, h.DLQ_PAYLOAD) for m in dead} == {"output"}
    assert {header(m, h.REQUEST_ID) for m in dead} == {"r2", "r5"}
    assert {header(m, h.DLQ_TRUNCATED) for m in dead} == {"1"}


def test_a_write_the_broker_refuses_after_queueing_is_tracked_to_its_request(
    settings: Settings,
    topics: TopicCatalogue,
    admin: Admin,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    # The router learned v1's limit (1 MB) when it first routed; an operator then lowers it:
    # the broker refuses the next large request only when the transaction commits.
    spawn("router", "--instance", "r1").ready()
    ControlClient(settings).send("iris", "register", baseline_version="v1")
    start_worker("v1")
    client = CanaryClient(settings)
    first = client.infer(b'{"inputs":[]}', model="iris", request_id="first", timeout=60)
    assert first.error is None
    admin.alter_topic_config(topics.version_requests("iris", "v1"), {"max.message.bytes": "2000"})

    ids = [
        client.send(b'{"inputs":[]}', model="iris", request_id=f"a{i}", flush=False)
        for i in range(3)
    ]
    large = b'{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["' + b"y" * 5000
    ids.append(client.send(large + b'"]}]}', model="iris", request_id="large", flush=False))
    ids += [
        client.send(b'{"inputs":[]}', model="iris", request_id=f"b{i}", flush=False)
        for i in range(3)
    ]
    client.close()

    report = audit(settings, timeout=90)
    assert report.lost == 0 and report.duplicated == 0, report.to_dict()
    results = _results(settings, topics, len(ids) + 1)
    assert results["large"].error_type == "too-large"
    assert all(results[i].error is None for i in ids if i != "large")
