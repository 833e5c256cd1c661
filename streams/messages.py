"""The records model-canary puts on Kafka: one frozen dataclass per Avro schema in ``schemas/``.

Fields are keyword-only and appear in schema order. Timestamps are timezone-aware ``datetime``
objects (the wire keeps milliseconds), arrays are tuples, maps are dicts. Each record checks
itself on construction and raises :class:`ValueError` when an identity field is empty, an
enum-like field has an unknown value, a timestamp is naive or a ``*_bp`` value lies outside
``0..10000``; enum-like fields given as plain strings are converted to their ``StrEnum``.

>>> fb = Feedback(request_id="r1", model="iris", label="setosa", observed_at=from_epoch_ms(0))
>>> fb.observed_at.isoformat()
'1970-01-01T00:00:00+00:00'
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import UnionType
from typing import Any, ClassVar

from streams.headers import JSON

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


class Arm(StrEnum):
    """The deployment that answered a request."""

    STABLE = "stable"
    BASELINE = "baseline"
    CANARY = "canary"


class Mode(StrEnum):
    """``canary`` serves a share of traffic from the canary; ``shadow`` only mirrors it."""

    CANARY = "canary"
    SHADOW = "shadow"


class Action(StrEnum):
    """What a :class:`ControlCommand` asks the controller to do."""

    REGISTER = "register"
    START = "start"
    SET_WEIGHT = "set_weight"
    ADVANCE = "advance"
    PAUSE = "pause"
    RESUME = "resume"
    HOLD = "hold"
    ROLLBACK = "rollback"
    FINALIZE = "finalize"


class Phase(StrEnum):
    """Where a rollout is in its life (``Stable``: a registered model with no rollout)."""

    STABLE = "Stable"
    INITIALIZING = "Initializing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    HOLDING = "Holding"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"


class Outcome(StrEnum):
    """The evaluator's verdict on a rollout step."""

    ADVANCE = "ADVANCE"
    HOLD = "HOLD"
    ROLLBACK = "ROLLBACK"
    FINALIZE = "FINALIZE"


