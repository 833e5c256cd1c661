"""Evidence on the wire: records alone (every release's format) and evidence sets (one
message per transaction and model, ``CANARY_EVIDENCE_FORMAT=sets``) read the same."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.schemas import load_schema
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.errors import ConfigError, DecodeError, RecordValidationError
from model_canary.streams.evidence.wire import decode_evidence, encode_evidence, evidence_sets
from model_canary.streams.messages import Evidence, EvidenceSet
from model_canary.streams.settings import Settings
from tests.unit.record_strategies import record_strategy

OLD = Path(__file__).parent / "data" / "upgrade-snapshot-bf7afba.json"


def test_a_set_s_records_have_the_evidence_record_s_own_schema() -> None:
    """The set's items are ``evidence.avsc`` itself: a field added to the record is in the
    set too (the two files cannot drift apart)."""
    items = load_schema("evidence_set")["fields"][1]["type"]["items"]
    assert items == load_schema("evidence")


@settings(max_examples=40, deadline=None)
@given(st.lists(record_strategy(Evidence), min_size=1, max_size=6))
def test_sets_and_records_alone_carry_the_same_records(records: list[Evidence]) -> None:
    alone = [r for _k, value in encode_evidence(records, sets=False) for r in _read(value, False)]
    sets = encode_evidence(records, sets=True)
    together = [r for _k, value in sets for r in _read(value, True)]
    assert sorted(alone, key=repr) == sorted(together, key=repr) == sorted(records, key=repr)
    assert len(sets) == len({ev.model for ev in records}), "one set per model"
    for key, value in sets:
        assert {ev.model.encode() for ev in decode_evidence(value)[0]} == {key}


def _read(value: bytes, is_set: bool) -> tuple[Evidence, ...]:
    records, was_set = decode_evidence(value)
    assert was_set is is_set
    return records


def test_records_of_an_older_release_are_still_read() -> None:
    """Evidence records as release bf7afba wrote them (schema version 1) read as before."""
    doc = json.loads(OLD.read_text())
    for raw in doc["records"]:
        data = base64.b64decode(raw)
        records, was_set = decode_evidence(data)
        assert not was_set and records == (codec_for(Evidence).decode(data),)
        assert records[0].schema_version == 1


def test_a_set_is_one_model_and_not_empty() -> None:
    ev = codec_for(Evidence).decode(base64.b64decode(json.loads(OLD.read_text())["records"][0]))
    with pytest.raises(RecordValidationError):
        EvidenceSet(records=())
    assert [s.model for s in evidence_sets([ev, ev])] == [ev.model]
    with pytest.raises(DecodeError):
        decode_evidence(b"not avro")


def test_the_format_is_a_setting() -> None:
    assert Settings().evidence_sets  # the default since session 24
    assert Settings.from_env({"CANARY_EVIDENCE_FORMAT": "sets"}).evidence_sets
    assert not Settings.from_env({"CANARY_EVIDENCE_FORMAT": "records"}).evidence_sets
    with pytest.raises(ConfigError):
        Settings(evidence_format="both")
