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
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from model_canary.streams import headers as h
from model_canary.streams.codec.avro import INFERENCE_RESULT_CONTENT_TYPE, codec_for
from model_canary.streams.codec.json_records import decode_record, encode_json
from model_canary.streams.messages import MAX_BP, Arm, InferenceResult


def result_headers(result: InferenceResult, content_type: str) -> h.RawHeaders:
    """``content-type``, request id, model, version, arm, served and routing key.

    >>> from model_canary.streams.messages import EPOCH
    >>> r = InferenceResult(request_id="r1", model="m", version="v1", arm="stable",
    ...                     outputs=b"", latency_ms=0.0, created_at=EPOCH)
    >>> len(result_headers(r, h.JSON)), h.ROUTING_KEY in dict(result_headers(r, h.JSON))
    (6, False)
    """
    return _headers(
        content_type,
        result.request_id,
        result.model,
        result.version,
        result.arm.value,
        result.served,
        result.routing_key,
    )


def _headers(
    content_type: str,
    request_id: str,
    model: str,
    version: str,
    arm: str,
    served: bool,
    routing_key: str | None,
) -> h.RawHeaders:
    # A worker writes one result per request: the headers its answers share are encoded once.
    head, who = _shared_headers(content_type, model, version, arm, served)
    items: h.RawHeaders = [head, (h.REQUEST_ID, request_id.encode()), *who]
    if routing_key is not None:
        items.append((h.ROUTING_KEY, routing_key.encode()))
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


def encode_answer(
    *,
    request_id: str,
    model: str,
    version: str,
    arm: Arm,
    served: bool,
    outputs: bytes,
    content_type: str,
    error: str | None,
    error_type: str | None,
    rollout_id: str | None,
    weight_bp: int,
    routing_key: str | None,
    latency_ms: float,
    created_at: datetime,
    prediction: str | None,
    measures: Mapping[str, float],
    as_json: bool,
) -> tuple[bytes, h.RawHeaders]:
    """What :func:`encode_result` writes for the result with these fields (the same bytes and
    headers, or the same error), for a worker answering from what it has in hand: the Avro
    form is written straight from the values when they are what the result would hold
    (nothing the record would refuse or convert), without building the record; any other
    value, and the JSON form, go through :class:`InferenceResult` and :func:`encode_result`.

    >>> from model_canary.streams.messages import EPOCH
    >>> fields = dict(request_id="r1", model="spam", version="v2", arm=Arm.CANARY, served=True,
    ...               outputs=b'"ham"', content_type="application/json", error=None,
    ...               error_type=None, rollout_id=None, weight_bp=0, routing_key="user-7",
    ...               latency_ms=1.5, created_at=EPOCH, prediction="ham", measures={})
    >>> result = InferenceResult(**fields)
    >>> encode_answer(**fields, as_json=False) == encode_result(result, as_json=False)
    True
    """
    if (
        not as_json
        and request_id != ""
        and type(arm) is Arm
        and type(weight_bp) is int
        and 0 <= weight_bp <= MAX_BP
        and (not measures or _plain_measures(measures))
    ):  # (a time that is not an aware datetime, or any unexpected type: not written below)
        value = codec_for(InferenceResult).encode_values(
            request_id,
            model,
            version,
            arm,
            served,
            outputs,
            content_type,
            error,
            error_type,
            rollout_id,
            weight_bp,
            routing_key,
            latency_ms,
            created_at,
            prediction,
            measures,
        )
        if value is not None:
            headers = _headers(
                INFERENCE_RESULT_CONTENT_TYPE,
                request_id,
                model,
                version,
                arm.value,
                served,
                routing_key,
            )
            return value, headers
    result = InferenceResult(
        request_id=request_id,
        model=model,
        version=version,
        arm=arm,
        served=served,
        outputs=outputs,
        content_type=content_type,
        error=error,
        error_type=error_type,
        rollout_id=rollout_id,
        weight_bp=weight_bp,
        routing_key=routing_key,
        latency_ms=latency_ms,
        created_at=created_at,
        prediction=prediction,
        measures=measures,
    )
    return encode_result(result, as_json=as_json)


def _plain_measures(measures: Mapping[str, float]) -> bool:
    """Whether :class:`InferenceResult` keeps ``measures`` as they are (named, finite plain
    numbers)."""
    if not isinstance(measures, Mapping):
        return False
    for name, number in measures.items():
        if not name or (type(number) is not float and type(number) is not int):
            return False
        if not math.isfinite(number):
            return False
    return True


def decode_result(value: bytes | None, headers: Any) -> InferenceResult:
    """A result in whichever form its ``content-type`` header names (Avro without one);
    raises only :class:`~model_canary.streams.errors.DecodeError` subclasses."""
    content_type = h.header_dict(h.as_list(headers)).get(h.CONTENT_TYPE)
    return decode_record(InferenceResult, value, content_type)
