"""Hostile messages to every topic an agent consumes: no agent stops, each message is
dead-lettered with a reason or rejected with an event, and valid traffic sent in between is
answered exactly once. A message from a newer writer schema is read.

``CANARY_FUZZ_MESSAGES`` sets the hostile messages per topic (200 by default; the dedicated
run uses 10000).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from model_canary.agents.client.control import ControlClient
from model_canary.agents.router.agent import _ROUTER_HEADERS as ROUTER_HEADERS
from model_canary.agents.worker.agent import _Routed
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import SCHEMA_DIRS_ENV, codec_for, decode_any
from model_canary.streams.codec.convert import to_avro
from model_canary.streams.codec.requests import decode_request
from model_canary.streams.errors import DecodeError
from model_canary.streams.evidence.wire import decode_evidence
from model_canary.streams.messages import (
    Action,
    ControlCommand,
    ControlEvent,
    Evidence,
    Feedback,
    InferenceRequest,
    InferenceResult,
    Prediction,
    RolloutState,
    utc_now,
)
from model_canary.streams.rollout import CommandRejectedError, apply_command
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, answers, header, read_topic, send_requests
from tests.unit.record_strategies import HEADERS, avro_message, hostile_payload, raw_message
from tests.unit.test_hostile_input import newer_schema

pytestmark = pytest.mark.integration

MESSAGES = int(os.environ.get("CANARY_FUZZ_MESSAGES", "200"))
MAX_REQUEST_BYTES = 8192
VALID_EVERY = 100  # one valid request per this many hostile messages


def _rejected_by_worker(payload: bytes, headers: list[tuple[str, Any]]) -> bool:
    meta = h.header_dict(headers)
    try:
        _Routed.from_headers(meta)
        request = decode_request(
            payload, meta.get(h.CONTENT_TYPE), max_bytes=MAX_REQUEST_BYTES, now=utc_now()
        )
    except DecodeError:
        return True
    return request.model != "iris"


def _undecodable(codec_type: type[Any]) -> Callable[[bytes], bool]:
    def check(payload: bytes) -> bool:
        try:
            codec_for(codec_type).decode(payload)
        except DecodeError:
            return True
        return False

    return check


def _not_evidence(payload: bytes) -> bool:
    """What the evaluator refuses on the evidence topic: a payload that is neither an
    :class:`Evidence` nor an :class:`EvidenceSet` (a hostile payload drawn for ``Evidence`` can
    be a valid set, whose stable-arm or unknown-rollout records are left out by design)."""
    try:
        decode_evidence(payload)
    except DecodeError:
        return True
    return False


class _Hostile:
    """The hostile messages sent, per topic, as ``(key, kind)``."""

    def __init__(self) -> None:
        self.sent: dict[str, list[str]] = {}
        self.undecodable_commands = 0
        self.command_ids: Counter[str] = Counter()

    def key(self, topic: str) -> str:
        keys = self.sent.setdefault(topic, [])
        keys.append(f"hostile-{topic.rsplit('.', 1)[-1]}-{len(keys)}")
        return keys[-1]


def _control_rejected(state: RolloutState) -> Callable[[bytes], bool]:
    """Keep only control messages the controller must reject (never one that applies)."""

    def check(payload: bytes) -> bool:
        try:
            record = decode_any(payload)
        except DecodeError:
            return True
        if not isinstance(record, ControlCommand):
            return type(record).__name__ != "Decision"  # decisions are kept, not rejected
        try:
            apply_command(state if record.model == state.model else None, record, utc_now())
        except CommandRejectedError:
            return True
        return False

    return check


@pytest.mark.timeout(600 + MESSAGES // 4)  # the dedicated run takes many minutes
def test_hostile_messages_to_every_consumed_topic(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
    make_producer: Callable[..., Producer],
) -> None:
    began = time.monotonic()
    env = {"CANARY_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)}
    router = spawn("router", "--instance", "r1", extra_env=env)
    router.ready()
    control = ControlClient(settings)
    control.send("iris", "start", baseline_version="v1", canary_version="v2")
    workers = [start_worker("v1"), start_worker("v2")]
    evaluator = spawn("evaluator", "--interval", "0.5")
    state = control.state("iris")
    assert state is not None
    producer = make_producer(**{"message.max.bytes": 4_000_000})
    hostile = _Hostile()
    valid: list[str] = []
    v1, v2 = (topics.version_requests("iris", v) for v in ("v1", "v2"))
    request_like = hostile_payload(InferenceRequest, max_huge=4 * MAX_REQUEST_BYTES)
    to_worker = st.tuples(request_like, HEADERS).filter(lambda ph: _rejected_by_worker(*ph))
    # The router replaces its own headers before the worker sees them.
    to_router = st.tuples(request_like, HEADERS).filter(
        lambda ph: _rejected_by_worker(ph[0], [(k, v) for k, v in ph[1] if k not in ROUTER_HEADERS])
    )
    strategies: dict[str, st.SearchStrategy[tuple[bytes, list[tuple[str, Any]]]]] = {
        topics.requests: to_router,
        v1: to_worker,
        v2: to_worker,
        topics.control: st.tuples(
            st.one_of(hostile_payload(ControlCommand, 20_000), raw_message(ControlCommand)).filter(
                _control_rejected(state)
            ),
            HEADERS,
        ),
        topics.rollout_state: st.tuples(
            hostile_payload(RolloutState, 20_000).filter(_undecodable(RolloutState)), HEADERS
        ),
        topics.evidence: st.tuples(
            hostile_payload(Evidence, 20_000).filter(_not_evidence), HEADERS
        ),
        topics.predictions: st.tuples(
            hostile_payload(Prediction, 20_000).filter(_undecodable(Prediction)), HEADERS
        ),
        topics.feedback: st.tuples(
            hostile_payload(Feedback, 20_000).filter(_undecodable(Feedback)), HEADERS
        ),
    }

    @hsettings(
        max_examples=MESSAGES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def send_one_per_topic(data: st.DataObject) -> None:
        for topic, strategy in strategies.items():
            payload, headers = data.draw(strategy, label=topic)
            key = hostile.key(topic)
            if topic == topics.control:
                try:
                    record = decode_any(payload)
                except DecodeError:
                    record = None
                if isinstance(record, ControlCommand):
                    hostile.command_ids[record.command_id] += 1
                else:
                    hostile.undecodable_commands += 1
            if topic == topics.rollout_state and len(hostile.sent[topic]) % 10 == 0:
                key = "iris"  # garbage under a real model's key must not replace its state
            producer.produce(topic, payload, key=key.encode(), headers=headers)
        if len(hostile.sent[topics.requests]) % VALID_EVERY == 0:
            producer.flush(30)
            n = len(valid)
            valid.extend(send_requests(settings, "iris", [f"u{n}"], prefix=f"ok{n}-"))

    send_one_per_topic()
    producer.flush(60)
    sent = {topic: len(keys) for topic, keys in hostile.sent.items()}
    valid.extend(send_requests(settings, "iris", ["u-last"], prefix="ok-last-"))

    # Dead letters: every hostile message but the state topic's, once, with its reason.
    dead_topics = [
        topics.requests,
        v1,
        v2,
        topics.evidence,
        topics.predictions,
        topics.feedback,
    ]
    expected_dead = sum(sent[t] for t in dead_topics) + hostile.undecodable_commands
    dead = read_topic(settings, topics.dead_letters, expected_dead, timeout=600, settle=3)
    by_key = Counter((m.key() or b"").decode("utf-8", "replace") for m in dead)
    for topic in dead_topics:
        missing = [k for k in hostile.sent[topic] if by_key[k] != 1]
        assert not missing, f"{topic}: {len(missing)} not dead-lettered exactly once: {missing[:5]}"
    reasons = Counter((header(m, h.DLQ_AGENT), header(m, h.DLQ_REASON)) for m in dead)
    assert all(reason for _agent, reason in reasons), reasons
    # Hostile messages may carry canary-dlq-* headers of their own: only the agent's remain.
    agents = {"router", "worker", "controller", "evaluator", "joiner"}
    assert {agent for agent, _reason in reasons} <= agents
    assert all(sum(k == h.DLQ_REASON for k, _ in h.as_list(m.headers())) == 1 for m in dead)
    assert all(header(m, h.DLQ_DETAIL) for m in dead)

    # Control: every hostile message rejected with an event and a reason, nothing applied.
    codec = codec_for(ControlEvent)
    events = [
        codec.decode(m.value() or b"")
        for m in read_topic(settings, topics.events, 1 + sent[topics.control], timeout=300)
    ]
    rejected = [e for e in events if e.outcome == "rejected"]
    assert all(e.reason for e in rejected)
    assert sum(1 for e in rejected if e.command_id == "") == hostile.undecodable_commands
    named = Counter(e.command_id for e in rejected if e.command_id)
    assert not hostile.command_ids - named, "a hostile command was not rejected"
    assert control.state("iris") == state

    # Every agent is still running; valid requests were answered exactly once.
    for agent in [router, *workers, evaluator]:
        assert agent.alive, f"{agent.args[0]} stopped: {agent.log()[-2000:]}"
    # A restarted router reads the state topic, garbage included, and routes as before.
    router.stop()
    spawn("router", "--instance", "r1", extra_env=env)
    valid.extend(send_requests(settings, "iris", ["u-after"], prefix="ok-restart-"))
    # (Hostile requests whose id could be read are answered too, with error results.)
    answered = answers(settings, topics.results, valid, timeout=300, settle=3)
    assert dict(answered) == dict.fromkeys(valid, 1)
    for agent in [*workers, evaluator]:
        assert agent.alive, f"{agent.args[0]} stopped: {agent.log()[-2000:]}"

    figures = {
        "messages_per_topic": sent,
        "dead_letter_reasons": {f"{a}:{r}": n for (a, r), n in sorted(reasons.items())},
        "rejection_events": len(rejected),
        "valid_requests": len(valid),
        "seconds": round(time.monotonic() - began, 1),
    }
    print("FUZZ " + json.dumps(figures, sort_keys=True))


def test_messages_from_a_newer_writer_schema_are_read_by_the_running_agents(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    make_producer: Callable[..., Producer],
    tmp_path: Path,
) -> None:
    schemas = tmp_path / "writer-schemas"
    schemas.mkdir()
    for cls in (InferenceRequest, ControlCommand):
        (schemas / f"{cls.__name__}_v2.avsc").write_text(json.dumps(newer_schema(cls)))
    env = {SCHEMA_DIRS_ENV: str(schemas)}
    spawn("router", "--instance", "r1", extra_env=env)
    worker = ("worker", "--model", "iris", "--version", "v1", "--adapter", "noop:")
    spawn(*worker, "--instance", "w-iris-v1", extra_env=env)
    control = ControlClient(settings)
    producer = make_producer()
    now = utc_now()
    command = ControlCommand(
        command_id="v2-cmd",
        model="iris",
        action=Action.REGISTER,
        issued_at=now,
        baseline_version="v1",
    )
    producer.produce(
        topics.control,
        avro_message(newer_schema(ControlCommand), {**to_avro(command), "added_in_v2": "x"}),
        key=b"iris",
    )
    producer.flush(10)
    deadline = time.monotonic() + 60
    while control.state("iris") is None and time.monotonic() < deadline:
        time.sleep(0.5)
    state = control.state("iris")
    assert state is not None and state.rollout_id == "v2-cmd"
    request = InferenceRequest(request_id="v2-req", model="iris", inputs=b"{}", created_at=now)
    producer.produce(
        topics.requests,
        avro_message(newer_schema(InferenceRequest), {**to_avro(request), "added_in_v2": "x"}),
        key=b"u1",
    )
    producer.flush(10)
    results = read_topic(settings, topics.results, 1, timeout=60)
    assert [codec_for(InferenceResult).decode(m.value() or b"").request_id for m in results] == [
        "v2-req"
    ]
