"""A compiled Avro binary writer for the project's record dataclasses.

``fastavro.schemaless_writer`` resolves every union branch by validating the value against
each candidate, converts logical types through generic hooks and walks the schema dict for
every record, for every :class:`~model_canary.streams.messages.InferenceResult` a model
worker writes (one per request). :func:`compile_writer` turns a parsed record schema and its
dataclass into one function of straight-line code, once (as :mod:`dataclasses` builds
``__init__``), about three times faster, writing the same bytes (the tests compare it with
fastavro for every project schema).

It covers what the project's schemas use: ``null``, ``boolean``, ``int``, ``long``,
``float``, ``double``, ``bytes``, ``string``, ``timestamp-millis`` longs, ``["null", T]``
unions, maps, arrays and nested records whose field names are the dataclass's. Anything else
makes :func:`compile_writer` return None (the codec then writes with fastavro). A value the
compiled writer does not expect (a wrong type, an int out of range, a naive datetime) raises
:class:`Unwritable`; the codec then writes that record with fastavro, so what is written (or
the error raised) is fastavro's in every case.

>>> from model_canary.streams.messages import EPOCH, Feedback
>>> from model_canary.streams.codec.avro import codec_for
>>> codec = codec_for(Feedback)
>>> write = compile_writer(codec.schema, Feedback)
>>> fb = Feedback(request_id="r1", model="iris", label="setosa", observed_at=EPOCH)
>>> body = bytearray()
>>> write(body, fb)
>>> bytes(body) == codec.encode(fb)[10:]
True
"""

from __future__ import annotations

import dataclasses
import keyword
import struct
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from model_canary.streams.errors import CanaryError

#: ``write(buffer, value)``: append the Avro binary encoding of ``value`` to ``buffer``.
Write = Callable[[bytearray, Any], None]
#: ``write_values(buffer, *values)``: append the Avro binary encoding of a record whose field
#: values, in schema order, are ``values``.
WriteValues = Callable[..., None]

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_pack_double = struct.Struct("<d").pack
_pack_float = struct.Struct("<f").pack


class Unwritable(CanaryError):
    """A value the compiled writer does not write itself (the codec hands it to fastavro).

    Never leaves the codec: it is caught there, and fastavro writes or refuses the value."""


def _varint(buf: bytearray, n: int) -> None:
    """Append the zig-zag varint of a long already checked to be in range."""
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        buf.append((n & 0x7F) | 0x80)
        n >>= 7
    buf.append(n)


def _write_long(buf: bytearray, v: Any) -> None:
    if type(v) is not int or not _LONG_MIN <= v <= _LONG_MAX:
        raise Unwritable(v)
    _varint(buf, v)


def _write_int(buf: bytearray, v: Any) -> None:
    if type(v) is not int or not _INT_MIN <= v <= _INT_MAX:
        raise Unwritable(v)
    _varint(buf, v)


def _write_string(buf: bytearray, v: Any) -> None:
    if not isinstance(v, str):
        raise Unwritable(v)
    raw = v.encode()
    _varint(buf, len(raw))
    buf += raw


def _write_bytes(buf: bytearray, v: Any) -> None:
    if not isinstance(v, bytes | bytearray):
        raise Unwritable(v)
    _varint(buf, len(v))
    buf += v


def _write_boolean(buf: bytearray, v: Any) -> None:
    if type(v) is not bool:
        raise Unwritable(v)
    buf.append(1 if v else 0)


def _write_double(buf: bytearray, v: Any) -> None:
    if type(v) is not float and type(v) is not int:
        raise Unwritable(v)
    buf += _pack_double(v)


def _write_float(buf: bytearray, v: Any) -> None:
    if type(v) is not float and type(v) is not int:
        raise Unwritable(v)
    buf += _pack_float(v)


def _write_null(buf: bytearray, v: Any) -> None:
    if v is not None:
        raise Unwritable(v)


def _write_timestamp_millis(buf: bytearray, v: Any) -> None:
    # fastavro's conversion of an aware datetime, to the same millisecond.
    if type(v) is not datetime or v.tzinfo is None:
        raise Unwritable(v)
    delta = v - _EPOCH
    ms = (delta.days * 86400 + delta.seconds) * 1000 + int(delta.microseconds / 1000)
    if not _LONG_MIN <= ms <= _LONG_MAX:
        raise Unwritable(v)
    _varint(buf, ms)


