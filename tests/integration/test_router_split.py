"""The router on a real broker: percentage split, stickiness, monotone cohorts, header match."""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest
from confluent_kafka import Message

from model_canary.agents.client.control import ControlClient
from model_canary.streams import headers as h
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, header, read_topic, route_of, send_requests

pytestmark = pytest.mark.integration

KEYS = [f"user-{i}" for i in range(5000)]
PER_STEP = 20_000  # each of the 5,000 keys sends 4 requests


def test_split_is_within_binomial_tolerance_sticky_and_monotone(
    settings: Settings, topics: TopicCatalogue, spawn: Callable[..., Agent]
) -> None:
    spawn("router", "--instance", "r1").ready()
    control = ControlClient(settings)
    control.send("iris", "register", baseline_version="v1")
    control.send("iris", "start", canary_version="v2")
    v1, v2 = topics.version_requests("iris", "v1"), topics.version_requests("iris", "v2")

    arm_of_key: list[dict[str, set[str]]] = []
    seen = 0
    for step, weight_pct in enumerate((1, 20, 50)):
        if weight_pct != 1:
            control.send("iris", "set_weight", weight_bp=weight_pct * 100)
        send_requests(settings, "iris", KEYS * 4, prefix=f"s{step}-")
        seen += PER_STEP
        routed = _wait_total(settings, (v1, v2), seen)
        this_step = [m for m in routed if (header(m, h.REQUEST_ID) or "").startswith(f"s{step}-")]
        assert len(this_step) == PER_STEP, "every request routed exactly once"
        arms: dict[str, set[str]] = defaultdict(set)
        for m in this_step:
            route = route_of(m)
            arms[(m.key() or b"").decode()].add(route.arm.value)
            assert route.weight_bp == weight_pct * 100
        assert all(len(a) == 1 for a in arms.values()), "a key switched arms within a step"
        canary_keys = sum(1 for a in arms.values() if a == {"canary"})
        p = weight_pct / 100
        tolerance = 4 * math.sqrt(p * (1 - p) / len(KEYS)) * len(KEYS)
        assert abs(canary_keys - p * len(KEYS)) <= tolerance, (weight_pct, canary_keys)
        arm_of_key.append(arms)

    for before, after in itertools.pairwise(arm_of_key):
        moved_back = [k for k, a in before.items() if a == {"canary"} and after[k] != {"canary"}]
        assert moved_back == [], "raising the weight moved keys from canary to baseline"


def _wait_total(settings: Settings, topics: tuple[str, ...], total: int) -> list[Message]:
    deadline = time.monotonic() + 90
    while True:
        msgs = read_topic(settings, list(topics), total, timeout=5, settle=0.5)
        if len(msgs) >= total or time.monotonic() > deadline:
            return msgs
        time.sleep(0.5)


def test_header_match_forces_an_arm(
    settings: Settings, topics: TopicCatalogue, spawn: Callable[..., Agent]
) -> None:
    spawn("router", "--instance", "r1").ready()
    control = ControlClient(settings)
    control.send("iris", "start", baseline_version="v1", canary_version="v2")  # weight 1%
    send_requests(settings, "iris", [f"k{i}" for i in range(200)], headers={h.ARM: "canary"})
    routed = read_topic(settings, topics.version_requests("iris", "v2"), 200)
    assert len(routed) == 200
    assert Counter(route_of(m).weight_bp for m in routed) == {10_000: 200}
    assert {header(m, h.ARM) for m in routed} == {None}  # the client's canary-arm is dropped
    assert read_topic(settings, topics.version_requests("iris", "v1"), 0, timeout=0) == []
