"""Avro single-object encoding of the records in :mod:`model_canary.streams.messages`.

A message is the marker ``C3 01``, the 8-byte CRC-64-AVRO fingerprint of the writer schema's
Parsing Canonical Form (little-endian, as the Avro spec says), then the Avro binary body. The
reader looks the writer schema up in a :class:`SchemaStore` and resolves it against its own
schema, so fields added or removed with a default are read fine in both directions.

>>> from model_canary.streams.messages import EPOCH, Feedback
>>> codec = codec_for(Feedback)
>>> fb = Feedback(request_id="r1", model="iris", label="setosa", observed_at=EPOCH)
>>> data = codec.encode(fb)
>>> data[:2].hex(), codec.decode(data) == fb
('c301', True)
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, to_parsing_canonical_form
from fastavro.schema import fingerprint as _fastavro_fingerprint

from model_canary.schemas import load_schema, schema_dir
from model_canary.streams.codec.avro_compiled import Unwritable, WriteValues, compile_writers
from model_canary.streams.codec.convert import from_avro, plan, to_avro
from model_canary.streams.errors import (
    ConfigError,
    InvalidRecordError,
    RecordTypeError,
    UndecodableError,
    UnknownSchemaError,
)
from model_canary.streams.messages import (
    ControlCommand,
    ControlEvent,
    DeadLetter,
    Decision,
    Evidence,
    EvidenceSet,
    Feedback,
    InferenceRequest,
    InferenceResult,
    MetricEvent,
    Prediction,
    Preflight,
    Record,
    RolloutState,
)

T = TypeVar("T")

MAGIC = b"\xc3\x01"
SCHEMA_DIRS_ENV = "CANARY_SCHEMA_DIRS"
HEADER_SIZE = len(MAGIC) + 8

INFERENCE_REQUEST_CONTENT_TYPE = "application/vnd.modelcanary.inference-request+avro"
INFERENCE_RESULT_CONTENT_TYPE = "application/vnd.modelcanary.inference-result+avro"
METRIC_EVENT_CONTENT_TYPE = "application/vnd.modelcanary.metric-event+avro"
FEEDBACK_CONTENT_TYPE = "application/vnd.modelcanary.feedback+avro"
CONTROL_COMMAND_CONTENT_TYPE = "application/vnd.modelcanary.control-command+avro"
CONTROL_EVENT_CONTENT_TYPE = "application/vnd.modelcanary.control-event+avro"
ROLLOUT_STATE_CONTENT_TYPE = "application/vnd.modelcanary.rollout-state+avro"
DECISION_CONTENT_TYPE = "application/vnd.modelcanary.decision+avro"
DEAD_LETTER_CONTENT_TYPE = "application/vnd.modelcanary.dead-letter+avro"
PREFLIGHT_CONTENT_TYPE = "application/vnd.modelcanary.preflight+avro"
EVIDENCE_CONTENT_TYPE = "application/vnd.modelcanary.evidence+avro"
EVIDENCE_SET_CONTENT_TYPE = "application/vnd.modelcanary.evidence-set+avro"
PREDICTION_CONTENT_TYPE = "application/vnd.modelcanary.prediction+avro"

CONTENT_TYPES: Mapping[type, str] = {
    InferenceRequest: INFERENCE_REQUEST_CONTENT_TYPE,
    InferenceResult: INFERENCE_RESULT_CONTENT_TYPE,
    MetricEvent: METRIC_EVENT_CONTENT_TYPE,
    Feedback: FEEDBACK_CONTENT_TYPE,
    ControlCommand: CONTROL_COMMAND_CONTENT_TYPE,
    ControlEvent: CONTROL_EVENT_CONTENT_TYPE,
    RolloutState: ROLLOUT_STATE_CONTENT_TYPE,
    Decision: DECISION_CONTENT_TYPE,
    DeadLetter: DEAD_LETTER_CONTENT_TYPE,
    Preflight: PREFLIGHT_CONTENT_TYPE,
    Evidence: EVIDENCE_CONTENT_TYPE,
    EvidenceSet: EVIDENCE_SET_CONTENT_TYPE,
    Prediction: PREDICTION_CONTENT_TYPE,
}
"""The ``content-type`` header value of each record type."""


def schema_file(record_type: type) -> str:
    """``InferenceRequest`` -> ``inference_request`` (the name of its ``.avsc`` file)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", record_type.__name__).lower()


def fingerprint(schema: Mapping[str, Any]) -> bytes:
    """The 8 fingerprint bytes a single-object message of ``schema`` starts with (after the
    marker): CRC-64-AVRO of the Parsing Canonical Form, little-endian."""
    return _fingerprint(_parse(schema))


def _parse(schema: Mapping[str, Any]) -> dict[str, Any]:
    parsed = parse_schema(dict(schema))
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise ConfigError(f"not an Avro record schema: {schema!r:.80}")
    return parsed


