"""Every agent serves Prometheus metrics; scrape the running router and worker."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable

import pytest

from model_canary.agents.client.control import ControlClient
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, read_topic, send_requests

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int, wanted: list[str], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            text = ""
        if all(w in text for w in wanted):
            return text
        time.sleep(0.5)
    missing = [w for w in wanted if w not in text]
    raise AssertionError(f"missing from /metrics: {missing}")


def test_router_and_worker_metrics(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    router_port, worker_port = _free_port(), _free_port()
    router_agent = spawn("router", "--instance", "r1", "--metrics-port", str(router_port))
    start_worker("v1", "--metrics-port", str(worker_port))
    router_agent.ready()
    control = ControlClient(settings)
    control.send("iris", "start", baseline_version="v1", canary_version="v2")
    control.send("iris", "set_weight", weight_bp=2000)
    send_requests(settings, "iris", [f"u{i}" for i in range(300)])
    read_topic(settings, topics.results, 1, settle=0)

    router = _scrape(
        router_port,
        [
            'canary_routed_requests_total{arm="canary",model="iris",version="v2"}',
            'canary_routed_requests_total{arm="baseline",model="iris",version="v1"}',
            'canary_weight_ratio{model="iris"} 0.2',
            'canary_control_commands_total{action="set_weight",outcome="applied"} 1.0',
            'canary_transaction_commit_duration_seconds_count{agent="router"}',
            'canary_transaction_offsets_duration_seconds_count{agent="router"}',
            'canary_transaction_flush_duration_seconds_count{agent="router"}',
            'canary_consumer_lag_messages{agent="router"',
            'canary_batch_size_bucket{agent="router"',
        ],
    )
    routed = sum(
        float(line.rsplit(" ", 1)[1])
        for line in router.splitlines()
        if line.startswith("canary_routed_requests_total{")
    )
    assert routed == 300
    worker = _scrape(
        worker_port,
        [
            'canary_inferences_total{model="iris",outcome="ok",version="v1"}',
            'canary_inference_duration_seconds_bucket{le="0.001",model="iris",version="v1"}',
        ],
    )
    assert "request_id" not in router + worker, "no request ids in labels"
