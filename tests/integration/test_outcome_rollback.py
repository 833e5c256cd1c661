"""Outcome metrics on a real broker: the router, two workers, the evaluator and its label
joiner. Users' thumbs-down on a chat model (workers on a fake OpenAI-compatible server) roll
back the canary that draws more of them; a regression's numeric feedback (``value``) rolls
back the canary that is further off; a canary drawing as many thumbs-down is not rolled back."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable

import pytest

from model_canary.agents.bench.scrape import free_port, scrape, total
from model_canary.agents.cli.control_cmd import describe_state
from model_canary.agents.cli.history_cmd import describe, read_history
from model_canary.agents.client.control import ControlClient
from model_canary.agents.client.feedback import FeedbackClient
from model_canary.agents.client.inference import CanaryClient
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.codec.requests import canonical_json
from model_canary.streams.enums import Outcome, Phase
from model_canary.streams.messages import Decision, InferenceResult, MetricEvidence, RolloutState
from model_canary.streams.plan import parse_plan
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, read_topic
from tests.integration.fake_openai import serving

pytestmark = pytest.mark.integration

#: Share of answers a user gives a thumbs-down whatever the model said.
BASE_DOWN = 0.05
STEP = {"min_duration": "1h", "warmup": 0}


def _start(control: ControlClient, model: str, metrics: dict[str, object]) -> None:
    plan = parse_plan(
        {"model": model, "baseline": "v1", "canary": "v2", "steps": [20, 100], "step": STEP}
        | {"metrics": metrics}
    )
    control.send(  # the router applies it once it runs: a loaded machine starts it slowly
        model,
        "start",
        wait=90,
        baseline_version="v1",
        canary_version="v2",
        steps_bp=plan.steps_bp,
        plan_json=plan.to_json(),
    )


def _answers(
    settings: Settings, topics: TopicCatalogue, model: str, inputs: list[bytes | dict[str, object]]
) -> list[InferenceResult]:
    with CanaryClient(settings) as client:
        for i, x in enumerate(inputs):
            client.send(x, model=model, key=f"user-{i}", request_id=f"q{i}", flush=False)
        client.flush()
    codec = codec_for(InferenceResult)
    results = [
        codec.decode(m.value() or b"")
        for m in read_topic(settings, topics.results, len(inputs), settle=0.5)
    ]
    assert len(results) == len(inputs) and all(r.error is None for r in results)
    return results


def _unlucky(request_id: str) -> bool:
    """The users who give a thumbs-down whatever the answer (BASE_DOWN of them)."""
    digest = hashlib.sha256(request_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < BASE_DOWN


def _users_order(results: list[InferenceResult]) -> list[InferenceResult]:
    """The answers in the order users send their feedback: any order, whatever the arm (the
    results topic is read partition by partition; feedback arriving arm by arm is a sample
    ratio mismatch while it lasts, and holds the rollout)."""
    shuffled = list(results)
    random.Random(7).shuffle(shuffled)
    return shuffled


def _thumbs(settings: Settings, model: str, results: list[InferenceResult]) -> int:
    """A rating per answer: down for a curt "No." or an unlucky user, up otherwise."""
    feedback = FeedbackClient(settings)
    for r in _users_order(results):
        down = r.prediction == "No." or _unlucky(r.request_id)
        feedback.send(r.request_id, model=model, label="down" if down else "up")
    feedback.flush()
    feedback.close()
    return len(results)


def _until(
    control: ControlClient, model: str, done: Callable[[RolloutState], bool]
) -> RolloutState:
    deadline = time.monotonic() + 60
    state = control.state(model)
    while time.monotonic() < deadline and not (state is not None and done(state)):
        time.sleep(0.5)
        state = control.state(model)
    assert state is not None and done(state), state
    return state


def _evidence(settings: Settings, model: str, metric: str) -> list[tuple[Outcome, MetricEvidence]]:
    decisions = [r for r in read_history(settings, model) if isinstance(r, Decision)]
    return [(d.outcome, e) for d in decisions for e in d.evidence if e.metric == metric]


def _chat(n: int) -> list[bytes | dict[str, object]]:
    return [
        canonical_json({"messages": [{"role": "user", "content": f"question number {i}"}]})
        for i in range(n)
    ]


@pytest.mark.parametrize("canary", ["curt", "helpful"])
def test_thumbs_down_roll_back_the_canary_that_draws_more_of_them(
    canary: str,
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    with serving() as server:
        base = f"http://127.0.0.1:{server.server_address[1]}/v1"
        router = spawn("router", "--instance", "r1")
        start_worker("v1", model="chat", adapter=f"openai:{base}?model=helpful")
        # curt: "No." to 30% of questions (a thumbs-down each); helpful: as the baseline.
        start_worker("v2", model="chat", adapter=f"openai:{base}?model={canary}")
        port = free_port()
        router.ready()
        spawn("evaluator", "--interval", "0.5", "--metrics-port", str(port))
        control = ControlClient(settings)
        _start(
            control, "chat", {"thumbs_down": {"from": "feedback", "bad_when": "label == 'down'"}}
        )
        results = _answers(settings, topics, "chat", _chat(600))
    assert {r.version for r in results} == {"v1", "v2"}
    sent = _thumbs(settings, "chat", results)
    if canary == "curt":
        state = _until(control, "chat", lambda s: s.phase is Phase.ROLLED_BACK)
        [(_, e)] = [
            (o, e) for o, e in _evidence(settings, "chat", "thumbs_down") if o is Outcome.ROLLBACK
        ]
        assert e.alarmed and e.canary_bad / e.canary_n > 2 * e.baseline_bad / e.baseline_n
        assert state.weight_bp == 0
        # canary history and canary status name the metric.
        [rollback] = [
            r
            for r in read_history(settings, "chat")
            if isinstance(r, Decision) and r.outcome is Outcome.ROLLBACK
        ]
        assert rollback.reason.startswith("harm: thumbs_down: canary ")
        assert "thumbs_down: canary " in describe(rollback) and "ALARM" in describe(rollback)
        assert "outcome   thumbs_down: bad when label == 'down'" in describe_state(state)
        return

    # As many thumbs-down on both: once every rating is counted and a decision was taken on
    # all of them, the canary has not been rolled back.
    def scraped(name: str, having: str = "") -> float:
        return total(scrape(port) or {}, name, having=having)

    deadline = time.monotonic() + 60
    while scraped("canary_evaluated_requests", 'metric="thumbs_down"') < sent:
        assert time.monotonic() < deadline, "the evaluator did not count every rating"
        time.sleep(0.5)
    assert scraped("canary_evaluated_requests", 'metric="thumbs_down"') == sent
    counted_at = time.time()
    while scraped("canary_evaluation_timestamp_seconds") < counted_at + 1:
        assert time.monotonic() < deadline + 30, "no evaluation after every rating was counted"
        time.sleep(0.5)
    time.sleep(2.0)  # a rollback command would be applied by now
    after = control.state("chat")
    reasons = [r.reason for r in read_history(settings, "chat") if isinstance(r, Decision)]
    # Holding is possible (and not a rollback): the evaluator may decide between the joiner's
    # records of one transaction (one per arm), and a burst of feedback counted for one arm
    # and not yet the other is a sample-ratio mismatch while it lasts (docs/outcomes.md).
    assert after is not None and after.phase in (Phase.PROGRESSING, Phase.HOLDING), reasons
    assert after.phase is Phase.PROGRESSING or after.reason.startswith("sample-ratio-mismatch")
    assert after.weight_bp == 2000
    assert all(o is not Outcome.ROLLBACK for o, _ in _evidence(settings, "chat", "thumbs_down"))


def test_a_numeric_outcome_rolls_back_the_canary_further_off(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    router = spawn("router", "--instance", "r1")
    # The baseline predicts the input, the canary its negation; the true value is the input.
    start_worker("v1", adapter="python:tests.integration.models:echo")
    start_worker("v2", adapter="python:tests.integration.models:negate")
    spawn("evaluator", "--interval", "0.5")
    router.ready()
    control = ControlClient(settings)
    _start(control, "iris", {"abs_error": {"bad_when": "abs(value - prediction) > 5"}})
    truth = [float(i % 50) for i in range(400)]  # |x - (-x)| > 5 once x > 2.5
    results = _answers(settings, topics, "iris", [{"x": [[v]]} for v in truth])
    feedback = FeedbackClient(settings)
    for r in _users_order(results):
        feedback.send(r.request_id, model="iris", value=truth[int(r.request_id[1:])])
    feedback.flush()
    feedback.close()
    _until(control, "iris", lambda s: s.phase is Phase.ROLLED_BACK)
    [(_, e)] = [
        (o, e) for o, e in _evidence(settings, "iris", "abs_error") if o is Outcome.ROLLBACK
    ]
    assert e.alarmed and e.baseline_bad == 0 and e.canary_bad > 0.8 * e.canary_n
