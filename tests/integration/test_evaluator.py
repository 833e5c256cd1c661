"""The evaluator on a real broker with the router and two workers: automatic rollback at the
1% step and automatic promotion to the end (its restarts: test_evaluator_restart.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from model_canary.agents.cli.history_cmd import read_history
from model_canary.agents.client.control import ControlClient
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.enums import Outcome, Phase
from model_canary.streams.messages import Decision, InferenceResult, RolloutState
from model_canary.streams.plan import parse_plan
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, read_topic, send_requests

pytestmark = pytest.mark.integration


def _start(control: ControlClient, plan: dict[str, object]) -> None:
    """Start iris v1 -> v2 with a plan (steps, step rules, metrics, mode) given as a document."""
    parsed = parse_plan({"model": "iris", "baseline": "v1", "canary": "v2", **plan})
    control.send(
        "iris",
        "start",
        baseline_version="v1",
        canary_version="v2",
        steps_bp=parsed.steps_bp,
        mode=parsed.mode,
        plan_json=parsed.to_json(),
    )


def _drive(
    settings: Settings,
    control: ControlClient,
    done: Callable[[RolloutState], bool],
    *,
    batch: int = 1500,
    timeout: float = 150.0,
) -> RolloutState:
    """Send keyed requests in batches until ``done(state)`` or the timeout."""
    deadline = time.monotonic() + timeout
    sent = 0
    while time.monotonic() < deadline:
        send_requests(
            settings, "iris", [f"user-{sent + i}" for i in range(batch)], prefix=f"d{sent}-"
        )
        sent += batch
        time.sleep(1.0)
        state = control.state("iris")
        if state is not None and done(state):
            return state
    raise AssertionError(f"not done after {sent} requests: {control.state('iris')}")


def test_a_canary_with_5pct_errors_is_rolled_back_during_the_1pct_step(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    router = spawn("router", "--instance", "r1")
    start_worker("v1")
    start_worker("v2", "--inject-error-rate", "0.05", "--seed", "7")
    spawn("evaluator", "--interval", "0.5")
    router.ready()
    control = ControlClient(settings)
    _start(
        control,
        {
            "steps": [1, 20, 50, 100],
            "step": {"min_duration": "1h", "warmup": 0},
            "metrics": {"errors": {}},
        },
    )

    state = _drive(settings, control, lambda s: s.phase is Phase.ROLLED_BACK)
    assert state.weight_bp == 0 and state.step_index == 0, "rolled back during the 1% step"

    decisions = [r for r in read_history(settings, "iris") if isinstance(r, Decision)]
    rollback = [d for d in decisions if d.outcome is Outcome.ROLLBACK]
    assert rollback, decisions
    evidence = {e.metric: e for e in rollback[0].evidence}
    assert rollback[0].weight_bp == 100
    assert evidence["errors"].alarmed and evidence["errors"].canary_bad > 0
    assert evidence["errors"].statistic > evidence["errors"].threshold
    assert rollback[0].offsets, "the decision names the offsets it used"

    # The router sends the canary no more traffic.
    before = len(read_topic(settings, topics.version_requests("iris", "v2"), 0, timeout=0))
    send_requests(settings, "iris", [f"late-{i}" for i in range(500)], prefix="late-")
    time.sleep(2)
    after = len(read_topic(settings, topics.version_requests("iris", "v2"), 0, timeout=0))
    assert after == before


def test_an_identical_canary_advances_through_every_step_and_is_finalized(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    router = spawn("router", "--instance", "r1")
    # Both arms fail 5% of requests: enough bad events for the upper bounds to close.
    start_worker("v1", "--inject-error-rate", "0.05", "--seed", "1")
    start_worker("v2", "--inject-error-rate", "0.05", "--seed", "2")
    spawn("evaluator", "--interval", "0.5")
    router.ready()
    control = ControlClient(settings)
    _start(
        control,
        {
            "steps": [10, 50, 100],
            "step": {"min_duration": "2s", "min_canary_requests": 50, "warmup": 0},
            # Promotion margin 3: the upper bounds close within the test's traffic. Rollback
            # only past a doubling: equal arms then alarm far less often than alpha (the test
            # does not flake), while a bias from the canary answering before the baseline
            # (apparent ratio ~4 at the step's start without the evaluator's watermark) would.
            "metrics": {"errors": {"tolerance": 3.0, "rollback_tolerance": 1.0}},
        },
    )
    state = _drive(settings, control, lambda s: s.phase is Phase.SUCCEEDED, timeout=240)
    assert state.stable_version == "v2"
    outcomes = [d.outcome for d in read_history(settings, "iris") if isinstance(d, Decision)]
    acted = [o for o in outcomes if o is not Outcome.HOLD]
    assert acted == [Outcome.ADVANCE, Outcome.ADVANCE, Outcome.FINALIZE], outcomes


def test_a_less_accurate_canary_is_rolled_back_on_ground_truth_labels(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    """Labels arrive on the feedback topic after the answers; the evaluator joins them with
    the predictions and rolls back the canary that is wrong more often."""
    from confluent_kafka import Producer

    from model_canary.agents.kafka.config import producer_config
    from model_canary.streams.codec.avro import codec_for
    from model_canary.streams.messages import Feedback, InferenceResult, utc_now

    router = spawn("router", "--instance", "r1")
    start_worker("v1", adapter="python:tests.integration.models:echo")
    # The canary answers with the negated input: wrong on every labelled request.
    start_worker("v2", adapter="python:tests.integration.models:negate")
    spawn("evaluator", "--interval", "0.5")
    router.ready()
    control = ControlClient(settings)
    _start(
        control,
        {
            "steps": [20, 100],
            "step": {"min_duration": "1h", "warmup": 0},
            "metrics": {"accuracy": {}},
        },
    )
    from model_canary.agents.client.inference import CanaryClient

    with CanaryClient(settings) as client:
        for i in range(400):
            client.send(
                {"x": [[1.0]]}, model="iris", key=f"user-{i}", request_id=f"q{i}", flush=False
            )
        client.flush()
    results = read_topic(settings, topics.results, 400, settle=0.5)
    assert len(results) == 400
    codec = codec_for(InferenceResult)
    labels = Producer(producer_config(settings, "labels"))
    fb = codec_for(Feedback)
    for m in results:
        r = codec.decode(m.value() or b"")
        label = Feedback(request_id=r.request_id, model="iris", label="1.0", observed_at=utc_now())
        labels.produce(topics.feedback, fb.encode(label), key=b"iris")
    labels.flush(10)
    deadline = time.monotonic() + 60
    state = control.state("iris")
    while (
        time.monotonic() < deadline and state is not None and state.phase is not Phase.ROLLED_BACK
    ):
        time.sleep(1)
        state = control.state("iris")
    assert state is not None and state.phase is Phase.ROLLED_BACK, state
    decisions = [r for r in read_history(settings, "iris") if isinstance(r, Decision)]
    evidence = {e.metric: e for d in decisions if d.outcome is Outcome.ROLLBACK for e in d.evidence}
    assert evidence["accuracy"].alarmed
    assert evidence["accuracy"].canary_bad == evidence["accuracy"].canary_n > 0
    assert evidence["accuracy"].baseline_bad == 0


def test_a_harmful_shadow_is_stopped_without_serving_anything_from_it(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    router = spawn("router", "--instance", "r1")
    start_worker("v1")
    start_worker("v2", "--inject-error-rate", "0.05", "--seed", "3")
    spawn("evaluator", "--interval", "0.5")
    router.ready()
    control = ControlClient(settings)
    _start(
        control,
        {"mode": "shadow", "step": {"min_duration": "1h", "warmup": 0}, "metrics": {"errors": {}}},
    )
    state = _drive(settings, control, lambda s: s.phase is Phase.ROLLED_BACK, batch=500)
    assert state.mode.value == "shadow"
    codec = codec_for(InferenceResult)
    served = [
        r
        for r in (
            codec.decode(m.value() or b"")
            for m in read_topic(settings, topics.results, 0, timeout=0)
        )
        if r.served
    ]
    assert served and {r.version for r in served} == {"v1"}, "nothing served from the shadow"
    rollback = [
        d
        for d in read_history(settings, "iris")
        if isinstance(d, Decision) and d.outcome is Outcome.ROLLBACK
    ]
    assert rollback and rollback[0].weight_bp == 0
    assert {e.metric: e.alarmed for e in rollback[0].evidence} == {"errors": True}
