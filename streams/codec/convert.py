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
    default (``TypeError`` if they have none), keys unknown to the dataclass are ignored."""
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
        return to_avro, lambda value: from_avro(nested, value)
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            nested_item = item
            return (
                lambda values: [to_avro(v) for v in values],
                lambda values: tuple(from_avro(nested_item, v) for v in values),
            )
        return None, tuple
    return None, None