def _fingerprint(parsed: dict[str, Any]) -> bytes:
    canonical = to_parsing_canonical_form(parsed)
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


class SchemaStore:
    """Writer schemas by fingerprint. Fingerprints are computed once, at registration."""

    def __init__(self, schemas: Iterable[Mapping[str, Any]] = ()) -> None:
        self._by_fingerprint: dict[bytes, dict[str, Any]] = {}
        for schema in schemas:
            self.register(schema)

    @classmethod
    def with_project_schemas(cls, extra_dirs: Iterable[Path] = ()) -> SchemaStore:
        """A store knowing every schema in ``schemas/``, ``schemas/history/`` and the
        ``*.avsc`` files of ``extra_dirs`` (:class:`ConfigError` for an unreadable one)."""
        directory = schema_dir()
        paths = sorted(directory.glob("*.avsc")) + sorted(directory.glob("history/*.avsc"))
        store = cls(json.loads(path.read_text(encoding="utf-8")) for path in paths)
        for extra in extra_dirs:
            for path in sorted(extra.glob("*.avsc")):
                try:
                    store.register(json.loads(path.read_text(encoding="utf-8")))
                except (OSError, ValueError, ConfigError, SchemaParseException) as exc:
                    raise ConfigError(f"writer schema {path}: {exc}") from None
        return store

    def register(self, schema: Mapping[str, Any]) -> bytes:
        """Learn a writer schema (a JSON dict); returns its fingerprint. Idempotent."""
        parsed = _parse(schema)
        fp = _fingerprint(parsed)
        self._by_fingerprint.setdefault(fp, parsed)
        return fp

    def lookup(self, fp: bytes) -> dict[str, Any] | None:
        """The parsed writer schema with fingerprint ``fp``, or ``None``."""
        return self._by_fingerprint.get(fp)

    def __contains__(self, fp: object) -> bool:
        return fp in self._by_fingerprint

    def __len__(self) -> int:
        return len(self._by_fingerprint)


@functools.cache
def default_store() -> SchemaStore:
    """The process-wide store used by codecs built without an explicit one: the project's
    schemas plus the writer schemas in the directories ``CANARY_SCHEMA_DIRS`` names
    (separated by ``os.pathsep``), so a running reader learns a newer writer's schema (a field
    added with a default) without being upgraded."""
    dirs = os.environ.get(SCHEMA_DIRS_ENV, "").split(os.pathsep)
    return SchemaStore.with_project_schemas(Path(d) for d in dirs if d)


