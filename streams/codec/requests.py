"""Inference requests in their two wire forms, chosen by the ``content-type`` header.

* absent, or ``application/vnd.modelcanary.inference-request+avro``: Avro single-object;
* ``application/json`` (optionally ``; charset=utf-8``): a JSON object for clients without
  Avro tooling (kcat, shell scripts)::

    {"request_id": "r1", "model": "iris", "routing_key": "user-7",
     "inputs": {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                            "data": [5.1, 3.5, 1.4, 0.2]}]},
     "timeout_ms": 1000, "attributes": {"tenant": "a"}, "created_at": 1700000000000}

  ``inputs`` is usually an Open Inference Protocol (KServe v2) request object, stored as
  canonical JSON bytes; it may also be a string, taken verbatim as UTF-8 with the optional
  ``content_type`` field. ``created_at`` is epoch milliseconds or ISO-8601 (UTC if no offset);
  when absent the caller's ``now`` is used. Unknown keys are ignored.

>>> req = decode_request(b'{"request_id":"r1","model":"iris","inputs":{"b":1,"a":2},'
...                      b'"created_at":0}', "application/json")
>>> req.inputs, req.created_at.year
(b'{"a":2,"b":1}', 1970)
>>> decode_request(encode_request_json(req), "application/json") == req
True
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from model_canary.streams.codec.avro import INFERENCE_REQUEST_CONTENT_TYPE, codec_for
from model_canary.streams.errors import (
    InvalidRecordError,
    PayloadTooLargeError,
    RecordValidationError,
    UndecodableError,
    UnsupportedContentTypeError,
)
from model_canary.streams.headers import JSON
from model_canary.streams.messages import InferenceRequest, epoch_ms, from_epoch_ms, utc_now

DEFAULT_MAX_BYTES = 1_048_576


def canonical_json(value: Any) -> bytes:
    """Compact JSON with sorted keys, the form request ``inputs`` are stored in."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


@functools.lru_cache(maxsize=256)  # every request's header names one of a few types
def media_type(content_type: str) -> tuple[str, Mapping[str, str]]:
    """``"Application/JSON; charset=UTF-8"`` -> ``("application/json", {"charset": "UTF-8"})``
    (the parameters are shared between calls: read them, never change them)."""
    media, *params = content_type.split(";")
    parsed: dict[str, str] = {}
    for param in params:
        key, _, value = param.partition("=")
        parsed[key.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), parsed


def decode_request(
    value: bytes,
    content_type: str | None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    now: datetime | None = None,
    model: str | None = None,
    request_id: str | None = None,
    routing_key: str | None = None,
) -> InferenceRequest:
    """Decode an inference request in the form ``content_type`` names (Avro when ``None``).

    ``model``, ``request_id`` and ``routing_key`` are what the message's headers and key say
    (``canary-model``, ``canary-request-id``, the Kafka key): a JSON request may leave them out
    of its body, or be nothing but the model's input (see :func:`decode_request_json`); a
    request without a routing key of its own takes ``routing_key``. ``now`` is the
    ``created_at`` of a JSON request that has none (default: the clock). Raises only
    :class:`~model_canary.streams.errors.DecodeError` subclasses.
    """
    if not isinstance(value, bytes | bytearray | memoryview):
        raise UndecodableError(f"inference request: expected bytes, got {type(value).__name__}")
    if len(value) > max_bytes:
        raise PayloadTooLargeError(
            f"inference request is {len(value)} bytes, over the {max_bytes}-byte limit"
        )
    media, params = media_type(content_type) if content_type else ("", {})
    if media in ("", INFERENCE_REQUEST_CONTENT_TYPE):
        request = codec_for(InferenceRequest).decode(bytes(value))
    elif media == JSON and params.get("charset", "utf-8").lower() in ("utf-8", "utf8"):
        request = decode_request_json(
            bytes(value), now=now, model=model, request_id=request_id, routing_key=routing_key
        )
    else:
        raise UnsupportedContentTypeError(
            f"content type {content_type!r} is not supported for inference requests; "
            f"use {JSON} (UTF-8) or {INFERENCE_REQUEST_CONTENT_TYPE}"
        )
    if request.routing_key is None and routing_key:
        request = dataclasses.replace(request, routing_key=routing_key)
    return request


