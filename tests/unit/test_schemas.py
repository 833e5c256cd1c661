"""The .avsc files parse, follow the project's conventions and match the dataclasses."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from enum import StrEnum
from typing import Any

import fastavro
import pytest

from model_canary.schemas import load_schema, schema_dir, schema_names
from model_canary.streams.codec.avro import fingerprint, schema_file
from model_canary.streams.errors import ConfigError
from model_canary.streams.messages import RECORD_TYPES, Record, unwrap_optional

NAMES = [schema_file(t) for t in RECORD_TYPES]


def _records(schema: dict[str, Any], cls: type[Any]) -> list[tuple[dict[str, Any], type[Any]]]:
    """The record schema and every nested record schema, each with its dataclass."""
    out = [(schema, cls)]
    hints = typing.get_type_hints(cls)
    for f in schema["fields"]:
        t = f["type"]
        if isinstance(t, dict) and t["type"] == "array" and isinstance(t["items"], dict):
            out += _records(t["items"], typing.get_args(hints[f["name"]])[0])
    return out


def test_one_schema_per_record_type() -> None:
    assert sorted(NAMES) == schema_names()
    assert NAMES[0] == "inference_request"
    assert (schema_dir() / "inference_request.avsc").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_schema_parses_and_follows_conventions(name: str) -> None:
    schema = load_schema(name)
    fastavro.parse_schema(schema)
    assert schema["namespace"] == "dev.modelcanary"
    assert schema_file(type(schema["name"], (), {})) == name
    for f in schema["fields"]:
        assert f.get("doc"), f"{name}.{f['name']} has no doc"
        t = f["type"]
        if isinstance(t, list):
            assert t[0] == "null" and len(t) == 2 and f["default"] is None, f["name"]


@pytest.mark.parametrize("cls", RECORD_TYPES, ids=lambda c: c.__name__)
def test_schema_fields_match_the_dataclass(cls: type[Record]) -> None:
    record_type: type[Any]
    for schema, record_type in _records(load_schema(schema_file(cls)), cls):
        assert schema["name"] == record_type.__name__
        fields = dataclasses.fields(record_type)
        assert [f["name"] for f in schema["fields"]] == [f.name for f in fields]
        hints = typing.get_type_hints(record_type)
        for avro, dc in zip(schema["fields"], fields, strict=True):
            hint, optional = unwrap_optional(hints[dc.name])
            assert optional == isinstance(avro["type"], list), dc.name
            is_time = isinstance(avro["type"], dict) and avro["type"].get("logicalType")
            assert (hint is datetime) == bool(is_time), dc.name
            if is_time:
                assert avro["type"] == {"type": "long", "logicalType": "timestamp-millis"}
            if "default" not in avro:
                # Header.key is required but may be empty: Kafka allows empty header names.
                # A refusal answers a request before its model or version is known.
                exempt = (record_type.__name__, dc.name) in {
                    ("Header", "key"),
                    ("InferenceResult", "model"),
                    ("InferenceResult", "version"),
                }
                assert dc.name in record_type.IDENTITY or _is_enum(hint) or _is_int(avro) or exempt
                assert _required(dc), f"{dc.name} has no Avro default but a dataclass one"
            elif not _required(dc):
                assert _avro_default(dc) == avro["default"], dc.name


def test_identity_fields_have_no_default() -> None:
    for cls in RECORD_TYPES:
        schema = load_schema(schema_file(cls))
        by_name = {f["name"]: f for f in schema["fields"]}
        for name in cls.IDENTITY:
            assert "default" not in by_name[name], f"{cls.__name__}.{name}"


def test_fingerprints_are_distinct_and_stable() -> None:
    fps = {fingerprint(load_schema(n)) for n in NAMES}
    assert len(fps) == len(NAMES)
    assert all(len(fp) == 8 for fp in fps)
    # A doc change does not change the Parsing Canonical Form, hence the fingerprint.
    schema = load_schema("feedback")
    schema["doc"] = "changed"
    assert fingerprint(schema) == fingerprint(load_schema("feedback"))


def test_unknown_schema_name() -> None:
    with pytest.raises(ConfigError, match="no schema named 'nope'"):
        load_schema("nope")
    with pytest.raises(ConfigError):
        load_schema("../pyproject")


def _is_enum(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, StrEnum)


def _is_int(avro: dict[str, Any]) -> bool:
    return avro["type"] in ("int", "long")


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _avro_default(f: dataclasses.Field[Any]) -> Any:
    value = f.default
    if value is dataclasses.MISSING:
        value = f.default_factory()  # type: ignore[operator]
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, tuple):
        return list(value)
    return value
