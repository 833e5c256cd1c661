"""The Python client against real agents: request/reply, asyncio, timeouts, model errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from model_canary.agents.client import (
    AsyncCanaryClient,
    CanaryClient,
    CommandRejectedError,
    ControlClient,
    InferenceError,
)
from model_canary.streams.codec.requests import parse_oip_response
from model_canary.streams.errors import RequestTimeoutError
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent

pytestmark = pytest.mark.integration


@pytest.fixture
def serving(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    router = spawn("router", "--instance", "r1")
    start_worker(adapter="python:tests.integration.models:fails_on_negative")
    router.ready()
    ControlClient(settings).send("iris", "register", baseline_version="v1")


def test_infer_returns_the_served_result(settings: Settings, serving: None) -> None:
    with CanaryClient(settings) as client:
        result = client.infer({"x": [[4.5, 1.0]]}, model="iris", key="user-1", timeout=30)
        assert (result.model, result.version, result.served) == ("iris", "v1", True)
        assert parse_oip_response(result.outputs) == {"echo": [4.5]}
        futures = [client.infer_nowait({"x": [[float(i)]]}, model="iris") for i in range(50)]
        values = [parse_oip_response(f.result(30).outputs)["echo"][0] for f in futures]
        assert values == [float(i) for i in range(50)]


def test_model_errors_are_served_as_errors(settings: Settings, serving: None) -> None:
    with CanaryClient(settings) as client:
        with pytest.raises(InferenceError, match="negative input") as info:
            client.infer({"x": [[-1.0]]}, model="iris", timeout=30)
        assert info.value.result.error_type == "exception"
        # The worker is still serving.
        assert client.infer({"x": [[2.0]]}, model="iris", timeout=30).error is None


def test_a_rejected_command_raises_the_state_machines_error(
    settings: Settings, serving: None
) -> None:
    control = ControlClient(settings)
    with pytest.raises(CommandRejectedError, match="bad-weight") as info:
        control.send("iris", "start", canary_version="v2", steps_bp=(5000, 2000, 10000))
    assert info.value.reason == "bad-weight"
    assert info.value.event is not None and info.value.event.outcome == "rejected"
    assert info.value.command is not None and info.value.command.canary_version == "v2"
    # The CLI's spelling of an action is accepted; rejected here, since nothing is in progress.
    outcome = control.send("iris", "set-weight", weight_bp=100, check=False)
    assert (outcome.event.action, outcome.event.reason) == ("set_weight", "forbidden-transition")


def test_async_client(settings: Settings, serving: None) -> None:
    async def main() -> list[float]:
        async with AsyncCanaryClient(settings) as client:
            results = await asyncio.gather(
                *(client.infer({"x": [[float(i)]]}, model="iris", timeout=30) for i in range(10))
            )
        return [parse_oip_response(r.outputs)["echo"][0] for r in results]

    assert asyncio.run(main()) == [float(i) for i in range(10)]


def test_timeout_raises_a_typed_error(settings: Settings, topics: TopicCatalogue) -> None:
    # No router runs: nothing can answer.
    with CanaryClient(settings) as client, pytest.raises(RequestTimeoutError, match="within 1s"):
        client.infer({"x": [[1.0]]}, model="iris", timeout=1)


def test_cli_request_and_tail(settings: Settings, serving: None) -> None:
    env_args = ["--bootstrap", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_canary.agents.cli.main",
            "request",
            "--model",
            "iris",
            "--input",
            '{"x": [[3.0]]}',
            "--key",
            "u9",
            *env_args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["type"] == "InferenceResult" and result["version"] == "v1"
    assert result["outputs"]["outputs"][0]["data"] == [3.0]
    tail = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_canary.agents.cli.main",
            "tail",
            "results",
            "--from-beginning",
            "--max",
            "1",
            *env_args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert tail.returncode == 0, tail.stderr
    assert json.loads(tail.stdout.splitlines()[0])["request_id"] == result["request_id"]
