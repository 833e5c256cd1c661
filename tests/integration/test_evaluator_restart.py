"""An evaluator stopped (SIGTERM) in the middle of a step, while the workers write
transactionally at a steady rate, and the one started after it killed (SIGKILL) later in the
same step, each resume with exactly the counts they had: nothing is counted twice (issue #11:
faust's committed offsets stalled behind what it had processed, and a restarted evaluator
recounted thousands of events) and nothing is lost; the next one, killed once everything is
counted, is followed by one with the very same counts, arm by arm, that counts what comes
next once.

One rollout, one load and one set of agents for the three restarts (they were three tests,
each starting its own; the last one was in test_evaluator.py)."""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from collections.abc import Callable

import pytest

from model_canary.agents.chaos.load import SteadyLoad
from model_canary.agents.client.control import ControlClient
from model_canary.streams.plan import parse_plan
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, send_requests

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _counted_by_arm(port: int) -> dict[str, float] | None:
    """Requests the evaluator counted for the errors metric, by the series' labels (arm and
    the rest); None: not serving."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("canary_evaluated_requests{") and 'metric="errors"' in line
    }


def _served_counted(port: int) -> float | None:
    """Requests the evaluator counted for the errors metric, both arms (None: not serving)."""
    counted = _counted_by_arm(port)
    return None if counted is None else sum(counted.values())


def _wait_for(port: int, at_least: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    seen: float | None = None
    while time.monotonic() < deadline:
        seen = _served_counted(port)
        if seen is not None and seen >= at_least:
            return seen
        time.sleep(0.25)
    raise AssertionError(f"the evaluator counted {seen} requests, expected {at_least}")


def _settled(port: int, total: int, timeout: float = 90.0) -> float:
    """The count once it reached ``total`` and then held still for 5 s (a double count would
    keep climbing past it)."""
    _wait_for(port, total, timeout)
    time.sleep(5.0)
    final = _served_counted(port)
    assert final is not None
    return final


def test_an_evaluator_stopped_or_killed_mid_step_keeps_exactly_its_counts(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    ports = [_free_port() for _ in range(4)]
    router = spawn("router", "--instance", "r1")
    start_worker("v1")
    start_worker("v2")
    first = spawn("evaluator", "--metrics-port", str(ports[0]))
    plan = parse_plan(
        {
            "model": "iris",
            "baseline": "v1",
            "canary": "v2",
            "steps": [50, 100],
            "step": {"min_duration": "1h", "warmup": 0},
            "metrics": {"errors": {}},
        }
    )
    router.ready()
    ControlClient(settings).send(
        "iris",
        "start",
        baseline_version="v1",
        canary_version="v2",
        steps_bp=plan.steps_bp,
        plan_json=plan.to_json(),
    )
    load = SteadyLoad(settings, "iris", rate=200, seconds=50, id_prefix="s-", keys=5000)
    load.start()
    # Mid-step, with thousands of transactional metric events behind it and more arriving.
    _wait_for(ports[0], 3000, timeout=60)
    # Issue #10 item 5: SIGTERM used to leave it running (IllegalOperation) and it logged
    # 'Has not committed TP(...)' as an error again and again while working normally.
    began = time.monotonic()
    assert first.stop() == 0
    took = time.monotonic() - began
    assert took < 2 + 8, f"the evaluator took {took:.1f}s to stop (checkpoints every 2 s)"
    log = first.log()
    alarming = [
        line for line in log.splitlines() if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", line)
    ]
    assert alarming == [], "\n".join(alarming[:10])
    assert "Has not committed" not in log
    # Its successor, further into the same step (3,000 more requests counted), is killed.
    second = spawn("evaluator", "--metrics-port", str(ports[1]))
    _wait_for(ports[1], 6000, timeout=90)
    second.kill()
    third = spawn("evaluator", "--metrics-port", str(ports[2]))
    load.join(120)
    assert not load.is_alive()
    sent = len(load.sent)
    assert _settled(ports[2], sent) == sent, "every request counted exactly once"

    # Killed once everything is counted, its successor shows the very same counts, arm by arm,
    # and counts what comes next once.
    counted = _counted_by_arm(ports[2])
    assert counted is not None and sum(counted.values()) == sent, counted
    third.kill()
    spawn("evaluator", "--metrics-port", str(ports[3]))
    assert _settled(ports[3], sent) == sent
    assert _counted_by_arm(ports[3]) == counted
    send_requests(settings, "iris", [f"u{i}" for i in range(500)], prefix="b")
    assert _settled(ports[3], sent + 500) == sent + 500, "no double counting"
