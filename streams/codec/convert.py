"""Record dataclass <-> the plain dicts fastavro reads and writes.

Only nested records (and tuples of them) need converting; every other value (str, bytes, int,
float, bool, aware ``datetime``, ``StrEnum``, tuples of scalars, maps) is passed as is. The
per-type plan is worked out once from the type hints and cached.

>>> from model_canary.streams.messages import Decision, EPOCH, MetricEvidence
>>> d = Decision(decision_id="d1", model="iris", rollout_id="ro1", outcome="HOLD",
...              decided_at=EPOCH, evidence=(MetricEvidence(metric="error_rate"),))
>>> to_avro(d)["evidence"][0]["metric"]
'error_rate'
>>> from_avro(Decision, to_avro(d)) == d
True
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from model_canary.streams.messages import unwrap_optional

T = TypeVar("T")
Convert = Callable[[Any], Any]
# (field name, dataclass -> Avro value or None, Avro value -> dataclass value or None)
_Plan = tuple[tuple[str, Convert | None, Convert | None], ...]

_PLANS: dict[type, _Plan] = {}


def to_avro(record: object) -> dict[str, Any]:
    """The Avro dict of a record dataclass instance."""
    out: dict[str, Any] = {}
    for name, encode, _ in plan(type(record)):
        value = getattr(record, name)
        out[name] = value if encode is None or value is None else encode(value)
    return out


def from_avro(record_type: type[T], data: Mapping[str, Any]) -> T:
    """Build ``record_type`` from an Avro dict; fields absent from ``data`` keep their dataclass
    default (``TypeError`` if they have none), keys unknown to the dataclass are ignored.

    Runs the type's reader compiled once (:func:`reader`): the same record, or the same
    error, as :func:`from_avro_generic`."""
    read = _READERS.get(record_type)
    if read is None:
        read = reader(record_type)
    return read(data)  # type: ignore[no-any-return]


def from_avro_generic(record_type: type[T], data: Mapping[str, Any]) -> T:
    """:func:`from_avro` worked out field by field from the type's plan (the reference the
    compiled readers are held to, and their path for a datum that lacks a field)."""
    plain, nested = _split(record_type)
    try:  # every field there (a datum read with the record's own schema): one pass
        kwargs = {name: data[name] for name in plain}
    except KeyError:
        kwargs = {name: data[name] for name in plain if name in data}
    for name, decode in nested:
        if name in data:
            value = data[name]
            kwargs[name] = value if value is None else decode(value)
    return record_type(**kwargs)


_READERS: dict[type, Convert] = {}


def reader(record_type: type) -> Convert:
    """The Avro dict -> ``record_type`` function, compiled once per type: it reads every field
    by name and builds the record without the generic per-field loop. A datum lacking a field
    (a writer without it and a reader schema that did not fill it in) goes the generic way.

    A frozen slots dataclass whose ``__init__`` takes exactly its fields (every record type)
    is built as its ``__init__`` would build it, minus the per-field ``object.__setattr__``
    (each slot is set through its descriptor), then ``__post_init__`` checks it: the same
    record, or the same error."""
    found = _READERS.get(record_type)
    if found is not None:
        return found
    names = [name for name, _, _ in plan(record_type)]
    decoders = dict(_split(record_type)[1])
    ns: dict[str, Any] = {"_cls": record_type, "_new": object.__new__}
    ns["_generic"] = lambda data: from_avro_generic(record_type, data)
    lines = ["def read(data):", "    try:"]
    lines += [f"        v{i} = data[{name!r}]" for i, name in enumerate(names)]
    lines += ["    except KeyError:", "        return _generic(data)"]
    values = []
    for i, name in enumerate(names):
        decode = decoders.get(name)
        if decode is None:
            values.append(f"v{i}")
        else:
            ns[f"_d{i}"] = _nested_reader(record_type, name, decode)
            values.append(f"(None if v{i} is None else _d{i}(v{i}))")
    if _settable(record_type, names):
        lines.append("    self = _new(_cls)")
        for i, (name, value) in enumerate(zip(names, values, strict=True)):
            ns[f"_s{i}"] = record_type.__dict__[name].__set__
            lines.append(f"    _s{i}(self, {value})")
        if hasattr(record_type, "__post_init__"):
            lines.append("    self.__post_init__()")
        lines.append("    return self")
    else:
        args = ", ".join(f"{name}={value}" for name, value in zip(names, values, strict=True))
        lines.append(f"    return _cls({args})")
    exec("\n".join(lines), ns)  # the code built above from the type's field names
    read: Convert = ns["read"]
    _READERS[record_type] = read
    return read


def _nested_reader(record_type: type, name: str, decode: Convert) -> Convert:
    """The compiled decoder of a nested field of ``record_type``: a record, or a tuple of them
    (fields of other types keep their plan's decoder, e.g. ``tuple``)."""
    hint, _ = unwrap_optional(typing.get_type_hints(record_type)[name])
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return reader(hint)
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)  # tuple[A, ...] only, as _converters reads it
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            read_item = reader(item)
            return lambda values: tuple([read_item(v) for v in values])
    return decode


def _settable(record_type: type, names: list[str]) -> bool:
    """Whether ``record_type`` is a slots dataclass whose ``__init__`` only sets its fields
    (each a slot, each a parameter), so a reader may set the slots itself."""
    params = getattr(record_type, "__dataclass_params__", None)
    init = record_type.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    if params is None or not params.init or init is None or code is None:
        return False
    if code.co_filename != "<string>":
        return False  # not the __init__ dataclasses wrote
    slots = set(getattr(record_type, "__slots__", ()))
    parameters = [p for p in inspect.signature(init).parameters if p != "self"]
    return sorted(parameters) == sorted(names) and slots.issuperset(names)


_SPLITS: dict[type, tuple[tuple[str, ...], tuple[tuple[str, Convert], ...]]] = {}


def _split(record_type: type) -> tuple[tuple[str, ...], tuple[tuple[str, Convert], ...]]:
    """The names of ``record_type``'s fields passed as they are, and the others with their
    decoder (:func:`plan`, cached)."""
    split = _SPLITS.get(record_type)
    if split is None:
        entries = plan(record_type)
        split = _SPLITS[record_type] = (
            tuple(name for name, _, decode in entries if decode is None),
            tuple((name, decode) for name, _, decode in entries if decode is not None),
        )
    return split


def plan(record_type: type) -> _Plan:
    """The cached conversion plan of a dataclass type, one entry per field in order."""
    cached = _PLANS.get(record_type)
    if cached is None:
        hints = typing.get_type_hints(record_type)
        cached = tuple(
            (f.name, *_converters(hints[f.name])) for f in dataclasses.fields(record_type)
        )
        _PLANS[record_type] = cached
    return cached


def _converters(hint: Any) -> tuple[Convert | None, Convert | None]:
    hint, _ = unwrap_optional(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        nested = hint
        return to_avro, lambda value: from_avro_generic(nested, value)
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            nested_item = item
            return (
                lambda values: [to_avro(v) for v in values],
                lambda values: tuple(from_avro_generic(nested_item, v) for v in values),
            )
        return None, tuple
    return None, None
