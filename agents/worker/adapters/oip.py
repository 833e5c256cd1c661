"""Open Inference Protocol (KServe v2) JSON helpers: read an inference request's tensors, write
an inference response, find the predicted label in a response.

>>> req = parse_request(b'{"inputs": [{"name": "input-0", "shape": [2], "datatype": "FP64",'
...                     b' "data": [1.5, 2.0]}]}')
>>> req.inputs[0].shape, req.inputs[0].data
((2,), [1.5, 2.0])
>>> response_body("iris", "r1", [output_tensor("y", [0], "INT64")]).decode()
'{"model_name":"iris","id":"r1","outputs":[{"name":"y","shape":[1],"datatype":"INT64","data":[0]}]}'
>>> prediction_of({"outputs": [{"name": "predict", "data": ["setosa"]}]})
'setosa'
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from model_canary.streams.errors import InvalidRecordError, UndecodableError

# OIP tensor datatype -> numpy dtype name, for the numeric types the adapters accept.
NUMERIC_DTYPES = {
    "BOOL": "bool",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}


@dataclass(frozen=True, slots=True)
class Tensor:
    """One input tensor of an inference request; ``data`` as sent (flat or nested, row-major).

    >>> Tensor("input-0", (1, 2), "FP32", [0.5, 1.0]).size
    2
    """

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: list[Any]

    @property
    def size(self) -> int:
        """The number of elements the shape promises."""
        size = 1
        for dim in self.shape:
            size *= dim
        return size


@dataclass(frozen=True, slots=True)
class InferRequest:
    """An OIP inference request: its optional ``id`` and its input tensors."""

    id: str | None
    inputs: tuple[Tensor, ...]


def is_json(content_type: str) -> bool:
    """True for ``application/json`` and ``+json`` media types, parameters ignored.

    >>> is_json("application/json; charset=utf-8"), is_json("application/cloudevents+json")
    (True, True)
    >>> is_json("application/octet-stream")
    False
    """
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def decode_json(body: bytes) -> Any:
    """The JSON value of ``body``; :class:`UndecodableError` when it is not UTF-8 JSON.

    >>> decode_json(b'{"a": 1}')
    {'a': 1}
    """
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UndecodableError(f"body is not JSON: {exc}") from None


def encode_json(value: Any) -> bytes:
    """Compact JSON bytes; ``ValueError``/``TypeError`` for NaN, infinities or unknown types.

    >>> encode_json({"a": [1, 2]})
    b'{"a":[1,2]}'
    """
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def parse_request(body: bytes) -> InferRequest:
    """Read an OIP inference request body. Raises :class:`UndecodableError` when it is not JSON
    and :class:`InvalidRecordError` when it is not an inference request with at least one
    well-formed input tensor (name, non-negative integer shape, datatype, data list)."""
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise InvalidRecordError("inference request must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidRecordError('inference request needs a non-empty "inputs" list')
    request_id = doc.get("id")
    return InferRequest(
        id=request_id if isinstance(request_id, str) else None,
        inputs=tuple(_tensor(raw, i) for i, raw in enumerate(raw_inputs)),
    )


def _tensor(raw: Any, index: int) -> Tensor:
    if not isinstance(raw, dict):
        raise InvalidRecordError(f"input {index} must be an object")
    name, shape, datatype, data = (raw.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str):
        raise InvalidRecordError(f'input {index} needs a "name" string')
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidRecordError(f'input {name!r}: "shape" must be a list of integers >= 0')
    if not isinstance(datatype, str):
        raise InvalidRecordError(f'input {name!r} needs a "datatype" string')
    if not isinstance(data, list):
        raise InvalidRecordError(f'input {name!r}: "data" must be a list')
    return Tensor(name, tuple(shape), datatype.upper(), data)


def output_tensor(
    name: str, data: Sequence[Any], datatype: str, shape: Sequence[int] | None = None
) -> dict[str, Any]:
    """An OIP response output tensor; ``shape`` defaults to ``[len(data)]``.

    >>> output_tensor("predict", [1, 0], "INT64")
    {'name': 'predict', 'shape': [2], 'datatype': 'INT64', 'data': [1, 0]}
    """
    return {
        "name": name,
        "shape": list(shape) if shape is not None else [len(data)],
        "datatype": datatype,
        "data": list(data),
    }


def response_body(model_name: str, request_id: str, outputs: Sequence[dict[str, Any]]) -> bytes:
    """An OIP inference response body (``ValueError`` for NaN or infinite values)."""
    return encode_json({"model_name": model_name, "id": request_id, "outputs": list(outputs)})


def prediction_of(response: Any) -> str | None:
    """The predicted label of an OIP response as text: ``outputs[0].data[0]`` (its first scalar
    when ``data`` is nested), or ``None`` when the response has no such value.

    >>> prediction_of({"outputs": [{"data": [[2.5, 1.0]]}]}), prediction_of({"outputs": []})
    ('2.5', None)
    """
    if not isinstance(response, dict):
        return None
    outputs = response.get("outputs")
    if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict):
        return None
    value: Any = outputs[0].get("data")
    while isinstance(value, list):
        if not value:
            return None
        value = value[0]
    if value is None or isinstance(value, dict):
        return None
    return str(value)
