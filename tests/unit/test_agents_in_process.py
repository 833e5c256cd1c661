"""The router, the controller, a worker and the exactly-once loop, run in process on the
in-memory Kafka of :mod:`model_canary.agents.testing` (no broker)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace

import pytest
from confluent_kafka import KafkaError, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.agents.kafka.eos import ExactlyOnceLoop, LoopConfig, TxnOutput
from model_canary.agents.router.agent import Router, RouterOptions, _Plan
from model_canary.agents.router.controller import Controller
from model_canary.agents.testing import FakeKafka, FakeMessage, run_until_idle, using
from model_canary.agents.worker.adapters import EchoAdapter
from model_canary.agents.worker.agent import Worker, WorkerOptions
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import INFERENCE_RESULT_CONTENT_TYPE, codec_for
from model_canary.streams.codec.json_records import decode_json
from model_canary.streams.codec.results import decode_result
from model_canary.streams.messages import (
    EPOCH,
    Arm,
    ControlEvent,
    InferenceRequest,
    MetricEvent,
    Mode,
    Phase,
    RolloutState,
)
from model_canary.streams.route_header import RouteHeader, decode_route, encode_route
from model_canary.streams.settings import Settings
from model_canary.streams.signing_keys import KeyRing
from model_canary.streams.topics import TopicCatalogue

SETTINGS = Settings(bootstrap="fake:9092", topic_prefix="t", partitions=1)
CAT = TopicCatalogue("t", 1)


@pytest.fixture
def kafka() -> Iterator[FakeKafka]:
    fake = FakeKafka()
    with using(fake):
        yield fake


def header(msg: Message | FakeMessage, name: str) -> str | None:
    return h.header_dict(h.as_list(msg.headers())).get(name)


def route_of(msg: Message | FakeMessage) -> RouteHeader:
    """How the router routed a routed copy (its ``canary-route`` header)."""
    return decode_route(header(msg, h.ROUTE) or "")


def state(**fields: object) -> RolloutState:
    base: dict[str, object] = {
        "model": "iris",
        "rollout_id": "ro1",
        "stable_version": "v1",
        "baseline_version": "v1",
        "phase": Phase.STABLE,
        "step_started_at": EPOCH,
        "updated_at": EPOCH,
    }
    return RolloutState(**{**base, **fields})  # type: ignore[arg-type]


# -- the exactly-once loop ---------------------------------------------------------------------


def test_the_loop_copies_each_input_once_and_commits_its_offsets(kafka: FakeKafka) -> None:
    for i in range(5):
        kafka.send("in", f"m{i}".encode(), key=str(i).encode())

    def copy(batch: Sequence[Message], out: TxnOutput) -> None:
        for msg in batch:
            out.source = msg
            out.produce("out", msg.value(), key=msg.key())

    loop = ExactlyOnceLoop(SETTINGS, LoopConfig("copier", "g", ("in",), "copier-1"), copy)
    run_until_idle(loop, kafka)
    assert sorted(m.value() or b"" for m in kafka.read("out")) == [
        b"m0",
        b"m1",
        b"m2",
        b"m3",
        b"m4",
    ]
    assert kafka.group_offsets["g", "in", 0] == 5


def test_an_input_whose_handling_raises_is_refused_and_the_rest_handled_once(
    kafka: FakeKafka,
) -> None:
    for i in range(4):
        kafka.send("in", f"m{i}".encode())
    refused: list[tuple[bytes | None, str]] = []

    def handler(batch: Sequence[Message], out: TxnOutput) -> None:
        for msg in batch:
            out.source = msg
            if msg.value() == b"m2":
                raise RuntimeError("bug on m2")
            out.produce("out", msg.value())

    def refuse(out: TxnOutput, msg: Message, reason: str, detail: str) -> None:
        refused.append((msg.value(), reason))
        out.produce("refused", msg.value())

    config = LoopConfig("h", "g", ("in",), "h-1")
    run_until_idle(ExactlyOnceLoop(SETTINGS, config, handler, refuse=refuse), kafka)
    assert [m.value() for m in kafka.read("out")] == [b"m0", b"m1", b"m3"]
    assert [m.value() for m in kafka.read("refused")] == [b"m2"]
    assert refused == [(b"m2", "internal-error")]
    # The first attempt wrote m0 and m1 too: aborted, never visible to read_committed readers.
    assert len(kafka.everything("out")) > len(kafka.read("out"))


@pytest.mark.parametrize("culprit", [4, 2], ids=["at-commit", "mid-handler"])
def test_a_write_refused_after_queueing_refuses_its_input_and_the_loop_goes_on(
    kafka: FakeKafka, culprit: int
) -> None:
    # The broker refuses one output once queued (a topic limit lowered under a running agent).
    # For the batch's last input it surfaces at commit; otherwise the handler's next write
    # fails with _STATE. Either way that input is refused and the rest copied once.
    for i in range(5):
        kafka.send("in", f"m{i}".encode())
    bad = f"m{culprit}".encode()
    big = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
    kafka.refuse_queued = lambda topic, value, key: big if value == bad * 1000 else None
    refused: list[tuple[bytes | None, str]] = []

    def handler(batch: Sequence[Message], out: TxnOutput) -> None:
        for msg in batch:
            out.source = msg
            value = msg.value() or b""
            out.produce("out", value * 1000 if value == bad else value)

    def refuse(out: TxnOutput, msg: Message, reason: str, detail: str) -> None:
        refused.append((msg.value(), reason))

    loop = ExactlyOnceLoop(SETTINGS, LoopConfig("h", "g", ("in",), "h-1"), handler, refuse=refuse)
    run_until_idle(loop, kafka)
    assert [m.value() for m in kafka.read("out")] == [
        f"m{i}".encode() for i in range(5) if i != culprit
    ]
    assert refused == [(bad, "too-large")]
    assert kafka.group_offsets["g", "in", 0] == 5


# -- the router --------------------------------------------------------------------------------


def serve_router(kafka: FakeKafka, *states: RolloutState, settings: Settings = SETTINGS) -> Router:
    codec = codec_for(RolloutState)
    kafka.create(CAT.rollout_state)
    for s in states:
        kafka.send(CAT.rollout_state, codec.encode(s), key=s.model.encode())
    router = Router(settings, RouterOptions(instance="r1"))
    router.view.catch_up(timeout=1)
    run_until_idle(router.loop, kafka)
    return router


def avro_request(rid: str, model: str = "iris", key: bytes | None = None) -> dict[str, object]:
    request = InferenceRequest(request_id=rid, model=model, inputs=b"{}", created_at=EPOCH)
    return {
        "value": codec_for(InferenceRequest).encode(request),
        "key": key or rid.encode(),
        "headers": [
            (h.CONTENT_TYPE, b"application/vnd.modelcanary.inference-request+avro"),
            (h.MODEL, model.encode()),
            (h.REQUEST_ID, rid.encode()),
        ],
    }


def test_the_router_routes_avro_and_bare_json_requests_and_answers_a_refusal(
    kafka: FakeKafka,
) -> None:
    kafka.send(CAT.requests, **avro_request("r1"))  # type: ignore[arg-type]
    kafka.send(
        CAT.requests,
        b'{"text": "win a prize"}',
        key=b"user-7",
        headers=[(h.CONTENT_TYPE, b"application/json"), (h.MODEL, b"iris")],
    )
    kafka.send(
        CAT.requests,
        b'{"text": "x"}',
        headers=[(h.CONTENT_TYPE, b"application/json"), (h.MODEL, b"nope")],
    )
    serve_router(kafka, state())
    routed = kafka.read(CAT.version_requests("iris", "v1"))
    assert [header(m, h.REQUEST_ID) for m in routed] == ["r1", "t.requests[0]@1"]
    assert [m.key() for m in routed] == [b"r1", b"user-7"]
    assert {route_of(m).arm for m in routed} == {Arm.STABLE}
    assert all(header(m, h.ARM) is None for m in routed)  # one header: canary-route
    (answer,) = kafka.read(CAT.results)
    result = decode_result(answer.value(), answer.headers())
    assert (result.request_id, result.error_type) == ("t.requests[0]@2", "unknown-model")
    assert header(answer, h.CONTENT_TYPE) == "application/json"
    assert json.loads(answer.value() or b"")["error_type"] == "unknown-model"
    (dead,) = kafka.read(CAT.dead_letters)
    assert header(dead, h.DLQ_REASON) == "unknown-model"


def test_a_refused_json_request_is_answered_under_the_model_and_id_of_its_body(
    kafka: FakeKafka,
) -> None:
    """A user filtering answers by model finds the refusal of a request that named its model
    only in its JSON body (no ``canary-model`` header)."""
    kafka.send(
        CAT.requests,
        b'{"request_id": "r9", "model": "nope", "inputs": {"text": "x"}}',
        headers=[(h.CONTENT_TYPE, b"application/json")],
    )
    serve_router(kafka, state())
    (answer,) = kafka.read(CAT.results)
    result = decode_result(answer.value(), answer.headers())
    assert (result.request_id, result.model, result.error_type) == ("r9", "nope", "unknown-model")
    assert header(answer, h.MODEL) == "nope"


# -- a worker ----------------------------------------------------------------------------------


def routed(
    value: bytes, rid: str, *, json_: bool = False, shadow: bool = False
) -> dict[str, object]:
    headers = [
        (h.CONTENT_TYPE, b"application/json" if json_ else b""),
        (h.MODEL, b"iris"),
        (h.REQUEST_ID, rid.encode()),
        (h.ARM, b"canary" if shadow else b"stable"),
        (h.ROLLOUT_ID, b"ro1"),
        (h.WEIGHT_BP, b"5000" if shadow else b"0"),
    ]
    if shadow:
        headers.append((h.SHADOW, b"1"))
    if not json_:
        headers = headers[1:]
    return {"value": value, "key": b"user-1", "headers": headers}


def test_a_worker_answers_in_the_requests_form_with_headers_and_shadows_apart(
    kafka: FakeKafka,
) -> None:
    topic = CAT.version_requests("iris", "v1")
    avro = avro_request("a1")["value"]
    kafka.send(topic, **routed(avro, "a1"))  # type: ignore[arg-type]
    kafka.send(topic, **routed(b'{"text": "hi"}', "j1", json_=True))  # type: ignore[arg-type]
    kafka.send(topic, **routed(b'{"text": "mirror"}', "s1", json_=True, shadow=True))  # type: ignore[arg-type]
    kafka.create(CAT.rollout_state)
    worker = Worker(SETTINGS, WorkerOptions("iris", "v1", instance="w1"), EchoAdapter())
    worker.view.catch_up(timeout=1)
    run_until_idle(worker.loop, kafka)
    served = {header(m, h.REQUEST_ID): m for m in kafka.read(CAT.results)}
    assert set(served) == {"a1", "j1"}
    assert header(served["a1"], h.CONTENT_TYPE) == INFERENCE_RESULT_CONTENT_TYPE
    answer = json.loads(served["j1"].value() or b"")
    assert (answer["outputs"], answer["routing_key"], answer["served"]) == (
        {"text": "hi"},
        "user-1",
        True,
    )
    assert {header(served["j1"], k) for k in (h.VERSION, h.SERVED, h.ARM)} == {
        "v1",
        "true",
        "stable",
    }
    (shadow,) = kafka.read(CAT.shadow_results)
    assert (header(shadow, h.SERVED), header(shadow, h.ARM)) == ("false", "canary")
    assert decode_result(shadow.value(), shadow.headers()).arm is Arm.CANARY


def test_an_exactly_once_worker_marks_answers_and_refusals_of_requests_routed_at_least_once(
    kafka: FakeKafka,
) -> None:
    topic = CAT.version_requests("iris", "v1")
    mark = (h.DELIVERY, h.AT_LEAST_ONCE)
    for rid, value in (("ok1", b'{"text": "hi"}'), ("bad1", b'{"text": ')):
        message = routed(value, rid, json_=True)
        message["headers"] = [*message["headers"], mark]  # type: ignore[misc]
        kafka.send(topic, **message)  # type: ignore[arg-type]
    kafka.send(topic, **routed(b'{"text": ', "bad2", json_=True))  # type: ignore[arg-type]
    kafka.create(CAT.rollout_state)
    worker = Worker(SETTINGS, WorkerOptions("iris", "v1", instance="w1"), EchoAdapter())
    worker.view.catch_up(timeout=1)
    run_until_idle(worker.loop, kafka)
    served = {header(m, h.REQUEST_ID): m for m in kafka.read(CAT.results)}
    assert set(served) == {"ok1", "bad1", "bad2"}
    assert json.loads(served["bad1"].value() or b"")["error_type"] == "undecodable"
    marked = {rid for rid, m in served.items() if header(m, h.DELIVERY) == "at-least-once"}
    assert marked == {"ok1", "bad1"}  # bad2 was routed exactly once: its refusal is not marked


def test_a_worker_writes_metric_events_only_when_asked_one_per_answer(kafka: FakeKafka) -> None:
    topic = CAT.version_requests("iris", "v1")
    for rid in ("m1", "m2"):
        kafka.send(topic, **avro_request(rid))  # type: ignore[arg-type]
    kafka.send(topic, **routed(b'{"text": "mirror"}', "s1", json_=True, shadow=True))  # type: ignore[arg-type]
    kafka.create(CAT.rollout_state)
    kafka.create(CAT.metrics)
    quiet = Worker(SETTINGS, WorkerOptions("iris", "v1", instance="w1"), EchoAdapter())
    quiet.view.catch_up(timeout=1)
    run_until_idle(quiet.loop, kafka)
    assert kafka.read(CAT.metrics) == []
    results = {header(m, h.REQUEST_ID): m for m in kafka.read(CAT.results)}
    shadows = {header(m, h.REQUEST_ID): m for m in kafka.read(CAT.shadow_results)}
    assert set(results) == {"m1", "m2"} and set(shadows) == {"s1"}

    for rid in ("m3", "m4"):
        kafka.send(topic, **avro_request(rid))  # type: ignore[arg-type]
    options = WorkerOptions("iris", "v1", instance="w1", metric_events=True)
    loud = Worker(SETTINGS, options, EchoAdapter())
    loud.view.catch_up(timeout=1)
    run_until_idle(loud.loop, kafka)
    events = [codec_for(MetricEvent).decode(m.value() or b"") for m in kafka.read(CAT.metrics)]
    assert [e.request_id for e in events] == ["m3", "m4"]
    answers = {
        r.request_id: r
        for r in (decode_result(m.value(), m.headers()) for m in kafka.read(CAT.results))
    }
    for e in events:
        answer = answers[e.request_id]
        assert (e.model, e.version, e.error, e.error_type) == ("iris", "v1", False, None)
        assert (e.latency_ms, e.completed_at) == (answer.latency_ms, answer.created_at)


# -- the controller ----------------------------------------------------------------------------


def run_controller(kafka: FakeKafka, settings: Settings, *commands: bytes) -> list[ControlEvent]:
    kafka.create(CAT.rollout_state)
    for command in commands:
        kafka.send(
            CAT.control, command, key=b"iris", headers=[(h.CONTENT_TYPE, b"application/json")]
        )
    controller = Controller(settings, "c1")
    run_until_idle(controller.loop, kafka)
    events = kafka.read(CAT.events)
    assert all(header(m, h.CONTENT_TYPE) == "application/json" for m in events)
    return [decode_json(ControlEvent, m.value() or b"") for m in events]


def test_a_json_command_is_applied_and_answered_with_a_json_event(kafka: FakeKafka) -> None:
    events = run_controller(
        kafka,
        SETTINGS,
        b'{"model": "iris", "action": "register", "baseline_version": "v1"}',
        b'{"model": "iris", "action": "start", "canary_version": "v2", "mode": "canary"}',
        b'{"model": "iris", "action": "set-weight", "weight_bp": 2500}',
    )
    assert [(e.action, e.outcome, e.weight_bp) for e in events] == [
        ("register", "applied", 0),
        ("start", "applied", 100),
        ("set_weight", "applied", 2500),
    ]
    assert events[0].command_id == "t.control[0]@0"
    states = kafka.read(CAT.rollout_state)
    last = codec_for(RolloutState).decode(states[-1].value() or b"")
    assert (last.weight_bp, last.mode, last.canary_version) == (2500, Mode.CANARY, "v2")


def test_an_unsigned_json_command_is_refused_when_commands_are_signed(kafka: FakeKafka) -> None:
    signed = SETTINGS.with_overrides(control_keys=KeyRing.parse("ops:0123456789abcdef0123"))
    (event,) = run_controller(
        kafka, signed, b'{"model": "iris", "action": "register", "baseline_version": "v1"}'
    )
    assert (event.outcome, event.reason) == ("rejected", "unsigned")
    assert kafka.read(CAT.rollout_state) == []


# -- the router's fast path is _route ----------------------------------------------------------

_AVRO = b"application/vnd.modelcanary.inference-request+avro"


@st.composite
def messages(draw: st.DrawFn) -> FakeMessage:
    model = draw(st.sampled_from(["iris", "nope", None]))
    rid = draw(st.sampled_from(["r1", "", None]))
    content_type = draw(st.sampled_from([_AVRO, b"application/json", b"text/plain", None]))
    body = draw(
        st.sampled_from(
            [
                codec_for(InferenceRequest).encode(
                    InferenceRequest(request_id="b1", model="iris", inputs=b"{}", created_at=EPOCH)
                ),
                b'{"request_id": "j1", "model": "iris", "inputs": {"x": 1}}',
                b'{"text": "bare"}',
                b"\\x00garbage",
                b"",
            ]
        )
    )
    routing_key = draw(st.sampled_from([None, b"user-1", b""]))
    # In the Python client's order (which the router reads by position), a header of its
    # own or a router's maybe put in or in place of one, then maybe shuffled.
    named = [
        (h.CONTENT_TYPE, content_type),
        (h.REQUEST_ID, None if rid is None else rid.encode()),
        (h.MODEL, None if model is None else model.encode()),
        (h.ROUTING_KEY, routing_key),
    ]
    headers: list[tuple[str, bytes | None]] = [(n, v) for n, v in named if v is not None]
    extra = draw(
        st.sampled_from(
            [
                None,
                (h.ARM, b"canary"),
                (h.ARM, b"odd"),
                (h.VERSION, b"v9"),
                (h.ROUTE, b"1;canary;v9;0;0;;forged"),
                (h.MODEL, b"nope"),
                ("x-trace", b"t"),
            ]
        )
    )
    if extra is not None:
        at = draw(st.integers(0, len(headers)))
        if at < len(headers) and draw(st.booleans()):
            headers[at] = extra
        else:
            headers.insert(at, extra)
    if draw(st.booleans()):
        headers = draw(st.permutations(headers))
    key = draw(st.sampled_from([None, b"user-1", b"user-2", b"u" * 40]))
    offset = draw(st.integers(0, 10))
    return FakeMessage(CAT.requests, 0, offset, key, body, headers or None, 0)


Written = tuple[str, bytes | None, h.RawHeaders, bytes | None]


def _written(kafka: FakeKafka) -> list[Written]:
    out: list[Written] = []
    for topic in sorted(kafka.topics):
        for m in kafka.read(topic):
            # The routed-at stamp aside (each batch has its own).
            kept = [
                (k, encode_route(replace(decode_route(v or b""), routed_at_ms=None)))
                if k == h.ROUTE
                else (k, v)
                for k, v in h.as_list(m.headers())
            ]
            value = m.value() if topic.startswith(CAT.requests) else None
            out.append((topic, m.key(), kept, value))
    return out


def _router_with_plan(kafka: FakeKafka, live: RolloutState) -> tuple[Router, _Plan]:
    """A router serving ``live``, as after iris's first request: its plan compiled, so the
    fast path can run."""
    router = serve_router(kafka, live)
    plan = router._compile("iris")
    assert plan is not None
    router._plans[b"iris"] = plan
    return router, plan


def _fast_and_slow(msg: FakeMessage, weight: int = 5000, shadow: bool = False) -> None:
    """Route ``msg`` through the hot loop and through ``_route``: the same writes."""
    kafka = FakeKafka()
    with using(kafka):
        live = state(
            phase=Phase.PROGRESSING,
            canary_version="v2",
            weight_bp=weight,
            mode=Mode.SHADOW if shadow else Mode.CANARY,
        )
        router, _ = _router_with_plan(kafka, live)
        limits = router.loop.output.limits
        fast, slow = FakeKafka(), FakeKafka()
        router.handle([msg], TxnOutput(fast.producer({}), limits))  # type: ignore[list-item, arg-type]
        router._route(msg, TxnOutput(slow.producer({}), limits))  # type: ignore[arg-type]
    assert _written(fast) == _written(slow)


@settings(max_examples=300, deadline=None)
@given(msg=messages(), weight=st.sampled_from([0, 100, 5000, 10_000]), shadow=st.booleans())
def test_the_fast_path_routes_any_message_as_route_does(
    msg: FakeMessage, weight: int, shadow: bool
) -> None:
    _fast_and_slow(msg, weight, shadow)


_CLIENT_HEADERS: list[tuple[str, bytes]] = [
    (h.CONTENT_TYPE, _AVRO),
    (h.REQUEST_ID, b"r1"),
    (h.MODEL, b"iris"),
    (h.ROUTING_KEY, b"user-1"),
]


@pytest.mark.parametrize("at", range(4))
@pytest.mark.parametrize(
    "other",
    [
        (h.ROUTE, b"1;canary;v9;0;0;;forged"),
        (h.ARM, b"canary"),
        (h.CONTENT_TYPE, b"application/json"),
        (h.MODEL, b"nope"),
        (h.REQUEST_ID, b""),
        ("x-trace", b"t"),
    ],
)
def test_four_headers_not_in_the_clients_layout_route_as_route_does(
    at: int, other: tuple[str, bytes]
) -> None:
    # The hot loop reads the client's four headers by position: any other four take the
    # dictionary's reading, so a router header or a repeated name in any place is seen.
    headers: list[tuple[str, bytes | None]] = list(_CLIENT_HEADERS)
    headers[at] = other
    body = codec_for(InferenceRequest).encode(
        InferenceRequest(request_id="r1", model="iris", inputs=b"{}", created_at=EPOCH)
    )
    _fast_and_slow(FakeMessage(CAT.requests, 0, 0, b"user-1", body, headers, 0))


@pytest.mark.parametrize("client_layout", [False, True])
def test_a_plain_avro_request_of_a_known_model_takes_the_fast_path(
    kafka: FakeKafka, client_layout: bool
) -> None:
    router = serve_router(kafka, state())
    plan = router._compile("iris")
    assert plan is not None
    router._plans[b"iris"] = plan

    def no_slow_path(*_: object) -> None:
        raise AssertionError("took the full path")

    router._route = no_slow_path  # type: ignore[method-assign, assignment]
    request = avro_request("r9")
    headers = request["headers"]
    if client_layout:  # as CanaryClient.send writes them
        headers = [(h.CONTENT_TYPE, _AVRO), (h.REQUEST_ID, b"r9"), (h.MODEL, b"iris")]
        headers.append((h.ROUTING_KEY, b"r9"))
    msg = FakeMessage(CAT.requests, 0, 0, b"r9", request["value"], headers, 0)  # type: ignore[arg-type]
    out = FakeKafka()
    router.handle([msg], TxnOutput(out.producer({}), router.loop.output.limits))  # type: ignore[list-item, arg-type]
    assert [header(m, h.REQUEST_ID) for m in out.read(CAT.version_requests("iris", "v1"))] == ["r9"]


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(
        st.sampled_from([b"user-1", b"user-2", b"user-3", b"u" * 40, b"k9"]), max_size=30
    ),
    memo_keys=st.integers(1, 4),
    weight=st.sampled_from([0, 2000, 5000, 10_000]),
    shadow=st.booleans(),
)
def test_the_routers_key_memo_routes_as_the_plain_path(
    keys: list[bytes], memo_keys: int, weight: int, shadow: bool
) -> None:
    """Repeated routing keys (memo hits) and a memo cleared many times over (it holds at most
    ``memo_keys``) route each request as ``_route``, which asks the rollout's plan afresh."""
    import model_canary.streams.routing as routing

    body = codec_for(InferenceRequest).encode(
        InferenceRequest(request_id="r1", model="iris", inputs=b"{}", created_at=EPOCH)
    )
    msgs = [
        FakeMessage(CAT.requests, 0, i, key, body, [*_CLIENT_HEADERS[:3], (h.ROUTING_KEY, key)], 0)
        for i, key in enumerate(keys)
    ]
    kafka = FakeKafka()
    with using(kafka), pytest.MonkeyPatch.context() as patch:
        patch.setattr(routing, "MEMO_KEYS", memo_keys)
        live = state(
            phase=Phase.PROGRESSING,
            canary_version="v2",
            weight_bp=weight,
            mode=Mode.SHADOW if shadow else Mode.CANARY,
            shadow_sample_bp=5000,
        )
        router, plan = _router_with_plan(kafka, live)
        limits = router.loop.output.limits
        fast, slow = FakeKafka(), FakeKafka()
        fast_out = TxnOutput(fast.producer({}), limits)  # type: ignore[arg-type]
        for i in range(0, len(msgs), 7):  # batches of 7: the memo carries over between them
            router.handle(msgs[i : i + 7], fast_out)  # type: ignore[arg-type]
        for msg in msgs:
            router._route(msg, TxnOutput(slow.producer({}), limits))  # type: ignore[arg-type]
        assert len(plan.memo) <= memo_keys
    assert _written(fast) == _written(slow)