_PRIMITIVES: Mapping[str, Write] = {
    "null": _write_null,
    "boolean": _write_boolean,
    "int": _write_int,
    "long": _write_long,
    "float": _write_float,
    "double": _write_double,
    "bytes": _write_bytes,
    "string": _write_string,
}


def compile_writer(schema: Any, record_type: type | None = None) -> Write | None:
    """The writer of a parsed Avro ``schema`` (a record schema with ``record_type``, the
    dataclass whose instances it writes); None when the schema uses something this writer
    does not cover (see the module docstring)."""
    try:
        return _compile(schema, record_type)
    except _NotCovered:
        return None


def compile_writers(schema: dict[str, Any], record_type: type) -> tuple[Write, WriteValues] | None:
    """A record schema's writer (as :func:`compile_writer`) and the function it calls with the
    record's field values, in schema order: ``write_values(buffer, *values)`` writes the bytes
    the record with those values is written as, for a caller that has the values and no record
    (a worker's answer); None when the schema is not covered.

    >>> from model_canary.streams.messages import EPOCH, Feedback
    >>> from model_canary.streams.codec.avro import codec_for
    >>> write, write_values = compile_writers(codec_for(Feedback).schema, Feedback)
    >>> fb = Feedback(request_id="r1", model="iris", label="setosa", observed_at=EPOCH)
    >>> a, b = bytearray(), bytearray()
    >>> write(a, fb); write_values(b, "r1", "iris", "setosa", EPOCH, None, None, {})
    >>> a == b
    True
    """
    if schema.get("type") != "record":
        return None
    try:
        return _record_writers(schema, record_type)
    except _NotCovered:
        return None


class _NotCovered(CanaryError):
    """A schema the compiler does not cover (caught in compile_writer: fastavro writes it)."""


def _compile(schema: Any, record_type: type | None) -> Write:
    if isinstance(schema, str):
        write = _PRIMITIVES.get(schema)
        if write is None:
            raise _NotCovered(schema)  # a named type referenced by name
        return write
    if isinstance(schema, list):
        return _union(schema)
    if not isinstance(schema, dict):
        raise _NotCovered(schema)
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical is not None:
        if kind == "long" and logical == "timestamp-millis":
            return _write_timestamp_millis
        raise _NotCovered(logical)
    if kind == "record":
        return _record(schema, record_type)
    if kind == "map":
        return _map(_compile(schema["values"], None))
    if kind == "array":
        return _array(_compile(schema["items"], record_type))
    if isinstance(kind, str) and kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    raise _NotCovered(kind)


def _union(branches: list[Any]) -> Write:
    if len(branches) != 2 or "null" not in branches:
        raise _NotCovered(branches)
    null_index = branches.index("null")
    other = branches[1 - null_index]
    if isinstance(other, dict) and other.get("type") in ("record", "map", "array"):
        raise _NotCovered(other)
    write_other = _compile(other, None)
    tag_null = bytes([0 if null_index == 0 else 2])  # zig-zag of the branch index
    tag_other = bytes([2 if null_index == 0 else 0])

    def write(buf: bytearray, v: Any) -> None:
        if v is None:
            buf += tag_null
        else:
            buf += tag_other
            write_other(buf, v)

    return write


def _map(write_value: Write) -> Write:
    def write(buf: bytearray, v: Any) -> None:
        if not isinstance(v, Mapping):
            raise Unwritable(v)
        if v:
            _varint(buf, len(v))
            for key, value in v.items():
                _write_string(buf, key)
                write_value(buf, value)
        buf.append(0)

    return write


def _array(write_item: Write) -> Write:
    def write(buf: bytearray, v: Any) -> None:
        if not isinstance(v, list | tuple):
            raise Unwritable(v)
        if v:
            _varint(buf, len(v))
            for item in v:
                write_item(buf, item)
        buf.append(0)

    return write


def _record(schema: dict[str, Any], record_type: type | None) -> Write:
    return _record_writers(schema, record_type)[0]