def decode_request_json(
    value: bytes,
    *,
    now: datetime | None = None,
    model: str | None = None,
    request_id: str | None = None,
    routing_key: str | None = None,
) -> InferenceRequest:
    """Decode the JSON form (see the module docstring), or a bare model input.

    Without ``model`` (no ``canary-model`` header) the body is the request form. With it, a
    JSON object with ``inputs`` and any of ``model``, ``request_id``, ``routing_key`` is still
    the request form (its fields win; ``model`` and ``request_id`` fill in what it leaves
    out), and anything else is the model's input itself, stored as canonical JSON.

    >>> bare = decode_request_json(b'{"text": "win a prize"}', model="spam", request_id="0-7")
    >>> bare.request_id, bare.model, bare.inputs
    ('0-7', 'spam', b'{"text":"win a prize"}')
    """
    try:
        doc = _loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UndecodableError(f"inference request is not UTF-8 JSON: {exc}") from exc
    if model and not is_envelope(doc):
        if not request_id:
            raise InvalidRecordError("JSON inference request is missing field 'request_id'")
        try:
            inputs = canonical_json(doc)
            return InferenceRequest(
                request_id=request_id,
                model=model,
                inputs=inputs,
                routing_key=routing_key,
                created_at=_created_at(None, now),
            )
        except (ValueError, RecursionError) as exc:
            raise InvalidRecordError(str(exc)) from exc
    if not isinstance(doc, dict):
        raise InvalidRecordError(
            f"JSON inference request must be an object, got {type(doc).__name__} (or send the "
            "bare model input with the model in a canary-model header)"
        )
    in_body = _field(doc, "request_id", str)
    request_id = in_body if in_body is not None else request_id
    if request_id is None:
        raise InvalidRecordError("JSON inference request is missing field 'request_id'")
    in_body = _field(doc, "model", str)
    model = in_body if in_body is not None else model
    if model is None:
        raise InvalidRecordError("JSON inference request is missing field 'model'")
    inputs, content_type = _inputs(doc)
    try:
        return InferenceRequest(
            request_id=request_id,
            model=model,
            inputs=inputs,
            content_type=content_type,
            routing_key=_field(doc, "routing_key", str),
            created_at=_created_at(doc.get("created_at"), now),
            timeout_ms=_field(doc, "timeout_ms", int),
            attributes=_attributes(doc),
        )
    except ValueError as exc:
        raise InvalidRecordError(str(exc)) from exc


def is_envelope(doc: Any) -> bool:
    """Whether a JSON value is the request form (``inputs`` with ``model``, ``request_id`` or
    ``routing_key``) rather than a bare model input.

    >>> is_envelope({"model": "iris", "inputs": {}}), is_envelope({"inputs": [], "id": "x"})
    (True, False)
    """
    return (
        isinstance(doc, dict)
        and "inputs" in doc
        and any(k in doc for k in ("model", "request_id", "routing_key"))
    )


def encode_request_json(request: InferenceRequest) -> bytes:
    """The JSON form of ``request``; it decodes back to an equal request.

    ``inputs`` is embedded as JSON when it is canonical JSON with content type
    ``application/json``, otherwise as a string with ``content_type`` (``ValueError`` if the
    bytes are not UTF-8: use the Avro form for binary inputs).
    """
    doc: dict[str, Any] = {"request_id": request.request_id, "model": request.model}
    embedded = _embeddable(request)
    if embedded is not None:
        doc["inputs"] = embedded
    else:
        try:
            doc["inputs"] = request.inputs.decode("utf-8")
        except UnicodeDecodeError:
            raise RecordValidationError("inputs are not UTF-8 text; use the Avro form") from None
        doc["content_type"] = request.content_type
    if request.routing_key is not None:
        doc["routing_key"] = request.routing_key
    doc["created_at"] = epoch_ms(request.created_at)
    if request.timeout_ms is not None:
        doc["timeout_ms"] = request.timeout_ms
    if request.attributes:
        doc["attributes"] = dict(request.attributes)
    return json.dumps(doc, separators=(",", ":")).encode()


def oip_request(
    inputs: Mapping[str, Sequence[Any]], *, datatype: str = "FP64", request_id: str | None = None
) -> bytes:
    """An Open Inference Protocol (v2) request body with one tensor per ``inputs`` entry;
    nested lists give the shape and are flattened row-major (``ValueError`` if ragged).

    >>> oip_request({"x": [[5.1, 3.5, 1.4, 0.2]]})
    b'{"inputs":[{"data":[5.1,3.5,1.4,0.2],"datatype":"FP64","name":"x","shape":[1,4]}]}'
    """
    tensors = []
    for name, values in inputs.items():
        shape, data = _flatten(values, name)
        tensors.append({"name": name, "shape": shape, "datatype": datatype, "data": data})
    body: dict[str, Any] = {"inputs": tensors}
    if request_id is not None:
        body["id"] = request_id
    return canonical_json(body)


