"""The JSON form of every record, for clients without Avro tooling (kcat, shell scripts, other
languages): results, feedback, control commands and events, rollout states, dead letters.

A record's JSON form is an object with one key per field, named as in the Avro schema:

* timestamps are epoch milliseconds (ISO-8601 text is accepted too, UTC without an offset);
* enum-like fields are their text (an action may be spelled ``set-weight`` or ``set_weight``);
* a payload (``inputs``, ``outputs``) whose content type is JSON is embedded as JSON (read
  back in canonical form: sorted keys, no spaces), other UTF-8 text as a string, anything else
  as base64 under ``<field>_base64``;
* arrays of steps are JSON arrays, maps are objects, nested records are objects;
* a number JSON cannot hold (infinity, NaN) is the text ``"Infinity"``, ``"-Infinity"`` or
  ``"NaN"`` (JavaScript's spelling), and read back as that number.

Decoding checks every field's type and then the record's own rules; a field that is absent
takes its default, or the value the caller passes in ``defaults`` (the time, a generated id),
else it is an :class:`~model_canary.streams.errors.InvalidRecordError`. Unknown keys are
ignored, so writers may add fields.

>>> from model_canary.streams.messages import Feedback
>>> fb = decode_json(Feedback, b'{"request_id": "r1", "model": "iris", "label": "2",'
...                  b' "observed_at": 0}')
>>> fb.label, fb.observed_at.year
('2', 1970)
>>> encode_json(fb)[:62]
b'{"request_id":"r1","model":"iris","label":"2","observed_at":0,'
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from model_canary.streams.codec.avro import codec_for
from model_canary.streams.codec.requests import canonical_json, media_type
from model_canary.streams.errors import (
    InvalidRecordError,
    PayloadTooLargeError,
    RecordTypeError,
    UndecodableError,
    UnsupportedContentTypeError,
)
from model_canary.streams.headers import JSON
from model_canary.streams.messages import epoch_ms, from_epoch_ms, unwrap_optional

T = TypeVar("T")

#: Bytes fields whose content type is the record's ``content_type`` field.
PAYLOADS = frozenset({"inputs", "outputs"})
DEFAULT_MAX_BYTES = 1_048_576


def is_json(content_type: str | None) -> bool:
    """Whether a ``content-type`` header names JSON (UTF-8).

    >>> is_json("application/json; charset=utf-8"), is_json(None), is_json("text/plain")
    (True, False, False)
    """
    if not content_type:
        return False
    media, params = media_type(content_type)
    return media == JSON and params.get("charset", "utf-8").lower() in ("utf-8", "utf8")


def decode_record(
    record_type: type[T],
    value: bytes | None,
    content_type: str | None,
    *,
    defaults: Mapping[str, Any] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> T:
    """A record in the form its ``content-type`` header names: JSON, or Avro single-object
    (the header absent or naming the record's Avro type). Raises only
    :class:`~model_canary.streams.errors.DecodeError` subclasses."""
    data = value or b""
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"{len(data)} bytes, over the {max_bytes}-byte limit")
    if is_json(content_type):
        return decode_json(record_type, data, defaults=defaults)
    codec = codec_for(record_type)
    if content_type is None or media_type(content_type)[0] in ("", codec.content_type):
        return codec.decode(data)
    raise UnsupportedContentTypeError(
        f"content type {content_type!r} is not supported for {record_type.__name__}; "
        f"use {JSON} (UTF-8) or {codec.content_type}"
    )


def decode_json(
    record_type: type[T], value: bytes, *, defaults: Mapping[str, Any] | None = None
) -> T:
    """A record from its JSON form (see the module docs)."""
    try:
        doc = json.loads(value.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UndecodableError(f"{record_type.__name__}: not UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRecordError(
            f"{record_type.__name__}: a JSON object is expected, got {type(doc).__name__}"
        )
    return from_json_doc(record_type, doc, defaults=defaults)


def encode_json(record: object) -> bytes:
    """The JSON form of ``record`` as compact UTF-8 bytes."""
    return json.dumps(to_json_doc(record), separators=(",", ":"), allow_nan=False).encode()


def to_json_doc(record: object) -> dict[str, Any]:
    """The JSON form of ``record`` as a dict (see the module docs)."""
    out: dict[str, Any] = {}
    content_type = getattr(record, "content_type", None)
    for f in dataclasses.fields(record):  # type: ignore[arg-type]
        value = getattr(record, f.name)
        if isinstance(value, bytes):
            key, encoded = _bytes_out(f.name, value, content_type)
            out[key] = encoded
        else:
            out[f.name] = _plain(value)
    return out


def from_json_doc(
    record_type: type[T], doc: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None
) -> T:
    """Build ``record_type`` from a JSON object (see the module docs)."""
    kwargs: dict[str, Any] = {}
    for name, convert, required in _fields(record_type):
        if name in doc and doc[name] is not None:
            kwargs[name] = convert(doc[name], name, doc)
        elif f"{name}_base64" in doc:
            kwargs[name] = _from_base64(doc[f"{name}_base64"], name)
        elif defaults is not None and name in defaults:
            kwargs[name] = defaults[name]
        elif name in doc and not required:
            kwargs[name] = None
        elif required:
            raise InvalidRecordError(f"{record_type.__name__}: missing field {name!r}")
    try:
        return record_type(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InvalidRecordError(f"{record_type.__name__}: {exc}") from None


# --- field conversion -------------------------------------------------------------------------

Convert = Callable[[Any, str, Mapping[str, Any]], Any]


_FIELDS: dict[type, tuple[tuple[str, Convert, bool], ...]] = {}


def _fields(record_type: type) -> tuple[tuple[str, Convert, bool], ...]:
    """(name, JSON value -> field value, required) per field, worked out once per type."""
    cached = _FIELDS.get(record_type)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(record_type)
    out = []
    for f in dataclasses.fields(record_type):
        hint, optional = unwrap_optional(hints[f.name])
        has_default = (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        out.append((f.name, _converter(hint, f.name), not (optional or has_default)))
    _FIELDS[record_type] = tuple(out)
    return _FIELDS[record_type]


def _converter(hint: Any, name: str) -> Convert:
    if hint is bytes:
        return _bytes_in
    if hint is datetime:
        return lambda v, n, _d: _time(v, n)
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        enum = hint
        return lambda v, n, _d: _enum(enum, v, n)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        nested = hint
        return lambda v, n, _d: from_json_doc(nested, _object(v, n))
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = _converter(typing.get_args(hint)[0], name)
        return lambda v, n, d: tuple(item(x, n, d) for x in _array(v, n))
    if origin in (Mapping, dict) or hint is Mapping:
        args = typing.get_args(hint)
        value_kind = args[1] if len(args) == 2 and args[1] in (str, int, float, bool) else str
        return lambda v, n, _d: {str(k): _typed(x, value_kind, n) for k, x in _object(v, n).items()}
    if hint in (str, int, float, bool):
        kind = hint
        return lambda v, n, _d: _typed(v, kind, n)
    raise RecordTypeError(f"no JSON form for field {name!r} of type {hint!r}")  # pragma: no cover


_NON_FINITE_TEXT = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}
_NON_FINITE = {text: float(spelled) for spelled, text in _NON_FINITE_TEXT.items()}


def _typed(value: Any, kind: type, name: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidRecordError(
            f"field {name!r} must be a {_json_kind(kind)}, got {type(value).__name__}"
        )
    return value


def _json_kind(kind: type) -> str:
    return {str: "string", int: "whole number", float: "number", bool: "boolean"}.get(
        kind, kind.__name__
    )


def _time(value: Any, name: str) -> datetime:
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return from_epoch_ms(value)
        if isinstance(value, str):
            when = datetime.fromisoformat(value)
            if when.tzinfo is None:
                from datetime import UTC

                when = when.replace(tzinfo=UTC)
            return from_epoch_ms(epoch_ms(when))
    except (ValueError, OverflowError) as exc:
        raise InvalidRecordError(f"field {name!r} is out of range or malformed: {exc}") from None
    raise InvalidRecordError(
        f"field {name!r} must be epoch milliseconds or an ISO-8601 string, "
        f"got {type(value).__name__}"
    )


def _enum(enum: type[StrEnum], value: Any, name: str) -> StrEnum:
    text = _typed(value, str, name)
    for candidate in (text, text.replace("-", "_")):
        try:
            return enum(candidate)
        except ValueError:
            continue
    allowed = ", ".join(m.value for m in enum)
    raise InvalidRecordError(f"field {name!r} must be one of {allowed}; got {text!r}")


def _bytes_in(value: Any, name: str, doc: Mapping[str, Any]) -> bytes:
    if isinstance(value, str) and not (name in PAYLOADS and _declares_json(doc)):
        return value.encode("utf-8")
    if name in PAYLOADS and isinstance(value, dict | list | str | int | float | bool):
        try:
            return canonical_json(value)
        except (ValueError, RecursionError) as exc:
            raise InvalidRecordError(f"field {name!r} cannot be stored: {exc}") from None
    raise InvalidRecordError(f"field {name!r} must be a string, got {type(value).__name__}")


def _declares_json(doc: Mapping[str, Any]) -> bool:
    content_type = doc.get("content_type")
    return content_type is None or (isinstance(content_type, str) and is_json(content_type))


def _from_base64(value: Any, name: str) -> bytes:
    try:
        return base64.b64decode(_typed(value, str, f"{name}_base64"), validate=True)
    except ValueError:
        raise InvalidRecordError(f"field '{name}_base64' is not base64") from None


def _array(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRecordError(f"field {name!r} must be an array, got {type(value).__name__}")
    return value


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRecordError(f"field {name!r} must be an object, got {type(value).__name__}")
    return value


def _no_constant(name: str) -> Any:
    raise UndecodableError(f"{name} is not valid JSON")


# --- encoding ---------------------------------------------------------------------------------


def _bytes_out(name: str, value: bytes, content_type: str | None) -> tuple[str, Any]:
    if name in PAYLOADS and is_json(content_type or JSON):
        try:
            return name, json.loads(value, parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            # Says JSON but is not: kept exact, a string would read back as a JSON string.
            return f"{name}_base64", base64.b64encode(value).decode()
    try:
        return name, value.decode("utf-8")
    except UnicodeDecodeError:
        return f"{name}_base64", base64.b64encode(value).decode()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return epoch_ms(value)
    if isinstance(value, StrEnum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json_doc(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):  # no JSON number for it
        return _NON_FINITE_TEXT[str(value)]
    return value
