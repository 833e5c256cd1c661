"""``openai:http://host:port/v1?model=NAME`` — an OpenAI-compatible chat server (vLLM,
llama.cpp server, Ollama). Each input is a chat-completions request JSON
(``{"messages": [...], ...}``); it is POSTed to ``{base}/chat/completions`` with ``model`` filled
in when missing and ``stream`` forced to false. The output is the response JSON, the prediction
(what labels and feedback are joined with, also on the result) the answer's text
``choices[0].message.content``, and the result's measures the answer's token counts
(``usage.prompt_tokens``, ``completion_tokens``, ``total_tokens``, when the server reports them).

Options: ``model``, ``api_key_env`` (the environment variable holding the API key, default
``OPENAI_API_KEY``; without a key no ``Authorization`` header is sent; the key is read once
when the adapter is built and never shown), and the transport options of
:mod:`~model_canary.agents.worker.adapters.http_common` (``concurrency``, ``retries``,
``proxy``, ``ca``, ``cert``, ``key``, ``key_password_env``).

::

    adapter = OpenAiHttpAdapter.from_url("http://127.0.0.1:8080/v1?model=qwen2.5-0.5b")
    body = b'{"messages": [{"role": "user", "content": "Is this spam? ..."}]}'
    adapter.predict([ModelInput("r1", body)])[0].prediction
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from model_canary.agents.worker.adapters.base import (
    BAD_INPUT,
    ModelInput,
    ModelOutput,
    error_output,
)
from model_canary.agents.worker.adapters.http_common import (
    TRANSPORT_OPTIONS,
    HttpBatchAdapter,
    HttpClient,
    concurrency,
    http_error,
    split_url,
)
from model_canary.agents.worker.adapters.oip import decode_json, encode_json
from model_canary.streams.errors import ConfigError, DecodeError
from model_canary.streams.headers import JSON

USAGE = (
    "openai:http(s)://host:port/v1[?model=NAME&api_key_env=VAR&concurrency=N&retries=N"
    "&proxy=URL&ca=PATH&cert=PATH&key=PATH&key_password_env=VAR]"
)
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


class OpenAiHttpAdapter(HttpBatchAdapter):
    """Calls ``POST {base}/chat/completions`` once per input, concurrently (see the module
    docs). ``model`` is filled into requests that do not name one."""

    def __init__(
        self, name: str, client: HttpClient, concurrency: int, model: str | None = None
    ) -> None:
        super().__init__(name, client, concurrency)
        self.model = model

    @classmethod
    def from_url(
        cls, url: str, *, timeout_s: float = 10.0, environ: Mapping[str, str] | None = None
    ) -> OpenAiHttpAdapter:
        """Build from the URL part of an ``openai:`` spec; :class:`ConfigError` for a bad URL,
        an unknown option or an ``api_key_env`` variable that is not set."""
        env = os.environ if environ is None else environ
        base, params = split_url(
            url, usage=USAGE, allowed=("model", "api_key_env", *TRANSPORT_OPTIONS)
        )
        model = params.get("model") or None
        key_env = params.get("api_key_env")
        if key_env is not None and not env.get(key_env):
            raise ConfigError(f"api_key_env names {key_env!r}, but that variable is not set")
        api_key = env.get(key_env or DEFAULT_KEY_ENV)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        client = HttpClient.from_params(base, params, timeout_s, headers, env)
        return cls(model or "openai", client, concurrency(params), model=model)

    def call_one(self, item: ModelInput) -> ModelOutput:
        """Complete the request, POST it, read the answer's first message."""
        try:
            request = decode_json(item.inputs)
        except DecodeError as exc:
            return error_output(exc.detail, BAD_INPUT)
        if not isinstance(request, dict):
            return error_output("chat request must be a JSON object", BAD_INPUT)
        if self.model is not None and not request.get("model"):
            request["model"] = self.model
        request["stream"] = False
        try:
            body = encode_json(request)
        except ValueError as exc:  # NaN or infinity: Python's decoder accepts them
            return error_output(f"chat request is not valid JSON: {exc}", BAD_INPUT)
        response = self.client.post("/chat/completions", body, JSON)
        if not 200 <= response.status < 300:
            return http_error(response)
        try:
            answer = decode_json(response.body)
        except DecodeError:
            answer = None
        return ModelOutput(
            response.body,
            response.content_type,
            prediction=_content(answer),
            measures=_usage(answer),
        )


def _content(answer: Any) -> str | None:
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


#: Token counts of a chat completion's ``usage``, kept as the result's measures.
TOKEN_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _usage(answer: Any) -> dict[str, float]:
    """The token counts in ``answer["usage"]`` that are numbers.

    >>> _usage({"usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": "x"}})
    {'prompt_tokens': 9.0, 'completion_tokens': 3.0}
    """
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if not isinstance(usage, dict):
        return {}
    out: dict[str, float] = {}
    for name in TOKEN_COUNTS:
        count = usage.get(name)
        if isinstance(count, int | float) and not isinstance(count, bool) and math.isfinite(count):
            out[name] = float(count)
    return out
