"""Results on the wire: Avro by default, JSON for a request that came as JSON, and headers that
say whose answer it is, so any client (kcat included) can read one without decoding it.

>>> from model_canary.streams.messages import EPOCH, InferenceResult
>>> result = InferenceResult(request_id="r1", model="spam", version="v2", arm="canary",
...                          outputs=b'"ham"', latency_ms=1.5, created_at=EPOCH,
...                          routing_key="user-7")
>>> value, headers = encode_result(result, as_json=True)
>>> dict(headers)["content-type"], dict(headers)["canary-served"], value[:24]
(b'application/json', b'true', b'{"request_id":"r1","mode')
>>> decode_result(value, headers) == result
True
"""

from __future__ import annotations

import functools
from typing import Any

from model_canary.streams import headers as h
from model_canary.streams.codec.avro import INFERENCE_RESULT_CONTENT_TYPE, codec_for
from model_canary.streams.codec.json_records import decode_record, encode_json
from model_canary.streams.messages import InferenceResult


def result_headers(result: InferenceResult, content_type: str) -> h.RawHeaders:
    """``content-type``, request id, model, version, arm, served and routing key.

    >>> from model_canary.streams.messages import EPOCH
    >>> r = InferenceResult(request_id="r1", model="m", version="v1", arm="stable",
    ...                     outputs=b"", latency_ms=0.0, created_at=EPOCH)
    >>> len(result_headers(r, h.JSON)), h.ROUTING_KEY in dict(result_headers(r, h.JSON))
    (6, False)
    """
    # A worker writes one result per request: the headers its answers share are encoded once.
    head, who = _shared_headers(
        content_type, result.model, result.version, result.arm.value, result.served
    )
    items: h.RawHeaders = [head, (h.REQUEST_ID, result.request_id.encode()), *who]
    if result.routing_key is not None:
        items.append((h.ROUTING_KEY, result.routing_key.encode()))
    return items


@functools.lru_cache(maxsize=1024)
def _shared_headers(
    content_type: str, model: str, version: str, arm: str, served: bool
) -> tuple[tuple[str, bytes], tuple[tuple[str, bytes], ...]]:
    """The content-type header, and the model, version, arm and served headers, encoded."""
    who = h.encode_headers(
        [
            (h.MODEL, model),
            (h.VERSION, version),
            (h.ARM, arm),
            (h.SERVED, "true" if served else "false"),
        ]
    )
    return (h.CONTENT_TYPE, content_type.encode()), tuple(who)


def encode_result(result: InferenceResult, *, as_json: bool) -> tuple[bytes, h.RawHeaders]:
    """The result's value (JSON when ``as_json``, else Avro) and its headers."""
    if as_json:
        return encode_json(result), result_headers(result, h.JSON)
    return codec_for(InferenceResult).encode(result), result_headers(
        result, INFERENCE_RESULT_CONTENT_TYPE
    )


def decode_result(value: bytes | None, headers: Any) -> InferenceResult:
    """A result in whichever form its ``content-type`` header names (Avro without one);
    raises only :class:`~model_canary.streams.errors.DecodeError` subclasses."""
    content_type = h.header_dict(h.as_list(headers)).get(h.CONTENT_TYPE)
    return decode_record(InferenceResult, value, content_type)
