"""The compiled Avro dict -> record readers (:func:`~model_canary.streams.codec.convert.reader`,
what :func:`from_avro` runs) against the generic field-by-field conversion: for every record
type, valid or spoiled data, with fields missing or unknown keys added, both build the same
record (same field values, same types) or raise the same error."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_canary.streams.codec.convert import from_avro, from_avro_generic, to_avro
from model_canary.streams.messages import RECORD_TYPES, Record
from tests.unit.record_strategies import EXAMPLES, raw_datum, record_strategy

TYPES = pytest.mark.parametrize("cls", RECORD_TYPES, ids=lambda c: c.__name__)


def _outcome(build: Any, cls: type[Record], data: dict[str, Any]) -> tuple[Any, ...]:
    """What building ``cls`` from ``data`` gives: the record's repr (field types included:
    a ``StrEnum`` equals its text) and itself, or the error's type and words."""
    try:
        record = build(cls, data)
    except Exception as exc:  # any error: both paths must raise the same
        return ("error", type(exc), str(exc))
    return ("record", type(record), repr(record), record)


def _same(cls: type[Record], data: dict[str, Any]) -> None:
    assert _outcome(from_avro, cls, data) == _outcome(from_avro_generic, cls, data)


def _spoil(data: dict[str, Any], draws: st.DataObject) -> dict[str, Any]:
    """``data`` with some keys dropped, an unknown key added, and nested records spoiled the
    same way."""
    draw = draws.draw
    out = {}
    for key, value in data.items():
        if draw(st.integers(0, 7)) == 0:
            continue  # a field the datum lacks
        if isinstance(value, dict) and draw(st.booleans()):
            value = _spoil(value, draws)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = [_spoil(v, draws) if draw(st.booleans()) else v for v in value]
        out[key] = value
    if draw(st.booleans()):
        out["not_a_field"] = draw(st.integers())
    return out


@TYPES
def test_example_reads_the_same(cls: type[Record]) -> None:
    data = to_avro(EXAMPLES[cls])
    _same(cls, data)
    assert from_avro(cls, data) == EXAMPLES[cls]


@TYPES
@given(data=st.data())
def test_valid_records_read_the_same(cls: type[Record], data: st.DataObject) -> None:
    record = data.draw(record_strategy(cls))
    datum = to_avro(record)
    _same(cls, datum)
    assert from_avro(cls, datum) == record
    _same(cls, _spoil(datum, data))


@TYPES
@given(data=st.data())
def test_any_datum_reads_the_same(cls: type[Record], data: st.DataObject) -> None:
    """Values the schema admits and the record may refuse (empty identities, unknown enum
    values, basis points out of range, timestamps as numbers), fields missing or not."""
    datum = data.draw(raw_datum(cls))
    _same(cls, datum)
    _same(cls, _spoil(datum, data))
