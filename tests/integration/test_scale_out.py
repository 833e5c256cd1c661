"""Several routers in one consumer group: they share the requests, and when one dies the other
takes over its request partitions and the control partition, applying commands to the latest
state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from model_canary.agents.client.control import ControlClient
from model_canary.streams import headers as h
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, header, read_topic, route_of, send_requests

pytestmark = pytest.mark.integration


def test_two_routers_share_work_and_survive_the_loss_of_one(
    settings: Settings, topics: TopicCatalogue, spawn: Callable[..., Agent]
) -> None:
    first = spawn("router", "--instance", "r1")
    second = spawn("router", "--instance", "r2")
    # Both in the group: the control partition moves no more before the commands.
    first.ready()
    second.ready()
    control = ControlClient(settings)
    control.send("iris", "start", baseline_version="v1", canary_version="v2")
    control.send("iris", "set_weight", weight_bp=5000)
    out = [topics.version_requests("iris", v) for v in ("v1", "v2")]
    send_requests(settings, "iris", [f"u{i}" for i in range(3000)], prefix="a")
    assert len(read_topic(settings, out, 3000, settle=0.5)) == 3000

    first.kill()
    # Whoever owned the control partition, a command is applied (after the dead member's
    # session times out) to the latest state: 50% -> 100%.
    outcome = control.send("iris", "set_weight", weight_bp=10_000, wait=60)
    assert outcome.applied and outcome.event.revision == 2  # start=0, 50%=1, 100%=2
    send_requests(settings, "iris", [f"u{i}" for i in range(3000)], prefix="b")

    routed = read_topic(settings, out, 6000, timeout=90, settle=2)
    ids = Counter(header(m, h.REQUEST_ID) for m in routed)
    assert len(ids) == 6000 and max(ids.values()) == 1, "lost or duplicated across the failover"
    after = {route_of(m).arm for m in routed if (header(m, h.REQUEST_ID) or "").startswith("b")}
    assert after == {"canary"}, "the surviving router routes at the new weight"
