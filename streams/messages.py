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

import json
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from model_canary.streams.defaults import DEFAULT_STEPS_BP
from model_canary.streams.enums import (
    Action,
    Arm,
    BaselineMode,
    EvidenceKind,
    Mode,
    Outcome,
    Phase,
    PreflightStatus,
)
from model_canary.streams.errors import RecordValidationError, UndecodableError
from model_canary.streams.headers import JSON
from model_canary.streams.record_base import (
    EPOCH,
    INT32_MAX,
    MAX_BP,
    Record,
    epoch_ms,
    from_epoch_ms,
    unwrap_optional,
    utc_now,
)

__all__ = [
    "EPOCH",
    "INT32_MAX",
    "MAX_BP",
    "RECORD_TYPES",
    "Action",
    "Arm",
    "BaselineMode",
    "ControlCommand",
    "ControlEvent",
    "DeadLetter",
    "Decision",
    "Evidence",
    "EvidenceKind",
    "Feedback",
    "Header",
    "InferenceRequest",
    "InferenceResult",
    "MetricEvent",
    "MetricEvidence",
    "Mode",
    "OffsetRange",
    "Outcome",
    "OutcomeUnits",
    "Phase",
    "Prediction",
    "Preflight",
    "PreflightStatus",
    "Record",
    "RolloutState",
    "epoch_ms",
    "from_epoch_ms",
    "unwrap_optional",
    "utc_now",
]


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
            raise RecordValidationError(
                f"InferenceRequest.timeout_ms must be within 1..{INT32_MAX}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceResult(Record):
    """The output of one model version for one request (``served=False`` for shadows).

    >>> res = InferenceResult(request_id="r1", model="iris", version="v2", arm="canary",
    ...                       outputs=b"{}", latency_ms=3.5, created_at=EPOCH)
    >>> res.arm is Arm.CANARY, res.served
    (True, True)
    """

    IDENTITY: ClassVar[tuple[str, ...]] = ("request_id",)
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
    #: Added in schema version 2 (``schemas/history/inference_result.v1.avsc`` is the first):
    #: the prediction as text and what the adapter measured (token counts of a chat answer).
    prediction: str | None = None
    measures: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        Record.__post_init__(self)
        for name, number in self.measures.items():
            if not name or isinstance(number, bool) or not isinstance(number, int | float):
                raise RecordValidationError(
                    f"InferenceResult.measures: {name!r} must name a number, got {number!r}"
                )
            if not math.isfinite(number):
                raise RecordValidationError(
                    f"InferenceResult.measures: {name!r} must be finite, got {number!r}"
                )

    def json(self) -> Any:
        """The outputs decoded from JSON: what a ``python:`` model returned, an Open Inference
        Protocol response, a chat completion. :class:`UndecodableError` when they are not JSON
        (``outputs`` holds the bytes as they are).

        >>> InferenceResult(request_id="r1", model="spam", version="v1", arm="stable",
        ...                 outputs=b'"ham"', latency_ms=1.0, created_at=EPOCH).json()
        'ham'
        """
        try:
            return json.loads(self.outputs)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise UndecodableError(
                f"the outputs of {self.request_id} ({self.content_type}) are not JSON: {exc}"
            ) from None


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
    """Feedback on a request, arriving after the fact: its true ``label`` (ground truth for
    accuracy; empty when there is none), a numeric ``value`` (a rating, a judge's score, the
    true value of a regression target) and free-form ``attributes`` — any of them, but at
    least one. Outcome metrics read them (:mod:`model_canary.streams.outcomes`).

    >>> Feedback(request_id="r1", model="chat", value=0.25, observed_at=EPOCH).label
    ''
    >>> Feedback(request_id="r1", model="chat", observed_at=EPOCH)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    model_canary.streams.errors.RecordValidationError: Feedback for r1 carries nothing: ...
    """

    IDENTITY: ClassVar[tuple[str, ...]] = ("request_id", "model")
    request_id: str
    model: str
    label: str = ""
    observed_at: datetime
    source: str | None = None
    #: Added in schema version 2 (``schemas/history/feedback.v1.avsc`` is the first);
    #: records written before read as no value and no attributes.
    value: float | None = None
    attributes: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        Record.__post_init__(self)
        if self.value is not None:
            if isinstance(self.value, bool) or not isinstance(self.value, int | float):
                raise RecordValidationError(f"Feedback.value must be a number, got {self.value!r}")
            if not math.isfinite(self.value):
                raise RecordValidationError(f"Feedback.value must be finite, got {self.value!r}")
            object.__setattr__(self, "value", float(self.value))
        if any(not isinstance(k, str) or not k for k in self.attributes):
            raise RecordValidationError("Feedback.attributes: every key must be a non-empty text")
        if not self.label and self.value is None and not self.attributes:
            raise RecordValidationError(
                f"Feedback for {self.request_id} carries nothing: "
                "give a label, a value or attributes"
            )


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
    expected_revision: int | None = None
    latency_thresholds_ms: Mapping[str, float] | None = field(default=None, hash=False)


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
    steps_bp: tuple[int, ...] = DEFAULT_STEPS_BP
    step_index: int = 0
    weight_bp: int = 0
    shadow_sample_bp: int = MAX_BP
    revision: int = 0
    step_started_at: datetime
    updated_at: datetime
    reason: str = ""
    plan_json: str | None = None
    #: Fixed once per rollout by the evaluator (``set_thresholds``); workers compare each
    #: answer's latency with them. States written before the field existed read as None.
    latency_thresholds_ms: Mapping[str, float] | None = field(default=None, hash=False)


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
class OutcomeUnits(Record):
    """One outcome metric's counts in a labelled evidence cell: joined requests whose
    feedback counts for it, the bad ones, and per cohort bucket ``units`` (packed rows, see
    :mod:`model_canary.streams.evidence.columns`)."""

    IDENTITY: ClassVar[tuple[str, ...]] = ("metric",)
    metric: str
    counted: int = 0
    bad: int = 0
    units: bytes = b""

    def __post_init__(self) -> None:
        Record.__post_init__(self)
        if min(self.counted, self.bad) < 0:  # bad <= counted: checked where it is counted
            raise RecordValidationError("OutcomeUnits counts must not be negative")


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
    key_id: str | None = None
    signature: str | None = None


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Preflight(Record):
    """A pre-flight's progress, then its verdict (compacted topic, key = ``preflight_id``).

    ``ranges`` are the recorded requests replayed (``first..last`` per partition of the
    requests topic); ``evidence`` is per metric, as a rollout decision carries it.

    >>> pf = Preflight(preflight_id="pf-1", model="iris", baseline_version="v1",
    ...                candidate_version="v2", status="passed", window_start=EPOCH,
    ...                started_at=EPOCH, updated_at=EPOCH)
    >>> pf.status is PreflightStatus.PASSED, pf.passed, pf.finished, pf.schema_version
    (True, True, True, 1)
    """

    IDENTITY: ClassVar[tuple[str, ...]] = (
        "preflight_id",
        "model",
        "baseline_version",
        "candidate_version",
    )
    schema_version: int = 1
    preflight_id: str
    model: str
    baseline_version: str
    candidate_version: str
    status: PreflightStatus
    baseline_mode: BaselineMode = BaselineMode.REPLAY
    sample_bp: int = MAX_BP
    rate: float = 0.0
    max_requests: int = 0
    ranges: tuple[OffsetRange, ...] = ()
    window_start: datetime
    replayed: int = 0
    answered: int = 0
    labelled: int = 0
    reason: str = ""
    evidence: tuple[MetricEvidence, ...] = ()
    agreement: float | None = None
    plan_json: str | None = None
    report: str | None = None
    started_at: datetime
    updated_at: datetime

    @property
    def finished(self) -> bool:
        """The verdict is in (passed, failed or inconclusive)."""
        return self.status in (
            PreflightStatus.PASSED,
            PreflightStatus.FAILED,
            PreflightStatus.INCONCLUSIVE,
        )

    @property
    def passed(self) -> bool:
        return self.status is PreflightStatus.PASSED


_EVIDENCE_COUNTS = (
    "requests",
    "errors",
    "refused",
    "batches",
    "batch_items",
    "max_batch",
    "batches_over_p95",
    "batches_over_p99",
    "batches_timed",
    "batch_m2",
    "batch_e2_errors",
    "batch_em_errors",
    "batch_e2_over_p95",
    "batch_em_over_p95",
    "batch_e2_over_p99",
    "batch_em_over_p99",
    "labelled",
    "incorrect",
)
_evidence_counts = operator.attrgetter(*_EVIDENCE_COUNTS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence(Record):
    """What one producer transaction saw of one cell: a model's rollout, version, arm,
    served flag, weight at routing and routed second (see ``docs/evidence.md``).

    The record is identified by ``(source, kind, cell, offsets)``: every record of one
    transaction carries the same input ``offsets``, and the evaluator applies each record
    once however often it is read.

    >>> ev = Evidence(kind="served", model="iris", rollout_id="ro1", version="v2",
    ...               arm="canary", weight_bp=100, second=1_700_000_000, source="w1",
    ...               requests=40, errors=1)
    >>> ev.kind is EvidenceKind.SERVED, ev.thresholds_revision, ev.schema_version
    (True, -1, 2)

    ``schema_version`` 2 (records before it read as 1): ``batches_timed`` counts the batches
    with an answer of the cell compared on latency, ``batches_over_p95``/``_p99`` those with
    such an answer over the threshold (the batch-unit latency evidence); in version 1 they
    compared the batch's own time, and the evaluator does not use them as batch units.
    """

    IDENTITY: ClassVar[tuple[str, ...]] = ("model", "rollout_id", "source")
    schema_version: int = 2
    kind: EvidenceKind
    model: str
    rollout_id: str
    version: str = ""
    arm: Arm
    served: bool = True
    weight_bp: int = 0
    second: int
    source: str
    offsets: tuple[OffsetRange, ...] = ()
    requests: int = 0
    errors: int = 0
    refused: int = 0
    batches: int = 0
    batch_items: int = 0
    max_batch: int = 0
    latency_unit: str = "batch"
    latency_hist: bytes = b""
    batch_latency_hist: bytes = b""
    thresholds_revision: int = -1
    batches_over_p95: int = 0
    batches_over_p99: int = 0
    batch_m2: int = 0
    batch_e2_errors: int = 0
    batch_em_errors: int = 0
    batch_e2_over_p95: int = 0
    batch_em_over_p95: int = 0
    batch_e2_over_p99: int = 0
    batch_em_over_p99: int = 0
    labelled: int = 0
    incorrect: int = 0
    units: bytes = b""
    #: Labelled evidence: per outcome metric of the plan, what the joined feedback says.
    outcomes: tuple[OutcomeUnits, ...] = ()
    #: This record is ``part`` of the ``parts`` records its transaction wrote for the same
    #: model and rollout (1-based; 0 of 0 in records written before records were numbered):
    #: the evaluator applies them together (:mod:`model_canary.streams.evidence.gather`).
    part: int = 0
    parts: int = 0
    batches_timed: int = 0

    def __post_init__(self) -> None:
        Record.__post_init__(self)
        if min(_evidence_counts(self)) < 0:
            raise RecordValidationError("Evidence counts must not be negative")
        if not (0 <= self.part <= self.parts and (self.part == 0) == (self.parts == 0)):
            raise RecordValidationError(
                f"Evidence.part must be 1..parts (or 0 of 0), not {self.part} of {self.parts}"
            )
        if self.latency_unit not in ("item", "batch"):
            raise RecordValidationError(
                f"Evidence.latency_unit must be item or batch, not {self.latency_unit!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceSet(Record):
    """The evidence records one producer transaction wrote for one model, in one message
    (``schemas/evidence_set.avsc``, keyed by the model; see ``docs/evidence.md``): the
    evaluator reads one message per transaction and model, not one per cell. Each record is
    the :class:`Evidence` that would otherwise be written alone; all are of one model.

    >>> ev = Evidence(kind="routed", model="iris", rollout_id="ro1", arm="canary",
    ...               second=1_700_000_000, source="r1", requests=3)
    >>> EvidenceSet(records=(ev, ev)).model, EvidenceSet(records=(ev,)).schema_version
    ('iris', 1)
    >>> from dataclasses import replace
    >>> EvidenceSet(records=(ev, replace(ev, model="wine")))
    Traceback (most recent call last):
    ...
    model_canary.streams.errors.RecordValidationError: EvidenceSet.records must all be of one model
    """

    schema_version: int = 1
    records: tuple[Evidence, ...] = ()

    def __post_init__(self) -> None:
        Record.__post_init__(self)
        if not self.records:
            raise RecordValidationError("EvidenceSet.records must not be empty")
        model = self.records[0].model
        if any(ev.model != model for ev in self.records):
            raise RecordValidationError("EvidenceSet.records must all be of one model")

    @property
    def model(self) -> str:
        """The model every record is of (the message's key)."""
        return self.records[0].model


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction(Record):
    """One arm's prediction for a request, waiting for the request's ground truth.

    >>> p = Prediction(request_id="r1", model="iris", rollout_id="ro1", arm="canary",
    ...                second=1_700_000_000, prediction="setosa")
    >>> p.answers, p.bucket
    (1, 0)
    """

    IDENTITY: ClassVar[tuple[str, ...]] = ("request_id", "model", "rollout_id")
    request_id: str
    model: str
    version: str = ""
    rollout_id: str
    arm: Arm
    served: bool = True
    weight_bp: int = 0
    second: int
    bucket: int = 0
    answers: int = 1
    label_window_s: int = 86_400
    prediction: str = ""

    def __post_init__(self) -> None:
        Record.__post_init__(self)
        if not 0 <= self.bucket < 10_000 or self.answers < 1 or self.label_window_s < 0:
            raise RecordValidationError(
                "Prediction.bucket must be within 0..9999, answers at least 1 and "
                "label_window_s not negative"
            )


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
    Preflight,
    Evidence,
    Prediction,
    EvidenceSet,
)
"""The top-level records, one per schema file (nested records are not listed)."""
