"""A rolling upgrade: workers answer the requests this router routed (one ``canary-route``
header) and those an older router routed (one header per field) alike: the same answers with
the same headers, the same served evidence. Run in process on the in-memory Kafka."""

from __future__ import annotations

from dataclasses import replace

import pytest

from model_canary.agents.testing import FakeKafka, FakeMessage, run_until_idle, using
from model_canary.agents.worker.adapters import EchoAdapter
from model_canary.agents.worker.agent import Worker, WorkerOptions
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.codec.results import decode_result
from model_canary.streams.evidence.wire import decode_evidence
from model_canary.streams.latency import Delivery
from model_canary.streams.messages import (
    EPOCH,
    Arm,
    InferenceRequest,
    Mode,
    Phase,
    RolloutState,
)
from model_canary.streams.route_header import decode_route, read_route
from model_canary.streams.settings import Settings
from tests.unit.test_agents_in_process import CAT, SETTINGS, avro_request, serve_router, state
from tests.unit.test_route_header import old_router_headers

STATES = {
    "canary-50": state(
        canary_version="v2", phase=Phase.PROGRESSING, weight_bp=5000, rollout_id="ro1"
    ),
    "shadow": state(
        canary_version="v2",
        phase=Phase.PROGRESSING,
        mode=Mode.SHADOW,
        shadow_sample_bp=5000,
        rollout_id="ro1",
    ),
}


def _routed(settings: Settings, rollout: RolloutState) -> list[FakeMessage]:
    """40 requests routed by this router, as its version topics hold them."""
    kafka = FakeKafka()
    with using(kafka):
        for i in range(40):
            kafka.send(CAT.requests, **avro_request(f"r{i}", key=f"user-{i}".encode()))  # type: ignore[arg-type]
        serve_router(kafka, rollout, settings=settings)  # this router, run until idle
        return [m for v in ("v1", "v2") for m in kafka.read(CAT.version_requests("iris", v))]


def _as_older_router_wrote(msg: FakeMessage) -> FakeMessage:
    """The same routed copy with the headers a router before ``canary-route`` wrote."""
    raw = h.as_list(msg.headers())
    own = [(k, v) for k, v in raw if k not in (h.ROUTE, h.SHADOW)]
    route = decode_route(dict(raw)[h.ROUTE] or b"")
    written = [*own, *old_router_headers(route)]
    return replace(msg, _headers=[(k, v.encode() if isinstance(v, str) else v) for k, v in written])


def _serve(
    kafka: FakeKafka, rollout: RolloutState, routed: list[FakeMessage], versions: tuple[str, ...]
) -> None:
    """Publish ``rollout`` and the ``routed`` copies, then run a worker of each of
    ``versions`` (in that order) until it is idle."""
    kafka.create(CAT.rollout_state)
    kafka.send(CAT.rollout_state, codec_for(RolloutState).encode(rollout), key=b"iris")
    for msg in routed:
        kafka.send(msg.topic() or "", msg.value(), key=msg.key(), headers=h.as_list(msg.headers()))
    for version in versions:
        worker = Worker(SETTINGS, WorkerOptions("iris", version), EchoAdapter())
        worker.view.catch_up(timeout=1)
        run_until_idle(worker.loop, kafka)


def _answered(rollout: RolloutState, routed: list[FakeMessage]) -> dict[str, object]:
    """What the v1 and v2 workers write for ``routed``: answers (key, headers and the
    result's routing fields) and served evidence (its cells and counts)."""
    kafka = FakeKafka()
    with using(kafka):
        _serve(kafka, rollout, routed, ("v1", "v2"))
        answers = []
        for topic in (CAT.results, CAT.shadow_results):
            for m in kafka.read(topic):
                r = decode_result(m.value(), m.headers())
                fields = (r.request_id, r.version, r.arm, r.served, r.rollout_id, r.weight_bp)
                answers.append((topic, m.key(), h.as_list(m.headers()), fields))
        evidence = []
        for m in kafka.read(CAT.evidence):
            for ev in decode_evidence(m.value() or b"")[0]:  # a record alone or a set
                cell = (ev.kind, ev.rollout_id, ev.version, ev.arm, ev.served, ev.weight_bp)
                evidence.append((*cell, ev.second, ev.requests, ev.errors))
    return {"answers": sorted(answers, key=repr), "evidence": sorted(evidence, key=repr)}