def _record_writers(schema: dict[str, Any], record_type: type | None) -> tuple[Write, WriteValues]:
    """The record's writer and its values writer (see :func:`compile_writers`)."""
    if record_type is None or not dataclasses.is_dataclass(record_type):
        raise _NotCovered(schema.get("name"))
    hints = typing.get_type_hints(record_type)
    names = [f["name"] for f in schema["fields"]]
    if set(names) != {f.name for f in dataclasses.fields(record_type)}:
        raise _NotCovered(schema.get("name"))  # fastavro would use defaults or drop fields
    if not all(name.isidentifier() and not keyword.iskeyword(name) for name in names):
        raise _NotCovered(schema.get("name"))
    # One function of straight-line code per record type (as dataclasses builds __init__),
    # taking the field values in schema order: strings, numbers, booleans and their nullable
    # forms inline, anything else through its compiled writer. The record's writer passes it
    # the record's fields.
    env: dict[str, Any] = {
        "cls": record_type,
        "Unwritable": Unwritable,
        "varint": _varint,
        "pack_double": _pack_double,
        "pack_float": _pack_float,
        "LONG_MIN": _LONG_MIN,
        "LONG_MAX": _LONG_MAX,
        "INT_MIN": _INT_MIN,
        "INT_MAX": _INT_MAX,
        "BYTES": (bytes, bytearray),
    }
    params = ", ".join(f"f_{name}" for name in names)
    lines = [f"def write_values(buf, {params}):"]
    for i, field in enumerate(schema["fields"]):
        name = field["name"]
        lines.append(f"    x = f_{name}")
        inline = _inline(field["type"], "    ")
        if inline is None:
            env[f"op{i}"] = _compile(field["type"], _item_type(hints[name]))
            inline = [f"    op{i}(buf, x)"]
        lines.extend(inline)
    lines += [
        "def write(buf, v):",
        "    if type(v) is not cls:",
        "        raise Unwritable(v)",
        f"    write_values(buf, {', '.join(f'v.{name}' for name in names)})",
    ]
    exec("\n".join(lines), env)  # built from the schema's field names only
    write: Write = env["write"]
    write_values: WriteValues = env["write_values"]
    return write, write_values


def _inline(schema: Any, pad: str) -> list[str] | None:
    """Lines writing ``x`` of ``schema`` into ``buf`` (None: not inlined)."""
    if isinstance(schema, list):
        if len(schema) != 2 or "null" not in schema:
            return None
        null_index = schema.index("null")
        body = _inline(schema[1 - null_index], pad + "    ")
        if body is None:
            return None
        tag_null, tag_other = (0, 2) if null_index == 0 else (2, 0)
        return [
            f"{pad}if x is None:",
            f"{pad}    buf.append({tag_null})",
            f"{pad}else:",
            f"{pad}    buf.append({tag_other})",
            *body,
        ]
    if isinstance(schema, dict) and set(schema) == {"type"}:
        schema = schema["type"]
    if schema in ("string", "bytes"):
        kind, encode = ("str", [f"{pad}x = x.encode()"]) if schema == "string" else ("BYTES", [])
        return [
            f"{pad}if not isinstance(x, {kind}):",
            f"{pad}    raise Unwritable(x)",
            *encode,
            f"{pad}n = len(x)",
            f"{pad}if n < 64:",
            f"{pad}    buf.append(n << 1)",
            f"{pad}else:",
            f"{pad}    varint(buf, n)",
            f"{pad}buf += x",
        ]
    if schema in ("int", "long"):
        lo, hi = ("INT_MIN", "INT_MAX") if schema == "int" else ("LONG_MIN", "LONG_MAX")
        return [
            f"{pad}if type(x) is not int or not {lo} <= x <= {hi}:",
            f"{pad}    raise Unwritable(x)",
            f"{pad}if 0 <= x < 64:",
            f"{pad}    buf.append(x << 1)",
            f"{pad}else:",
            f"{pad}    varint(buf, x)",
        ]
    if schema == "boolean":
        return [
            f"{pad}if x is True:",
            f"{pad}    buf.append(1)",
            f"{pad}elif x is False:",
            f"{pad}    buf.append(0)",
            f"{pad}else:",
            f"{pad}    raise Unwritable(x)",
        ]
    if schema in ("double", "float"):
        pack = "pack_double" if schema == "double" else "pack_float"
        return [
            f"{pad}if type(x) is not float and type(x) is not int:",
            f"{pad}    raise Unwritable(x)",
            f"{pad}buf += {pack}(x)",
        ]
    return None


def _item_type(hint: Any) -> type | None:
    """The dataclass a field holds, directly or as the items of a tuple (else None)."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
            if isinstance(item, type) and dataclasses.is_dataclass(item):
                return item
    return None
