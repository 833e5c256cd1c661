"""Build a model adapter from the command line's spec string.

>>> load_adapter("noop:").name
'noop'
>>> load_adapter("json:dumps")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
model_canary.streams.errors.ConfigError: unknown model adapter 'json:dumps'; accepted: ...
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from model_canary.agents.worker.adapters.base import ModelAdapter
from model_canary.agents.worker.adapters.noop import NoopAdapter
from model_canary.agents.worker.adapters.oip_http import OipHttpAdapter
from model_canary.agents.worker.adapters.openai_http import OpenAiHttpAdapter
from model_canary.agents.worker.adapters.python_callable import PythonCallableAdapter
from model_canary.streams.errors import ConfigError

ACCEPTED = (
    "python:package.module:function, "
    "sklearn:/path/to/model.joblib (or .pkl), "
    "oip:http://host:port/v2/models/NAME[?concurrency=N], "
    "openai:http://host:port/v1?model=NAME[&concurrency=N&api_key_env=VAR], "
    "noop: (or noop:predict=LABEL)"
)


def load_adapter(
    spec: str, *, timeout_s: float = 10.0, search_path: Sequence[Path] | None = None
) -> ModelAdapter:
    """The adapter a spec names; ``timeout_s`` bounds each HTTP request of the HTTP adapters;
    ``search_path`` is where a ``python:`` module is looked for first (default: the working
    directory).
    :class:`ConfigError` for a malformed spec (the message lists the accepted forms) or a model
    that cannot be loaded.

    ::

        load_adapter("python:mypkg.models:predict_batch")
        load_adapter("sklearn:/models/iris-v2.joblib")
        load_adapter("oip:http://127.0.0.1:8000/v2/models/iris?concurrency=4", timeout_s=2.0)
        load_adapter("openai:http://127.0.0.1:8080/v1?model=qwen2.5-0.5b")
        load_adapter("noop:")
    """
    if not timeout_s > 0:
        raise ConfigError(f"model timeout must be > 0 s, got {timeout_s!r}")
    scheme, sep, rest = spec.strip().partition(":")
    if not sep:
        raise ConfigError(f"model adapter spec {spec!r} has no kind; accepted: {ACCEPTED}")
    kind = scheme.lower()
    if kind == "noop":
        label = rest.removeprefix("predict=") if rest.startswith("predict=") else None
        if rest and not label:
            raise ConfigError(f"noop takes no argument, got {spec!r}; accepted: {ACCEPTED}")
        return NoopAdapter(prediction=label)
    if not rest:
        raise ConfigError(f"model adapter spec {spec!r} is incomplete; accepted: {ACCEPTED}")
    if kind == "python":
        return PythonCallableAdapter.from_reference(rest, search_path)
    if kind == "sklearn":
        from model_canary.agents.worker.adapters.sklearn_model import SklearnAdapter

        return SklearnAdapter.from_path(rest)
    if kind == "oip":
        return OipHttpAdapter.from_url(rest, timeout_s=timeout_s)
    if kind == "openai":
        return OpenAiHttpAdapter.from_url(rest, timeout_s=timeout_s)
    raise ConfigError(f"unknown model adapter {spec!r}; accepted: {ACCEPTED}")