class Record:
    """Base of every record: validates and normalises the fields after construction."""

    __slots__ = ()
    #: Fields that identify the record; they have no Avro default and must not be empty.
    IDENTITY: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        _check(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceRequest(Record):
    """A request to run ``model`` on ``inputs``, as sent by a client.

    >>> req = InferenceRequest(request_id="r1", model="iris", inputs=b"{}", created_at=EPOCH)
    >>> req.content_type, req.routing_key, dict(req.attributes)
    ('application/json', None, {})
    """

    IDENTITY: ClassVar[tuple[str, ...]] = ("request_id", "model")
    request_id: str
    model: str
    inputs: bytes
    content_type: str = JSON
    routing_key: str | None = None
    created_at: datetime
    timeout_ms: int | None = None
    attributes: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        Record.__post_init__(self)
        if self.timeout_ms is not None and not 0 < self.timeout_ms <= INT32_MAX:
            raise ValueError(f"InferenceRequest.timeout_ms must be within 1..{INT32_MAX}")


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceResult(Record):
    """The output of one model version for one request (``served=False`` for shadows).

    >>> res = InferenceResult(request_id="r1", model="iris", version="v2", arm="canary",
    ...                       outputs=b"{}", latency_ms=3.5, created_at=EPOCH)
    >>> res.arm is Arm.CANARY, res.served
    (True, True)
    """

    IDENTITY: ClassVar[tuple[str, ...]] = ("request_id", "model", "version")
    request_id: str
    model: str
    version: str
    arm: Arm
    served: bool = True
    outputs: bytes
    content_type: str = JSON
    error: str | None = None
    error_type: str | None = None
    rollout_id: str | None = None
    weight_bp: int = 0
    routing_key: str | None = None
    latency_ms: float
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricEvent(Record):
    """One measurement per answered request, the evaluator's input.

    >>> ev = MetricEvent(request_id="r1", model="iris", version="v2", arm=Arm.CANARY,
    ...                  served=True, weight_bp=100, latency_ms=3.5, error=False,
    ...                  routed_at=EPOCH, completed_at=EPOCH)
    >>> ev.prediction is None
    True
    """

    IDENTITY: ClassVar[tuple[str, ...]] = ("request_id", "model", "version")
    request_id: str
    model: str
    version: str
    arm: Arm
    served: bool = True
    rollout_id: str | None = None
    weight_bp: int = 0
    latency_ms: float
    error: bool = False
    error_type: str | None = None
    prediction: str | None = None
    routing_key: str | None = None
    routed_at: datetime
    completed_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Feedback(Record):
    """Ground truth for a request, arriving after the fact (see the module example)."""

    IDENTITY: ClassVar[tuple[str, ...]] = ("request_id", "model", "label")
    request_id: str
    model: str
    label: str
    observed_at: datetime
    source: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlCommand(Record):
    """A command to the rollout controller; ``issued_by`` is ``operator`` or ``evaluator``.

    >>> cmd = ControlCommand(command_id="c1", model="iris", action="set_weight",
    ...                      weight_bp=2500, issued_at=EPOCH)
    >>> cmd.action is Action.SET_WEIGHT, cmd.issued_by
    (True, 'operator')
    """

    IDENTITY: ClassVar[tuple[str, ...]] = ("command_id", "model")
    command_id: str
    model: str
    action: Action
    issued_by: str = "operator"
    issued_at: datetime
    reason: str = ""
    baseline_version: str | None = None
    canary_version: str | None = None
    mode: Mode | None = None
    steps_bp: tuple[int, ...] = ()
    weight_bp: int | None = None
    shadow_sample_bp: int | None = None
    plan_json: str | None = None
    key_id: str | None = None
    signature: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlEvent(Record):
    """The controller's audit event for a command: ``outcome`` is ``applied`` or ``rejected``.

    ``model``, ``command_id`` and ``action`` are empty when the command was unreadable;
    ``revision`` is -1 when there is no rollout state.

    >>> ev = ControlEvent(event_id="e1", model="iris", command_id="c1", action="pause",
    ...                   outcome="applied", revision=3, phase="Paused", at=EPOCH)
    >>> ev.reason, ev.weight_bp
    ('', None)
    """

    IDENTITY: ClassVar[tuple[str, ...]] = ("event_id", "outcome")
    event_id: str
    model: str = ""
    command_id: str = ""
    action: str = ""
    issued_by: str = ""
    outcome: str
    reason: str = ""
    detail: str = ""
    revision: int = -1
    phase: str | None = None
    weight_bp: int | None = None
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutState(Record):
    """The current state of a model's rollout (compacted topic, key = ``model``).

    >>> st = RolloutState(model="iris", rollout_id="ro1", stable_version="v1",
    ...                   baseline_version="v1", canary_version="v2", phase=Phase.PROGRESSING,
    ...                   step_started_at=EPOCH, updated_at=EPOCH)
    >>> st.steps_bp, st.mode
    ((100, 2000, 5000, 10000), <Mode.CANARY: 'canary'>)
    """

    IDENTITY: ClassVar[tuple[str, ...]] = (
        "model",
        "rollout_id",
        "stable_version",
        "baseline_version",
    )
    model: str
    rollout_id: str
    stable_version: str
    baseline_version: str
    canary_version: str | None = None
    mode: Mode = Mode.CANARY
    phase: Phase
    steps_bp: tuple[int, ...] = (100, 2000, 5000, 10000)
    step_index: int = 0
    weight_bp: int = 0
    shadow_sample_bp: int = MAX_BP
    revision: int = 0
    step_started_at: datetime
    updated_at: datetime
    reason: str = ""
    plan_json: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricEvidence(Record):
    """One metric compared between baseline and canary, part of a :class:`Decision`."""

    IDENTITY: ClassVar[tuple[str, ...]] = ("metric",)
    metric: str
    baseline_n: int = 0
    canary_n: int = 0
    baseline_bad: int = 0
    canary_bad: int = 0
    statistic: float = 0.0
    lower: float | None = None
    upper: float | None = None
    threshold: float = 0.0
    alarmed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class OffsetRange(Record):
    """Offsets ``first..last`` (inclusive) of one topic partition."""

    IDENTITY: ClassVar[tuple[str, ...]] = ("topic",)
    topic: str
    partition: int
    first: int
    last: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision(Record):
    """The evaluator's decision on a rollout step, with its evidence.

    >>> d = Decision(decision_id="d1", model="iris", rollout_id="ro1", outcome="HOLD",
    ...              reason="not enough data", decided_at=EPOCH,
    ...              evidence=(MetricEvidence(metric="error_rate", canary_n=12),))
    >>> d.outcome, d.evidence[0].canary_n
    (<Outcome.HOLD: 'HOLD'>, 12)
    """

    IDENTITY: ClassVar[tuple[str, ...]] = ("decision_id", "model", "rollout_id")
    decision_id: str
    model: str
    rollout_id: str
    outcome: Outcome
    step_index: int = 0
    weight_bp: int = 0
    reason: str = ""
    decided_at: datetime
    evidence: tuple[MetricEvidence, ...] = ()
    offsets: tuple[OffsetRange, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Header(Record):
    """A Kafka header kept in a :class:`DeadLetter`."""

    IDENTITY: ClassVar[tuple[str, ...]] = ()
    key: str
    value: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter(Record):
    """A message an agent could not process, with the reason.

    >>> dl = DeadLetter(original_topic="canary.requests", partition=0, offset=42,
    ...                 value=b"junk", reason="undecodable", failed_at=EPOCH)
    >>> dl.key, dl.headers
    (None, ())
    """

    IDENTITY: ClassVar[tuple[str, ...]] = ("original_topic",)
    original_topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes
    headers: tuple[Header, ...] = ()
    reason: str = ""
    detail: str = ""
    agent: str = ""
    failed_at: datetime


RECORD_TYPES: tuple[type[Record], ...] = (
    InferenceRequest,
    InferenceResult,
    MetricEvent,
    Feedback,
    ControlCommand,
    ControlEvent,
    RolloutState,
    Decision,
    DeadLetter,
)
"""The top-level records, one per schema file (nested records are not listed)."""


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
    cls = type(record)
    rules = _rules(cls)
    for name in cls.IDENTITY:
        if getattr(record, name) == "":
            raise ValueError(f"{cls.__name__}.{name} must not be empty")
    for name, enum in rules.enums:
        value = getattr(record, name)
        if value is not None and type(value) is not enum:
            try:
                object.__setattr__(record, name, enum(value))
            except ValueError:
                allowed = ", ".join(m.value for m in enum)
                raise ValueError(
                    f"{cls.__name__}.{name} must be one of {allowed}; got {value!r}"
                ) from None
    for name in rules.times:
        value = getattr(record, name)
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"{cls.__name__}.{name} must be a timezone-aware datetime")
    for name in rules.bps:
        value = getattr(record, name)
        for bp in value if isinstance(value, tuple) else (value,):
            if bp is not None and not 0 <= bp <= MAX_BP:
                raise ValueError(f"{cls.__name__}.{name} must be within 0..{MAX_BP}; got {bp}")