@pytest.mark.parametrize("delivery", [Delivery.EXACTLY_ONCE, Delivery.AT_LEAST_ONCE])
@pytest.mark.parametrize("name", sorted(STATES))
def test_workers_answer_requests_routed_by_this_router_or_an_older_one_alike(
    name: str, delivery: Delivery
) -> None:
    rollout = STATES[name]
    routed = _routed(replace(SETTINGS, delivery=delivery), rollout)
    for m in routed:
        names = [k for k, _ in h.as_list(m.headers())]
        route = decode_route(dict(h.as_list(m.headers()))[h.ROUTE] or b"")
        # One routing header; a shadow copy also canary-shadow, for workers before it.
        added = [h.ROUTE] if route.served else [h.ROUTE, h.SHADOW]
        assert names == [h.CONTENT_TYPE, h.MODEL, h.REQUEST_ID, *added]
        # A worker that reads only the separate headers never takes a shadow copy as served.
        separate = {k: v for k, v in h.as_list(m.headers()) if k != h.ROUTE}
        assert read_route(separate).served is route.served
    arms = {decode_route(dict(h.as_list(m.headers()))[h.ROUTE] or b"").arm for m in routed}
    assert len(arms) >= 2  # both arms' workers have requests to answer
    new = _answered(rollout, routed)
    old = _answered(rollout, [_as_older_router_wrote(m) for m in routed])
    assert new["answers"] and new["evidence"]
    assert new == old
    marked = {
        dict(headers).get(h.DELIVERY) == h.AT_LEAST_ONCE
        for _, _, headers, _ in new["answers"]  # type: ignore[attr-defined]
    }
    assert marked == {delivery is Delivery.AT_LEAST_ONCE}


@pytest.mark.parametrize("older", [False, True])
def test_after_a_rollback_a_canary_request_is_redriven_in_its_form_and_answered_once(
    older: bool,
) -> None:
    """A canary worker re-drives a rolled-back rollout's queued requests to the baseline
    keeping the form they were routed in; the baseline answers each once, in no comparison."""
    rollout = STATES["canary-50"]
    canary = [
        m for m in _routed(SETTINGS, rollout) if m.topic() == CAT.version_requests("iris", "v2")
    ]
    assert canary
    if older:
        canary = [_as_older_router_wrote(m) for m in canary]
    kafka = FakeKafka()
    with using(kafka):
        _serve(kafka, replace(rollout, phase=Phase.ROLLED_BACK), canary, ("v2", "v1"))
        redriven = kafka.read(CAT.version_requests("iris", "v1"))
        assert len(redriven) == len(canary)
        for msg in redriven:
            names = [k for k, _ in h.as_list(msg.headers())]
            assert (h.ROUTE in names, h.ARM in names) == (not older, older)
            route = read_route(dict(h.as_list(msg.headers())))
            assert (route.arm, route.version, route.redriven) == (Arm.BASELINE, "v1", True)
        answers = [decode_result(m.value(), m.headers()) for m in kafka.read(CAT.results)]
        assert sorted(r.request_id for r in answers) == sorted(
            h.header_text(dict(h.as_list(m.headers()))[h.REQUEST_ID]) for m in canary
        )
        assert {(r.version, r.arm) for r in answers} == {("v1", Arm.BASELINE)}
        evidence = [
            ev for m in kafka.read(CAT.evidence) for ev in decode_evidence(m.value() or b"")[0]
        ]
        assert evidence == []  # re-driven requests count in no comparison


def test_a_request_routed_by_a_newer_router_is_refused_saying_so_and_answered() -> None:
    """A worker older than the router (upgraded in the wrong order) loses nothing: each such
    request gets an error answer and a dead letter naming the header's version."""
    kafka = FakeKafka()
    with using(kafka):
        kafka.create(CAT.rollout_state)
        value = codec_for(InferenceRequest).encode(
            InferenceRequest(request_id="n1", model="iris", inputs=b"{}", created_at=EPOCH)
        )
        headers: h.RawHeaders = [
            (h.MODEL, b"iris"),
            (h.REQUEST_ID, b"n1"),
            (h.ROUTE, b"2;canary;v1;500;1700000000000;;ro1"),
        ]
        kafka.send(CAT.version_requests("iris", "v1"), value, key=b"user-1", headers=headers)
        worker = Worker(SETTINGS, WorkerOptions("iris", "v1"), EchoAdapter())
        worker.view.catch_up(timeout=1)
        run_until_idle(worker.loop, kafka)
        (answer,) = kafka.read(CAT.results)
        result = decode_result(answer.value(), answer.headers())
        assert (result.request_id, result.error_type) == ("n1", "unknown-route-version")
        assert "canary-route is version 2; this reader knows version 1 only" in (result.error or "")
        (dead,) = kafka.read(CAT.dead_letters)
        assert dict(h.as_list(dead.headers()))[h.DLQ_REASON] == b"unknown-route-version"
