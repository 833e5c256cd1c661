"""``oip:http://host:port/v2/models/NAME`` — a model server speaking the Open Inference Protocol
v2 (KServe, Triton, MLServer). Each input body is POSTed as is to ``{base}/infer`` with its
content type, up to ``?concurrency=N`` requests at once (default 8). A non-2xx answer becomes an
``"http-<status>"`` error; the prediction is the response's ``outputs[0].data[0]``. Retries,
proxies and TLS client certificates: the options of
:mod:`~model_canary.agents.worker.adapters.http_common`.

::

    adapter = OipHttpAdapter.from_url("http://127.0.0.1:8000/v2/models/iris?concurrency=4")
    outputs = adapter.predict([ModelInput("r1", request_body)])
"""

from __future__ import annotations

from model_canary.agents.worker.adapters.base import ModelInput, ModelOutput
from model_canary.agents.worker.adapters.http_common import (
    TRANSPORT_OPTIONS,
    HttpBatchAdapter,
    HttpClient,
    concurrency,
    http_error,
    split_url,
)
from model_canary.agents.worker.adapters.oip import decode_json, is_json, prediction_of
from model_canary.streams.errors import ConfigError, DecodeError

USAGE = (
    "oip:http(s)://host:port/v2/models/NAME[/versions/V]"
    "[?concurrency=N&retries=N&proxy=URL&ca=PATH&cert=PATH&key=PATH&key_password_env=VAR]"
)


class OipHttpAdapter(HttpBatchAdapter):
    """Calls ``POST {base}/infer`` once per input, concurrently (see the module docs)."""

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 10.0) -> OipHttpAdapter:
        """Build from the URL part of an ``oip:`` spec; :class:`ConfigError` when the URL is not
        ``http(s)://host[:port]/.../v2/models/NAME`` or has an unknown option."""
        base, params = split_url(url, usage=USAGE, allowed=TRANSPORT_OPTIONS)
        _, marker, model_path = base.partition("/v2/models/")
        name = model_path.split("/", 1)[0]
        if not marker or not name:
            raise ConfigError(f"expected {USAGE}, got {url!r}")
        client = HttpClient.from_params(base, params, timeout_s)
        return cls(name, client, concurrency(params))

    def call_one(self, item: ModelInput) -> ModelOutput:
        """POST the input to ``/infer``; the answer's bytes and content type are the output."""
        response = self.client.post("/infer", item.inputs, item.content_type)
        if not 200 <= response.status < 300:
            return http_error(response)
        prediction = None
        if is_json(response.content_type):
            try:
                prediction = prediction_of(decode_json(response.body))
            except DecodeError:
                prediction = None
        return ModelOutput(response.body, response.content_type, prediction=prediction)
