"""Malformed requests and invalid commands: dead letters and rejection events, never a crash,
never a state change."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import fastavro
import pytest
from confluent_kafka import Producer

from model_canary.agents.client.control import ControlClient
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import INFERENCE_RESULT_CONTENT_TYPE, MAGIC, codec_for
from model_canary.streams.codec.results import decode_result
from model_canary.streams.messages import (
    ControlCommand,
    ControlEvent,
    InferenceResult,
    epoch_ms,
    utc_now,
)
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, header, read_topic, send_requests

pytestmark = pytest.mark.integration

AVRO = "application/vnd.modelcanary.inference-request+avro"


def _json(**doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_each_malformed_request_is_dead_lettered_with_its_reason_while_routing_goes_on(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
    make_producer: Callable[..., Producer],
) -> None:
    router = spawn("router", "--instance", "r1", extra_env={"CANARY_MAX_REQUEST_BYTES": "4096"})
    start_worker()
    router.ready()
    ControlClient(settings).send("iris", "register", baseline_version="v1")
    producer = make_producer()
    good_inputs: dict[str, list[object]] = {"inputs": []}
    bad: dict[str, tuple[bytes, h.RawHeaders]] = {
        "undecodable": (b"\x00\x01garbage", [(h.CONTENT_TYPE, AVRO)]),
        "undecodable-json": (b"{not json", [(h.CONTENT_TYPE, h.JSON)]),
        "missing-model": (_json(request_id="x1", inputs=good_inputs), [(h.CONTENT_TYPE, h.JSON)]),
        "no-request-id": (_json(model="iris", inputs=good_inputs), [(h.CONTENT_TYPE, h.JSON)]),
        "unknown-model": (
            _json(request_id="x2", model="nope", inputs=good_inputs),
            [(h.CONTENT_TYPE, h.JSON)],
        ),
        "too-large": (b"x" * 5000, [(h.CONTENT_TYPE, AVRO), (h.MODEL, "iris")]),
        "unknown-schema": (MAGIC + b"\x01" * 8 + b"\x00", [(h.CONTENT_TYPE, AVRO)]),
        # Metadata headers present, so the router passes it on undecoded: the worker catches it.
        "corrupt-body": (
            MAGIC + codec_for(InferenceResult).fingerprint + b"\xff\xff",
            [(h.CONTENT_TYPE, AVRO), (h.MODEL, "iris"), (h.REQUEST_ID, "x3")],
        ),
    }
    for name, (value, headers) in bad.items():
        producer.produce(topics.requests, value, key=name.encode(), headers=headers)
    producer.flush(10)
    send_requests(settings, "iris", ["u1", "u2"], prefix="ok")
    json_ok = _json(request_id="ok-json", model="iris", routing_key="u3", inputs=good_inputs)
    producer.produce(topics.requests, json_ok, headers=[(h.CONTENT_TYPE, h.JSON)])
    producer.flush(10)

    refused = {name: v for name, v in bad.items() if name != "no-request-id"}
    dead = read_topic(settings, topics.dead_letters, len(refused), settle=2)
    reasons = {(m.key() or b"").decode(): header(m, h.DLQ_REASON) for m in dead}
    assert reasons == {
        "undecodable": "undecodable",
        "undecodable-json": "undecodable",
        "missing-model": "invalid-record",
        "unknown-model": "unknown-model",
        "too-large": "too-large",
        "unknown-schema": "unknown-schema",
        "corrupt-body": "invalid-record",
    }
    for m in dead:
        assert header(m, h.DLQ_DETAIL), "every dead letter says what is wrong"
        assert header(m, h.DLQ_AGENT) in ("router", "worker")
        original = bad[(m.key() or b"").decode()][0]
        assert m.value() == original, "the message is kept whole"

    # Every request is answered, a refused one with an error result (under where it was
    # written when it has no id), in JSON when it came as JSON. A JSON request without an id
    # is routed and served under one.
    answered = read_topic(settings, topics.results, len(bad) + 3, settle=2)
    results = {}
    for m in answered:
        r = decode_result(m.value(), m.headers())
        results[r.routing_key or r.request_id] = (r.error_type, header(m, h.CONTENT_TYPE))
        assert header(m, h.REQUEST_ID) == r.request_id and header(m, "canary-served") == "true"
    avro, json_ = INFERENCE_RESULT_CONTENT_TYPE, h.JSON
    assert results == {
        "u1": (None, avro),
        "u2": (None, avro),
        "u3": (None, json_),
        "no-request-id": (None, json_),
        "undecodable": ("undecodable", avro),
        "undecodable-json": ("undecodable", json_),
        "missing-model": ("invalid-record", json_),
        "unknown-model": ("unknown-model", json_),
        "too-large": ("too-large", avro),
        "unknown-schema": ("unknown-schema", avro),
        "x3": ("invalid-record", avro),
    }
    assert router.alive, "the router is still running"


def _raw_command(**fields: Any) -> bytes:
    """A command as another-language producer could write it, bypassing Python's checks."""
    codec = codec_for(ControlCommand)
    record = {
        "command_id": "raw",
        "model": "iris",
        "action": "set_weight",
        "issued_by": "operator",
        "issued_at": epoch_ms(utc_now()),
        "reason": "",
        "baseline_version": None,
        "canary_version": None,
        "mode": None,
        "steps_bp": [],
        "weight_bp": None,
        "shadow_sample_bp": None,
        "plan_json": None,
        "key_id": None,
        "signature": None,
    }
    record.update(fields)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, codec.schema, record)
    return MAGIC + codec.fingerprint + body.getvalue()


def test_invalid_commands_are_rejected_with_an_event_and_change_nothing(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    make_producer: Callable[..., Producer],
) -> None:
    spawn("router", "--instance", "r1").ready()
    control = ControlClient(settings)
    control.send("iris", "start", baseline_version="v1", canary_version="v2")
    assert control.send("iris", "set_weight", weight_bp=300).applied
    before = control.state("iris")
    assert before is not None
    outcomes = [
        control.send("iris", "start", canary_version="v3", check=False),  # forbidden
        control.send("nope", "pause", check=False),  # unknown model
        control.send("iris", "resume", check=False),  # not paused
    ]
    assert [o.event.reason for o in outcomes] == [
        "forbidden-transition",
        "unknown-model",
        "forbidden-transition",
    ]
    producer = make_producer()
    raw = {
        "weight-150": _raw_command(command_id="w150", weight_bp=15_000),
        "unknown-action": _raw_command(command_id="act", action="explode"),
        "garbage": b"\x00not a command",
    }
    for name, value in raw.items():
        producer.produce(topics.control, value, key=name.encode())
    producer.flush(10)

    codec = codec_for(ControlEvent)
    events = [
        codec.decode(m.value() or b"") for m in read_topic(settings, topics.events, 8, settle=2)
    ]
    raw_rejections = [e for e in events if e.outcome == "rejected" and e.command_id == ""]
    assert len(raw_rejections) == 3
    assert {e.reason for e in raw_rejections} == {"invalid-record", "undecodable"}
    assert all(e.detail for e in events if e.outcome == "rejected")
    after = control.state("iris")
    assert after == before, "a rejected command changed the rollout state"
