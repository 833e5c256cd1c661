"""load_adapter: spec strings -> adapters, and helpful errors for bad specs."""

from __future__ import annotations

import re

import pytest

from model_canary.agents.worker.adapters import (
    ModelInput,
    NoopAdapter,
    load_adapter,
    predict_safely,
)
from model_canary.agents.worker.adapters.oip_http import OipHttpAdapter
from model_canary.agents.worker.adapters.openai_http import OpenAiHttpAdapter
from model_canary.agents.worker.adapters.python_callable import PythonCallableAdapter
from model_canary.streams.errors import ConfigError


def test_noop_can_predict_a_fixed_label() -> None:
    adapter = load_adapter("noop:predict=setosa")
    assert [o.prediction for o in adapter.predict([ModelInput("r1", b"{}")] * 2)] == [
        "setosa",
        "setosa",
    ]


def test_noop_answers_every_input_instantly() -> None:
    adapter = load_adapter("noop:")
    assert isinstance(adapter, NoopAdapter)
    out = predict_safely(adapter, [ModelInput(f"r{i}", b"x") for i in range(3)], timeout_s=1.0)
    assert [(o.outputs, o.ok, o.prediction) for o in out] == [(b'{"outputs":[]}', True, None)] * 3


def test_each_kind_builds_its_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert isinstance(load_adapter("python:json:dumps"), PythonCallableAdapter)
    oip = load_adapter("OIP:https://models.example:8443/v2/models/iris/versions/2?concurrency=3")
    assert isinstance(oip, OipHttpAdapter)
    assert (oip.name, oip.concurrency, oip.client.base_url) == (
        "iris",
        3,
        "https://models.example:8443/v2/models/iris/versions/2",
    )
    oip.close()
    openai = load_adapter("openai:http://127.0.0.1:8080/v1?model=m", timeout_s=2.5)
    assert isinstance(openai, OpenAiHttpAdapter)
    assert (openai.model, openai.concurrency, openai.client.timeout_s) == ("m", 8, 2.5)
    openai.close()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "has no kind; accepted: python:package.module:function, sklearn:"),
        ("iris.joblib", "has no kind; accepted:"),
        ("onnx:/m.onnx", "unknown model adapter 'onnx:/m.onnx'; accepted:"),
        ("python:", "is incomplete; accepted:"),
        ("noop:fast", "noop takes no argument"),
        ("oip:ftp://host/v2/models/m", "expected oip:http(s)://host:port/v2/models/NAME"),
        ("oip:http://host:8000/v1/models/m", "expected oip:http(s)://host:port/v2/models/NAME"),
        ("oip:http://host:8000/v2/models/", "expected oip:http(s)://host:port/v2/models/NAME"),
        ("oip:http://host:99999/v2/models/m", "bad port"),
        ("oip:http://host/v2/models/m?concurrency=0", "concurrency must be an integer 1..256"),
        ("oip:http://host/v2/models/m?concurrency=many", "concurrency must be an integer"),
        ("oip:http://host/v2/models/m?model=x", "unknown option 'model'"),
        ("openai:http://host/v1?modle=x", "unknown option 'modle'"),
        ("openai:http://host/v1?model=a&model=b", "given twice"),
        ("openai:localhost:8080/v1", "expected openai:http(s)://host:port/v1"),
        ("openai:http://host/v1?api_key_env=SURELY_UNSET_VAR_123", "is not set"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_adapter(spec)


@pytest.mark.parametrize("timeout_s", [0.0, -1.0])
def test_timeout_must_be_positive(timeout_s: float) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        load_adapter("noop:", timeout_s=timeout_s)
