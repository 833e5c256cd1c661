"""Agents started before their broker: the router, a worker and the evaluator wait for Kafka
with one clear line now and then (no librdkafka flood, no traceback, no exit), and serve as
soon as the broker started 12 s later answers; a CLI command without a broker fails within its
timeout with one line and the hint.

The broker is this test's own, on a free port pair, started after the agents.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from model_canary.agents.broker import LocalBroker
from model_canary.agents.client.control import ControlClient
from model_canary.agents.client.tail import open_tail
from model_canary.agents.kafka.reachable import HINT
from model_canary.streams.codec.avro import decode_any
from model_canary.streams.errors import DecodeError
from model_canary.streams.messages import Decision
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import ROOT, Agent, read_topic, send_requests
from tests.integration.test_broker_lifecycle import _free_port_pair

pytestmark = pytest.mark.integration

# Past the 10 s the agents (and librdkafka's rate-limited log) wait before they say something
# again, so a second line, or a flood, shows in the log (was 20 s).
BROKER_LATE_S = 12.0
# The agents probe at most 2 s apart and say why they wait at most every 10 s: "serves within
# 10 s of the broker" and "one line per 5 s", checked with room for a loaded 2-core machine.
SERVE_MARGIN_S = 45.0
LINE_EVERY_S = 5.0
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _stamp(line: str) -> float | None:
    match = _STAMP.match(line)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _first(agent: Agent, text: str) -> float | None:
    for line in agent.log().splitlines():
        if text in line:
            return _stamp(line)
    return None


def _first_decision(settings: Settings, timeout: float) -> Decision:
    control = TopicCatalogue(settings.topic_prefix).control
    consumer = open_tail(settings, control, "late-decisions", from_beginning=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                if msg.error() is not None:
                    continue
                with contextlib.suppress(DecodeError):
                    record = decode_any(msg.value() or b"")
                    if isinstance(record, Decision):
                        return record
    finally:
        consumer.close()
    raise AssertionError(f"no decision on {control} within {timeout:g}s")


def test_agents_wait_for_a_late_broker_quietly_and_then_serve(tmp_path: Path) -> None:
    port = _free_port_pair()
    prefix = f"late{uuid.uuid4().hex[:6]}"
    settings = Settings.from_env({}, bootstrap=f"127.0.0.1:{port}", topic_prefix=prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARY_")}
    env.update(
        CANARY_BOOTSTRAP=settings.bootstrap_servers,
        CANARY_TOPIC_PREFIX=prefix,
        CANARY_PARTITIONS="2",
        CANARY_STATE_DIR=str(tmp_path / "state"),
        PYTHONUNBUFFERED="1",
    )
    settings = settings.with_overrides(partitions=2)

    # No broker: a CLI command fails within its timeout, with one line and the hint.
    began = time.monotonic()
    cli = subprocess.run(
        [sys.executable, "-m", "model_canary.agents.cli.main", "status", "iris",
         "--connect-timeout", "3"],
        env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 2, cli.stderr
    assert cli.stderr.strip().count("\n") == 0, cli.stderr
    assert "connection refused" in cli.stderr and HINT in cli.stderr, cli.stderr
    assert "Traceback" not in cli.stderr
    assert time.monotonic() - began < 3 + 30  # the wait, plus Python's start on a busy machine

    worker_args = ["worker", "--model", "iris", "--version", "v1", "--adapter", "noop:",
                   "--instance", "w1"]  # fmt: skip
    agents = [
        Agent(["router", "--instance", "r1"], env, tmp_path / "router.log"),
        Agent(worker_args, env, tmp_path / "worker.log"),
        Agent(["evaluator"], env, tmp_path / "evaluator.log"),
    ]
    broker = LocalBroker(Settings.from_env({}, broker_port=port, state_dir=tmp_path / "broker"))
    try:
        for agent in agents:
            agent.wait_for_log("waiting for Kafka at", 60)
        # 12 s from when the last of them was up and waiting (Python starts slowly on a busy
        # machine).
        time.sleep(BROKER_LATE_S)
        for agent in agents:
            assert agent.alive, f"{agent.args[0]} gave up:\n{agent.log()}"
        broker.start(timeout=300)  # a busy 2-core machine starts a JVM slowly
        up = time.time()

        router, worker, _evaluator = agents
        router.wait_for_log("router assigned", SERVE_MARGIN_S + 30)
        worker.wait_for_log("worker assigned", SERVE_MARGIN_S + 30)
        control = ControlClient(settings)
        control.send("iris", "start", baseline_version="v1", canary_version="v2",
                     steps_bp=(100, 10_000), wait=60)  # fmt: skip
        ids = send_requests(settings, "iris", [f"user-{i}" for i in range(200)])
        results = read_topic(settings, TopicCatalogue(prefix).results, 150, timeout=60)
        assert len(results) >= 150, "the worker did not answer"
        decision = _first_decision(settings, 90)
        assert decision.model == "iris"
        assert len(ids) == 200

        # Each agent served soon after the broker answered (the figures show in the output).
        ready = {
            "router": _first(router, "router assigned"),
            "worker": _first(worker, "worker assigned"),
            # Its first decision, which needed the router's and the worker's work first.
            "evaluator": decision.decided_at.timestamp(),
        }
        figures = {name: round((at or 0) - up, 1) for name, at in ready.items()}
        print("seconds from the broker answering to serving:", figures)
        for name, at in ready.items():
            assert at is not None and at - up < SERVE_MARGIN_S, (name, at, up)
        for agent in agents:
            assert agent.alive, f"{agent.args[0]} exited:\n{agent.log()}"
    finally:
        for agent in agents:
            agent.stop()
        broker.stop()

    for agent in agents:
        lines = agent.log().splitlines()
        answered = next(i for i, line in enumerate(lines) if "answers after" in line)
        waiting = lines[:answered]
        span = (_stamp(lines[answered]) or 0) - (_stamp(waiting[0]) or 0)
        assert span >= BROKER_LATE_S, (agent.args[0], span)
        assert len(waiting) <= 1 + span / LINE_EVERY_S, (agent.args[0], waiting)
        assert all("waiting for Kafka at" in line and HINT in line for line in waiting), waiting
        assert "Traceback" not in agent.log(), agent.log()