def parse_oip_response(body: bytes) -> dict[str, list[Any]]:
    """``{output name: flat data}`` of an Open Inference Protocol (v2) response body.

    >>> parse_oip_response(b'{"outputs":[{"name":"label","shape":[1],"datatype":"BYTES",'
    ...                    b'"data":["setosa"]}]}')
    {'label': ['setosa']}
    """
    try:
        doc = _loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UndecodableError(f"inference response is not UTF-8 JSON: {exc}") from exc
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list):
        raise InvalidRecordError("inference response has no 'outputs' list")
    parsed: dict[str, list[Any]] = {}
    for out in outputs:
        if not (isinstance(out, dict) and isinstance(out.get("name"), str)):
            raise InvalidRecordError("inference response output without a 'name'")
        if not isinstance(out.get("data"), list):
            raise InvalidRecordError(f"inference response output {out['name']!r} has no 'data'")
        parsed[out["name"]] = out["data"]
    return parsed


# --- helpers ----------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise UndecodableError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def _field(doc: dict[str, Any], name: str, kind: type, *, required: bool = False) -> Any:
    value = doc.get(name)
    if value is None:
        if required:
            raise InvalidRecordError(f"JSON inference request is missing field {name!r}")
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidRecordError(
            f"field {name!r} must be a {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _inputs(doc: dict[str, Any]) -> tuple[bytes, str]:
    inputs = doc.get("inputs")
    content_type = _field(doc, "content_type", str)
    if inputs is None:
        raise InvalidRecordError("JSON inference request is missing field 'inputs'")
    if isinstance(inputs, str):
        return inputs.encode("utf-8"), content_type or JSON
    if not isinstance(inputs, dict | list):
        raise InvalidRecordError(
            f"field 'inputs' must be an object, array or string, got {type(inputs).__name__}"
        )
    if content_type is not None and media_type(content_type)[0] != JSON:
        raise InvalidRecordError(f"field 'inputs' is JSON but content_type is {content_type!r}")
    try:
        return canonical_json(inputs), JSON
    except (ValueError, RecursionError) as exc:
        raise InvalidRecordError(f"field 'inputs' cannot be stored: {exc}") from exc


def _embeddable(request: InferenceRequest) -> Any:
    if request.content_type != JSON:
        return None
    try:
        value = _loads(request.inputs.decode("utf-8"))
        canonical = canonical_json(value)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict | list) and canonical == request.inputs else None


def _created_at(value: Any, now: datetime | None) -> datetime:
    try:
        if value is None:
            return utc_now() if now is None else _to_ms(now)
        if isinstance(value, int) and not isinstance(value, bool):
            return from_epoch_ms(value)
        if isinstance(value, str):
            return _to_ms(datetime.fromisoformat(value))
    except (ValueError, OverflowError) as exc:
        raise InvalidRecordError(f"field 'created_at' is out of range or malformed: {exc}") from exc
    raise InvalidRecordError(
        f"field 'created_at' must be epoch milliseconds or an ISO-8601 string, "
        f"got {type(value).__name__}"
    )


def _to_ms(when: datetime) -> datetime:
    """Aware UTC, truncated to milliseconds like the Avro form; naive means UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return from_epoch_ms(epoch_ms(when))


def _attributes(doc: dict[str, Any]) -> dict[str, str]:
    attributes: dict[str, Any] = _field(doc, "attributes", dict) or {}
    for key, value in attributes.items():
        if not isinstance(value, str):
            raise InvalidRecordError(f"attribute {key!r} must be a string")
    return attributes


def _flatten(values: Any, name: str) -> tuple[list[int], list[Any]]:
    if not isinstance(values, list | tuple):
        return [], [values]
    parts = [_flatten(v, name) for v in values]
    shapes = {tuple(shape) for shape, _ in parts}
    if len(shapes) > 1:
        raise RecordValidationError(f"input {name!r} is ragged: rows of shapes {sorted(shapes)}")
    inner = list(next(iter(shapes))) if shapes else []
    return [len(values), *inner], [item for _, data in parts for item in data]
