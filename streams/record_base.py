"""The base of every record: time helpers, basis-point bounds, and the checks each record runs
on construction (identity fields set, enum values known, aware timestamps, basis points in
range).

>>> epoch_ms(from_epoch_ms(1_700_000_000_123))
1700000000123
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import UnionType
from typing import Any, ClassVar

from model_canary.streams.errors import RecordValidationError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_BP = 10_000
INT32_MAX = 2**31 - 1
_MS = timedelta(milliseconds=1)


def from_epoch_ms(ms: int) -> datetime:
    """Milliseconds since the epoch -> aware UTC datetime (``OverflowError`` if out of range)."""
    return EPOCH + ms * _MS


def epoch_ms(when: datetime) -> int:
    """Aware datetime -> milliseconds since the epoch, rounded down like the Avro encoder."""
    return (when - EPOCH) // _MS


def utc_now() -> datetime:
    """The current time in UTC, truncated to milliseconds (so it survives an Avro round trip)."""
    return from_epoch_ms(epoch_ms(datetime.now(UTC)))


class Record:
    """Base of every record: validates and normalises the fields after construction."""

    __slots__ = ()
    #: Fields that identify the record; they have no Avro default and must not be empty.
    IDENTITY: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        _check(self)


# --- validation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rules:
    enums: tuple[tuple[str, type[StrEnum]], ...]
    times: tuple[str, ...]
    bps: tuple[str, ...]


_RULES: dict[type, _Rules] = {}


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; any other hint -> ``(hint, False)``."""
    if typing.get_origin(hint) in (typing.Union, UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _rules(cls: type) -> _Rules:
    rules = _RULES.get(cls)
    if rules is None:
        hints = typing.get_type_hints(cls)
        enums: list[tuple[str, type[StrEnum]]] = []
        times: list[str] = []
        for f in dataclasses.fields(cls):
            hint, _ = unwrap_optional(hints[f.name])
            if isinstance(hint, type) and issubclass(hint, StrEnum):
                enums.append((f.name, hint))
            elif hint is datetime:
                times.append(f.name)
        bps = tuple(f.name for f in dataclasses.fields(cls) if f.name.endswith("_bp"))
        rules = _RULES[cls] = _Rules(tuple(enums), tuple(times), bps)
    return rules


def _check(record: Record) -> None:
    """Check and normalise ``record`` (see :class:`Record`) with its type's checker, compiled
    once (:func:`_checker`): the same conversions and errors as :func:`_check_generic`."""
    check = _CHECKERS.get(type(record))
    if check is None:
        check = _checker(type(record))
    check(record)


_CHECKERS: dict[type, Callable[[Any], None]] = {}


def _checker(cls: type[Record]) -> Callable[[Any], None]:
    """:func:`_check_generic` for ``cls`` as straight-line code, built once from its rules:
    the same checks in the same order (identities, enums, times, basis points)."""
    rules = _rules(cls)
    ns: dict[str, Any] = {
        "_empty": _empty,
        "_to_enum": _to_enum,
        "_bad_time": _bad_time,
        "_bad_bp": _bad_bp,
        "_cls": cls,
        "_set": object.__setattr__,
        "datetime": datetime,
        "MAX_BP": MAX_BP,
    }
    lines = ["def check(record):"]
    for name in cls.IDENTITY:
        lines += [f"    if record.{name} == '':", f"        _empty(_cls, {name!r})"]
    for i, (name, enum) in enumerate(rules.enums):
        # An exact str is looked up among the members' values (what the enum's own call
        # does first); anything else, or a text no member has, goes through the enum.
        ns[f"_E{i}"], ns[f"_M{i}"] = enum, {m.value: m for m in enum}
        lines += [
            f"    value = record.{name}",
            f"    if value is not None and type(value) is not _E{i}:",
            f"        member = _M{i}.get(value) if type(value) is str else None",
            "        if member is None:",
            f"            _to_enum(record, {name!r}, _E{i}, value)",
            "        else:",
            f"            _set(record, {name!r}, member)",
        ]
    for name in rules.times:
        lines += [
            f"    value = record.{name}",
            "    if not isinstance(value, datetime) or value.tzinfo is None:",
            f"        _bad_time(_cls, {name!r})",
        ]
    for name in rules.bps:
        lines += [
            f"    value = record.{name}",
            "    for bp in value if isinstance(value, tuple) else (value,):",
            "        if bp is not None and not 0 <= bp <= MAX_BP:",
            f"            _bad_bp(_cls, {name!r}, bp)",
        ]
    lines.append("    return None")
    exec("\n".join(lines), ns)  # the code built above from the type's field names
    check: Callable[[Any], None] = ns["check"]
    _CHECKERS[cls] = check
    return check


def _check_generic(record: Record) -> None:
    """The checks of :class:`Record`, rule by rule (the reference :func:`_checker` is held to)."""
    cls = type(record)
    rules = _rules(cls)
    for name in cls.IDENTITY:
        if getattr(record, name) == "":
            _empty(cls, name)
    for name, enum in rules.enums:
        value = getattr(record, name)
        if value is not None and type(value) is not enum:
            _to_enum(record, name, enum, value)
    for name in rules.times:
        value = getattr(record, name)
        if not isinstance(value, datetime) or value.tzinfo is None:
            _bad_time(cls, name)
    for name in rules.bps:
        value = getattr(record, name)
        for bp in value if isinstance(value, tuple) else (value,):
            if bp is not None and not 0 <= bp <= MAX_BP:
                _bad_bp(cls, name, bp)


def _empty(cls: type, name: str) -> None:
    raise RecordValidationError(f"{cls.__name__}.{name} must not be empty")


def _to_enum(record: Record, name: str, enum: type[StrEnum], value: Any) -> None:
    """Set field ``name`` to the member of ``enum`` that ``value`` names."""
    try:
        object.__setattr__(record, name, enum(value))
    except ValueError:  # the enum's own
        allowed = ", ".join(m.value for m in enum)
        raise RecordValidationError(
            f"{type(record).__name__}.{name} must be one of {allowed}; got {value!r}"
        ) from None


def _bad_time(cls: type, name: str) -> None:
    raise RecordValidationError(f"{cls.__name__}.{name} must be a timezone-aware datetime")


def _bad_bp(cls: type, name: str, bp: object) -> None:
    raise RecordValidationError(f"{cls.__name__}.{name} must be within 0..{MAX_BP}; got {bp}")
