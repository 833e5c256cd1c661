"""A worker on a (fake) OpenAI-compatible server: its answers carry the answer's text as the
prediction and the completion's token counts as measures, end to end through the router."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from model_canary.agents.client import CanaryClient, ControlClient
from model_canary.streams.codec.requests import canonical_json
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent
from tests.integration.fake_openai import serving

pytestmark = pytest.mark.integration


def test_results_carry_the_answer_text_and_token_counts(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    with serving() as server:
        base = f"http://127.0.0.1:{server.server_address[1]}/v1"
        spawn("router", "--instance", "r1").ready()
        ControlClient(settings).send("chat", "register", baseline_version="v1")
        start_worker("v1", model="chat", adapter=f"openai:{base}?model=helpful")
        with CanaryClient(settings) as client:
            chat = {"messages": [{"role": "user", "content": "is kafka a queue"}]}
            # The chat request itself is the model's input (bytes: not made into OIP form).
            result = client.infer(canonical_json(chat), model="chat", key="u1", timeout=60)
    assert result.version == "v1" and result.error is None
    assert result.prediction == "Sure: IS KAFKA A QUEUE"
    assert dict(result.measures) == {
        "prompt_tokens": 4.0,
        "completion_tokens": 5.0,
        "total_tokens": 9.0,
    }
    assert result.json()["choices"][0]["message"]["content"] == result.prediction