class AvroCodec(Generic[T]):
    """Encode and decode one record dataclass type as Avro single-object messages.

    ``schema`` is this side's schema (the writer schema for :meth:`encode`, the reader schema
    for :meth:`decode`); by default the one in ``schemas/`` named after the type.
    """

    def __init__(
        self,
        record_type: type[T],
        schema: Mapping[str, Any] | None = None,
        *,
        store: SchemaStore | None = None,
        content_type: str | None = None,
    ) -> None:
        if schema is None:
            schema = load_schema(schema_file(record_type))
        self.record_type = record_type
        self.store = store if store is not None else default_store()
        self.fingerprint = self.store.register(schema)
        # Kept apart from the store's copy: two schemas differing only in defaults share a
        # fingerprint, and the reader's defaults are the ones that count.
        self.schema = _parse(schema)
        self.name: str = self.schema["name"]
        self.content_type = (
            content_type or CONTENT_TYPES.get(record_type) or _content_type(self.name)
        )
        self._header = MAGIC + self.fingerprint
        plan(record_type)
        #: The compiled writer and its values writer (None: this schema is written with
        #: fastavro).
        writers = compile_writers(self.schema, record_type)
        self._write = writers[0] if writers is not None else None
        self._write_values: WriteValues | None = writers[1] if writers is not None else None

    def encode(self, record: T) -> bytes:
        """``record`` as a single-object message (:class:`RecordTypeError`, a ``TypeError``, for
        a record of another type)."""
        if type(record) is not self.record_type:
            raise RecordTypeError(
                f"expected {self.record_type.__name__}, got {type(record).__name__}"
            )
        if self._write is not None:
            buf = bytearray(self._header)
            try:
                self._write(buf, record)
                return bytes(buf)
            except Unwritable:
                pass  # a value fastavro writes (or refuses) in its own way
        out = io.BytesIO()
        out.write(self._header)
        schemaless_writer(out, self.schema, to_avro(record), disable_tuple_notation=True)
        return out.getvalue()

    def encode_values(self, *values: Any) -> bytes | None:
        """The message of the record whose field values, in schema order, are ``values``,
        written without building the record, for a hot loop that has the values and checked
        them as the record would (:meth:`encode` writes the same bytes for that record). None
        when the compiled writer does not write them itself: build the record and
        :meth:`encode` it (it checks the values and writes, or refuses, them as always).

        >>> from model_canary.streams.messages import EPOCH, Feedback
        >>> codec = codec_for(Feedback)
        >>> fb = Feedback(request_id="r1", model="iris", label="setosa", observed_at=EPOCH)
        >>> codec.encode_values("r1", "iris", "setosa", EPOCH, None, None, {}) == codec.encode(fb)
        True
        >>> codec.encode_values("r1", "iris", 7, EPOCH, None, None, {}) is None  # a label is text
        True
        """
        if self._write_values is None:
            return None
        buf = bytearray(self._header)
        try:
            self._write_values(buf, *values)
        except Unwritable:
            return None
        return bytes(buf)

    def decode(self, data: bytes) -> T:
        """The record in ``data``; raises only
        :class:`~model_canary.streams.errors.DecodeError` subclasses."""
        return self._build(self._read(data))

    def _build(self, raw: Any) -> T:
        try:
            return from_avro(self.record_type, raw)
        except (TypeError, ValueError) as exc:
            raise InvalidRecordError(f"{self.name}: {exc}") from exc

    def decode_fields(self, data: bytes) -> dict[str, Any]:
        """The Avro fields of ``data`` as a dict (resolved to this side's schema), without
        building or checking the record: for hot loops that read a few fields and check them
        themselves. Raises only :class:`~model_canary.streams.errors.DecodeError` subclasses.
        """
        raw = self._read(data)
        if not isinstance(raw, dict):
            raise UndecodableError(f"{self.name}: not a record")
        return raw

    def _read(self, data: bytes) -> Any:
        """The Avro datum in ``data``, read with its writer's schema resolved to this side's."""
        return self._read_body(*_writer_of(data, self.store, self.name))

    def _read_body(self, data: bytes, fp: bytes, writer: dict[str, Any]) -> Any:
        """:meth:`_read` of a message whose writer schema was looked up (:func:`_writer_of`)."""
        body = io.BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            raw: Any = schemaless_reader(
                body, writer, None if fp == self.fingerprint else self.schema
            )
        except SchemaResolutionError as exc:
            raise InvalidRecordError(
                f"writer schema {writer['name']} ({fp.hex()}) cannot be read as {self.name}: {exc}"
            ) from exc
        except Exception as exc:
            raise UndecodableError(
                f"{self.name}: corrupt Avro body: {type(exc).__name__}: {exc}"
            ) from exc
        if body.tell() != len(data):
            raise UndecodableError(
                f"{self.name}: {len(data) - body.tell()} trailing bytes after the Avro body"
            )
        return raw


_CODECS: dict[type, AvroCodec[Any]] = {}


def codec_for(record_type: type[T]) -> AvroCodec[T]:
    """The shared codec of a record type, using :func:`default_store`."""
    codec = _CODECS.get(record_type)
    if codec is None:
        codec = _CODECS[record_type] = AvroCodec(record_type)
    return codec


def decode_any(data: bytes) -> Record:
    """Decode a message of any top-level record type, chosen by its writer schema's name
    (for topics carrying several types, such as the control topic)."""
    store = default_store()
    found = _writer_of(data, store, "record")
    record_type = _BY_NAME.get(found[2]["name"])
    if record_type is None:
        raise InvalidRecordError(f"writer schema {found[2]['name']} is not a top-level record")
    codec = codec_for(record_type)
    if codec.store is not store:  # (a codec registered with a store of its own)
        return codec.decode(data)
    return codec._build(codec._read_body(*found))  # the writer schema is looked up once


_BY_NAME: dict[str, type[Record]] = {f"dev.modelcanary.{t.__name__}": t for t in CONTENT_TYPES}


def _writer_of(data: object, store: SchemaStore, what: str) -> tuple[bytes, bytes, dict[str, Any]]:
    """``(data, fingerprint, parsed writer schema)`` of a single-object message."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UndecodableError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_SIZE or data[:2] != MAGIC:
        hint = "; JSON needs header content-type: application/json" if data[:1] == b"{" else ""
        raise UndecodableError(
            f"{what}: not an Avro single-object message ({len(data)} bytes starting "
            f"{data[:2].hex() or 'with nothing'}; expected marker c301 and a fingerprint{hint})"
        )
    fp = data[2:HEADER_SIZE]
    writer = store.lookup(fp)
    if writer is None:
        raise UnknownSchemaError(
            f"{what}: unknown writer schema fingerprint {fp.hex()} "
            "(CRC-64-AVRO, little-endian); register the writer schema"
        )
    return data, fp, writer


def _content_type(full_name: str) -> str:
    kebab = re.sub(r"(?<!^)(?=[A-Z])", "-", full_name.rsplit(".", 1)[-1]).lower()
    return f"application/vnd.modelcanary.{kebab}+avro"
