"""Each record type's compiled checker (what ``Record.__post_init__`` runs) against the generic
rule-by-rule checks: on records with any field spoiled (an empty identity, an enum's text or
an unknown value, a naive or missing time, basis points out of range), both convert the same
fields and refuse with the same error."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_canary.streams.messages import RECORD_TYPES, Header, OffsetRange, Record
from model_canary.streams.record_base import _check_generic, _checker, _rules
from tests.unit.record_strategies import record_strategy

TYPES = pytest.mark.parametrize(
    "cls", [*RECORD_TYPES, OffsetRange, Header], ids=lambda c: c.__name__
)

SPOILS: dict[str, st.SearchStrategy[Any]] = {
    "identity": st.sampled_from(["", "x"]),
    "enum": st.text(max_size=10) | st.sampled_from(["canary", "served", "HOLD", "PROGRESSING"]),
    "time": st.sampled_from([datetime(2026, 1, 1), 0, None]),  # naive on purpose
    "bp": st.sampled_from([-1, 0, 5000, 10_000, 10_001])
    | st.none()
    | st.lists(st.sampled_from([-1, 0, 10_000, 10_001]), max_size=3).map(tuple),
}


def _unchecked(record: Record, changes: dict[str, Any]) -> Record:
    """A copy of ``record`` with ``changes``, built without running its checks."""
    copy = object.__new__(type(record))
    for f in dataclasses.fields(record):  # type: ignore[arg-type]
        object.__setattr__(copy, f.name, changes.get(f.name, getattr(record, f.name)))
    return copy


def _outcome(check: Any, record: Record) -> tuple[Any, ...]:
    try:
        check(record)
    except Exception as exc:  # any error: both must raise the same
        return ("error", type(exc), str(exc))
    fields = dataclasses.fields(record)  # type: ignore[arg-type]
    return ("ok", [(type(getattr(record, f.name)), getattr(record, f.name)) for f in fields])


@TYPES
@given(data=st.data())
def test_the_compiled_checker_is_the_generic_checks(cls: type[Record], data: st.DataObject) -> None:
    record = data.draw(record_strategy(cls)) if cls in RECORD_TYPES else _example(cls)
    rules = _rules(cls)
    spoilable = [(name, "identity") for name in cls.IDENTITY]
    spoilable += [(name, "enum") for name, _ in rules.enums]
    spoilable += [(name, "time") for name in rules.times]
    spoilable += [(name, "bp") for name in rules.bps]
    changes: dict[str, Any] = {}
    for name, kind in spoilable:
        if data.draw(st.booleans()):
            changes[name] = data.draw(SPOILS[kind])
    compiled, generic = _unchecked(record, changes), _unchecked(record, changes)
    assert _outcome(_checker(cls), compiled) == _outcome(_check_generic, generic)


def _example(cls: type[Record]) -> Record:
    if cls is OffsetRange:
        return OffsetRange(topic="t", partition=0, first=0, last=1)
    return Header(key="k", value=b"v")
