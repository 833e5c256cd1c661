"""A model worker: consumes one model version's request topic, runs the model in micro-batches
and publishes one result per request, inside Kafka transactions.

For the evaluator it aggregates, per transaction, the *served evidence* of what it answered
(per rollout arm, weight at routing and routed second: requests, errors, latency histograms
and threshold exceedances, per cohort bucket; see :mod:`model_canary.streams.evidence`) and
publishes it in the same transaction, a few records per transaction whatever the request
rate. In a rollout whose plan compares ground truth, each answer's prediction goes to the
predictions topic (keyed by request id) for the label joiner. One metric event per request
(the former evaluator input) is opt-in (``metric_events``).

After a rollback, requests still queued for the canary are not answered by it: the worker
re-drives them to the baseline's topic in the same transaction that consumes them, so each is
still answered exactly once, by the baseline.

The worker also consumes its version's pre-flight topic: recorded requests a pre-flight
replays (``canary preflight``). They are run in the same micro-batches as live requests and
answered on the pre-flight results topic only, chosen by the topic they came from (never by a
header): a replayed answer never reaches a client, and counts in no live metric.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from confluent_kafka import Message

from model_canary.agents import metrics
from model_canary.agents.kafka.alo import data_loop
from model_canary.agents.kafka.eos import LoopConfig, TxnHooks, TxnOutput, tune_gc
from model_canary.agents.kafka.refusals import AnswerTo, Refusals
from model_canary.agents.kafka.state_view import StateView
from model_canary.agents.worker.adapters import (
    ModelAdapter,
    ModelInput,
    ModelOutput,
    ModelRunner,
)
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.codec.json_records import is_json
from model_canary.streams.codec.requests import decode_request
from model_canary.streams.codec.results import encode_answer
from model_canary.streams.cohort import bucket as cohort_bucket
from model_canary.streams.errors import DecodeError, OutputRefusedError
from model_canary.streams.evaluation import plan_of
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder, Thresholds
from model_canary.streams.evidence.wire import encode_evidence
from model_canary.streams.messages import (
    Arm,
    InferenceRequest,
    MetricEvent,
    Mode,
    Phase,
    Prediction,
    RolloutState,
    from_epoch_ms,
    utc_now,
)
from model_canary.streams.plan import labelled_metrics
from model_canary.streams.route_header import read_route, redriven_headers
from model_canary.streams.settings import Settings
from model_canary.streams.stats.layout import SHADOW_PAIR_BP
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)

AGENT = "worker"
REDRIVEN = h.REDRIVEN
#: The headers a request's routing is read from (see _Routed.from_headers): the router's
#: packed one, and those an older router wrote.
_ROUTING = (
    h.ROUTE,
    h.ARM,
    h.ROLLOUT_ID,
    h.WEIGHT_BP,
    h.ROUTED_AT_MS,
    h.SHADOW,
    REDRIVEN,
    h.DELIVERY,
)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    model: str
    version: str
    instance: str = "worker-1"
    max_batch: int = 64
    timeout_s: float = 10.0
    #: Also publish one MetricEvent per request to the metrics topic (off: evidence only).
    metric_events: bool = False


@dataclass(frozen=True, slots=True)
class _Routed:
    """What the router wrote in the headers of one request (shared by the requests of a
    micro-batch routed alike: see _Routes)."""

    arm: Arm
    rollout_id: str | None
    weight_bp: int
    served: bool
    routed_at_ms: int | None
    redriven: bool
    at_least_once: bool  # routed with at-least-once delivery: its answer may repeat
    #: The pre-flight id of a replayed request (it came from the pre-flight topic).
    preflight: str | None = None

    @classmethod
    def from_headers(
        cls, meta: Mapping[str, str | bytes | None], *, preflight: bool = False
    ) -> _Routed:
        """Read from a message's headers by name (values as Kafka gives them, or as text):
        the router's ``canary-route``, or an older router's separate headers
        (:func:`~model_canary.streams.route_header.read_route`). Values the router never
        writes are refused here (an error raised when the result is built would be outside
        the per-message handling: the worker would stop, and stop again on restart)."""
        route = read_route(meta)
        return cls(
            arm=route.arm,
            rollout_id=route.rollout_id,
            weight_bp=route.weight_bp,
            served=route.served,
            routed_at_ms=route.routed_at_ms,
            redriven=route.redriven,
            at_least_once=route.at_least_once,
            preflight=(_text(meta.get(h.PREFLIGHT)) or "unknown") if preflight else None,
        )


class _Routes:
    """The routings read so far in one micro-batch, by the values of the headers they are
    read from: its requests mostly share them (a rollout, an arm, a weight, a few routed
    milliseconds), so each is read once, not once per request.

    >>> routes = _Routes()
    >>> a = routes.of({h.ARM: b"canary", h.WEIGHT_BP: b"500", h.REQUEST_ID: b"r1"})
    >>> b = routes.of({h.ARM: b"canary", h.WEIGHT_BP: b"500", h.REQUEST_ID: b"r2"})
    >>> a is b, a == _Routed.from_headers({h.ARM: "canary", h.WEIGHT_BP: "500"})
    (True, True)
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[tuple[object, ...], _Routed] = {}

    def of(self, meta: Mapping[str, str | bytes | None], *, preflight: bool = False) -> _Routed:
        """:meth:`_Routed.from_headers` of ``meta`` (raising as it does)."""
        get = meta.get
        seen = (preflight, get(h.PREFLIGHT) if preflight else None, *map(get, _ROUTING))
        routed = self._seen.get(seen)
        if routed is None:
            routed = self._seen[seen] = _Routed.from_headers(meta, preflight=preflight)
        return routed


class Worker:
    """Serve one model version until stopped.

    >>> # Worker(settings, WorkerOptions("iris", "v2"), load_adapter("noop:")).run(stop)
    """

    def __init__(self, settings: Settings, options: WorkerOptions, adapter: ModelAdapter) -> None:
        self.settings = settings
        self.options = options
        self.adapter = adapter
        self.runner = ModelRunner(adapter)  # the model's calls, in a thread kept across batches
        self.catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
        self.topic = self.catalogue.version_requests(options.model, options.version)
        self.preflight_topic = self.catalogue.preflight_requests(options.model, options.version)
        # Micro-batch ids for replayed answers: unique across this worker's restarts.
        self._run = f"{options.instance}.{secrets.token_hex(4)}"
        self._batches = itertools.count()
        self.view = StateView(settings, client_id=f"canary-worker-state-{options.instance}")
        self._metric_codec = codec_for(MetricEvent)
        self._seconds = metrics.INFERENCE_SECONDS.labels(options.model, options.version)
        self._delivery_headers = h.delivery_headers(settings.exactly_once)
        prefix = settings.topic_prefix
        name = f"{options.model}.{options.version}"
        self.loop = data_loop(
            settings,
            LoopConfig(
                agent=AGENT,
                group_id=f"{prefix}.worker.{name}",
                topics=(self.topic, self.preflight_topic),
                transactional_id=f"{prefix}.worker.{name}.{options.instance}",
                max_batch=options.max_batch,
                commit=settings.commit_policy,
            ),
            self.handle,
            refuse=self._refuse,
            hooks=TxnHooks(before_commit=self._publish_evidence, on_abort=self._drop_evidence),
        )
        self.refusals = Refusals(
            self.catalogue, AGENT, delivery_headers=h.delivery_headers(settings.exactly_once)
        )
        self.evidence = EvidenceBuilder("served", source=self.loop.config.transactional_id)
        self._prediction_codec = codec_for(Prediction)

    def run(self, stop: threading.Event) -> None:
        tune_gc()
        self.view.catch_up()
        try:
            self.loop.run(stop)
        finally:
            self.view.close()
            self.runner.close()
            self.adapter.close()

    def handle(self, batch: Sequence[Message], out: TxnOutput) -> None:
        # Anything that raises here aborts the transaction; the loop then refuses the input it
        # was on (out.source) and handles the batch again.
        self.view.poll(0)
        todo: list[tuple[Message, InferenceRequest, _Routed, str | None]] = []
        routes = _Routes()
        for msg in batch:
            out.source = msg
            item = self._prepare(msg, out, routes)
            if item is not None:
                todo.append(item)
        if not todo:
            return
        inputs = [ModelInput(r.request_id, r.inputs, r.content_type) for _, r, _, _ in todo]
        began = time.perf_counter()
        outputs = self.runner.predict(inputs, self.options.timeout_s)
        batch_ms = (time.perf_counter() - began) * 1000
        errors = live = 0
        batch_id = f"{self._run}.{next(self._batches)}"
        seconds = self._seconds
        items = _Batch(self._current())
        now = utc_now()  # the batch's answers are written together
        for (msg, request, routed, content_type), output in zip(todo, outputs, strict=True):
            out.source = msg
            latency_ms = batch_ms + output.extra_latency_ms
            if routed.preflight is not None:
                self._publish_replayed(out, msg, request, routed, output, latency_ms, batch_id)
                continue
            ok = self._publish(out, msg, request, routed, output, latency_ms, content_type, now)
            live += 1
            errors += not ok
            seconds.observe(latency_ms / 1000)
            self._evidence_item(items, out, msg, request, routed, output, ok, latency_ms)
        out.source = None
        if items.cells:
            self.evidence.add_batch(
                items.cells,
                buckets=items.buckets,
                errors=items.errors,
                latencies_ms=items.latencies,
                batch_latency_ms=batch_ms,
                thresholds=items.thresholds,
            )
        # Counted per batch: a Prometheus update per request costs as much as the publishing.
        o = self.options
        if live:
            metrics.INFERENCES.labels(o.model, o.version, "ok").inc(live - errors)
        if errors:
            metrics.INFERENCES.labels(o.model, o.version, "error").inc(errors)

    def _prepare(
        self, msg: Message, out: TxnOutput, routes: _Routes
    ) -> tuple[Message, InferenceRequest, _Routed, str | None] | None:
        """The request in ``msg``, how it was routed and its content type; None when it was
        refused or re-driven (or is a rolled-back canary's shadow copy). ``routes``: the
        micro-batch's routings."""
        # The headers as Kafka gives them (the last of a name wins, as in h.header_dict);
        # only the few read are decoded.
        meta: dict[str, str | bytes | None] = dict(msg.headers() or ())
        get = meta.get
        try:
            routed = routes.of(meta, preflight=msg.topic() == self.preflight_topic)
        except DecodeError as exc:
            self._refuse(out, msg, exc.reason, str(exc))
            return None
        if (
            routed.preflight is None
            and routed.arm is Arm.CANARY
            and self._rolled_back(routed.rollout_id)
        ):
            if routed.served:
                self._redrive(out, msg, h.as_list(msg.headers()))
            return None  # a shadow copy of a rolled-back canary is simply not run
        value = msg.value() or b""
        key = msg.key()
        content_type = _text(get(h.CONTENT_TYPE))  # None or "": Avro
        try:
            request = decode_request(
                value,
                content_type,
                max_bytes=self.settings.max_request_bytes,
                model=_text(get(h.MODEL)) or None,
                request_id=_text(get(h.REQUEST_ID)) or None,
                routing_key=key.decode("utf-8", "replace") if key else None,
            )
        except DecodeError as exc:
            self._refuse(out, msg, exc.reason, str(exc))
            return None
        if request.model != self.options.model:
            self._refuse(
                out, msg, "invalid-record", f"request for model {request.model!r} on {self.topic}"
            )
            return None
        return msg, request, routed, content_type

    def _current(self) -> RolloutState | None:
        """The model's rollout state as the view shows it now."""
        return self.view.get(self.options.model)

    def _rolled_back(self, rollout_id: str | None) -> bool:
        state = self.view.get(self.options.model)
        return (
            state is not None
            and rollout_id is not None
            and state.rollout_id == rollout_id
            and state.phase is Phase.ROLLED_BACK
        )

    def _redrive(self, out: TxnOutput, msg: Message, raw: h.RawHeaders) -> None:
        state = self.view.get(self.options.model)
        assert state is not None
        topic = self.catalogue.version_requests(self.options.model, state.baseline_version)
        headers = redriven_headers(raw, state.baseline_version)
        out.produce(topic, msg.value(), key=msg.key(), headers=headers)
        metrics.REDRIVEN.labels(self.options.model, self.options.version).inc()

    def _publish(
        self,
        out: TxnOutput,
        msg: Message,
        request: InferenceRequest,
        routed: _Routed,
        output: ModelOutput,
        latency_ms: float,
        content_type: str | None,
        now: datetime,
    ) -> bool:
        """Write the request's result (and its metric event, when they are on); False when it
        counts as an error (the model failed, or its output could not be written and was
        refused)."""
        key = request.request_id.encode()
        # Answered in the request's own form (JSON for JSON), with headers saying whose answer
        # it is; a shadow's result goes to its own topic, never read as an answer.
        encoded, headers = self._answer(
            request, routed, output, latency_ms, served=routed.served, at=now,
            as_json=is_json(content_type),
        )  # fmt: skip
        topic = self.catalogue.results if routed.served else self.catalogue.shadow_results
        refused: str | None = None
        try:
            # Marked at-least-once when this worker or the router delivers so (it may repeat).
            marks = self._delivery_headers
            if routed.at_least_once and marks is None:
                marks = h.delivery_headers(exactly_once=False)
            out.produce(topic, encoded, key=key, headers=headers + marks if marks else headers)
        except OutputRefusedError as exc:
            # The model's answer cannot be written (too large for the results topic, say):
            # answer with an error instead, keep a bounded copy of the output, count an error.
            detail = f"the model's output cannot be written: {exc.detail}"
            answer = self._answer_to(request, routed)
            self.refusals.refuse(
                out,
                msg,
                exc.reason,
                detail,
                answer=answer,
                payload=output.outputs,
                payload_kind="output",
                at_least_once=routed.at_least_once,
            )
            refused = exc.reason
        if self.options.metric_events:
            self._publish_metric_event(out, request, routed, output, latency_ms, now, refused)
        return output.ok and refused is None

    def _publish_metric_event(
        self,
        out: TxnOutput,
        request: InferenceRequest,
        routed: _Routed,
        output: ModelOutput,
        latency_ms: float,
        now: datetime,
        refused: str | None,
    ) -> None:
        """The opt-in metric event of one answer (``refused``: the reason its output was
        refused, when it was)."""
        o = self.options
        # A re-driven request was assigned to the canary: its baseline answer is served but
        # says nothing about the canary-vs-baseline comparison, so no metric event is counted
        # for it as a random baseline draw.
        metric = MetricEvent(
            request_id=request.request_id,
            model=o.model,
            version=o.version,
            arm=routed.arm,
            served=routed.served,
            rollout_id=None if routed.redriven else routed.rollout_id,
            weight_bp=routed.weight_bp,
            latency_ms=latency_ms,
            error=not output.ok or refused is not None,
            error_type=refused if refused is not None else output.error_type,
            prediction=output.prediction if refused is None else None,
            routing_key=request.routing_key,
            routed_at=from_epoch_ms(routed.routed_at_ms) if routed.routed_at_ms else now,
            completed_at=now,
        )
        out.produce(self.catalogue.metrics, self._metric_codec.encode(metric), key=o.model.encode())

    # -- evidence --------------------------------------------------------------------------
    def _cell(self, routed: _Routed, routed_second: int) -> Cell | None:
        """The evidence cell of a request, or None when it is in no rollout's comparison (no
        rollout, the stable arm, re-driven to the baseline after a rollback, or a pre-flight's
        replayed copy)."""
        if (
            routed.rollout_id is None
            or routed.arm is Arm.STABLE
            or routed.redriven
            or routed.preflight is not None  # a replayed copy is no live evidence
        ):
            return None
        return Cell(
            self.options.model,
            routed.rollout_id,
            self.options.version,
            routed.arm.value,
            routed.served,
            routed.weight_bp,
            routed_second,
        )

    def _evidence_item(
        self,
        batch: _Batch,
        out: TxnOutput,
        msg: Message,
        request: InferenceRequest,
        routed: _Routed,
        output: ModelOutput,
        ok: bool,
        latency_ms: float,
    ) -> None:
        second = (routed.routed_at_ms or int(time.time() * 1000)) // 1000
        cell = self._cell(routed, second)
        if cell is None:
            return
        current = batch.state if batch.state and batch.state.rollout_id == cell.rollout_id else None
        key = msg.key() or request.request_id.encode()
        bucket = cohort_bucket(key, cell.rollout_id)
        batch.cells.append(cell)
        batch.buckets.append(bucket)
        batch.errors.append(not ok)
        batch.latencies.append(latency_ms)
        batch.thresholds.append(batch.state_thresholds if current is not None else None)
        if ok and output.prediction is not None and current is not None:
            plan = batch.plan
            if plan is not None:
                pair = current.mode is Mode.SHADOW and routed.weight_bp == SHADOW_PAIR_BP
                prediction = Prediction(
                    request_id=request.request_id,
                    model=cell.model,
                    version=cell.version,
                    rollout_id=cell.rollout_id,
                    arm=routed.arm,
                    served=routed.served,
                    weight_bp=routed.weight_bp,
                    second=second,
                    bucket=bucket,
                    answers=2 if pair else 1,
                    label_window_s=int(plan.label_window_seconds),
                    prediction=output.prediction,
                )
                value = self._prediction_codec.encode(prediction)
                out.produce(self.catalogue.predictions, value, key=request.request_id.encode())

    def _publish_evidence(self, out: TxnOutput) -> None:
        """Before the transaction commits: the served evidence of what it answered (and
        refused), citing the requests it consumed."""
        if not self.evidence:
            return
        records = self.evidence.build(self.loop.consumed_ranges())
        for key, value in encode_evidence(records, sets=self.settings.evidence_sets):
            out.produce(self.catalogue.evidence, value, key=key)

    def _drop_evidence(self) -> None:
        self.evidence.clear()

    def _answer(
        self,
        request: InferenceRequest,
        routed: _Routed,
        output: ModelOutput,
        latency_ms: float,
        *,
        served: bool,
        at: datetime,
        as_json: bool,
    ) -> tuple[bytes, h.RawHeaders]:
        """The answer to ``request``, encoded (value and headers): the model's output (or its
        error) and how it was routed."""
        o = self.options
        return encode_answer(
            request_id=request.request_id,
            model=o.model,
            version=o.version,
            arm=routed.arm,
            served=served,
            outputs=output.outputs,
            content_type=output.content_type,
            error=output.error,
            error_type=output.error_type,
            rollout_id=routed.rollout_id,
            weight_bp=routed.weight_bp,
            routing_key=request.routing_key,
            latency_ms=latency_ms,
            created_at=at,
            prediction=output.prediction if output.ok else None,
            measures=output.measures,
            as_json=as_json,
        )

    def _publish_replayed(
        self,
        out: TxnOutput,
        msg: Message,
        request: InferenceRequest,
        routed: _Routed,
        output: ModelOutput,
        latency_ms: float,
        batch_id: str,
    ) -> None:
        """Answer a pre-flight's replayed request on the pre-flight results topic, with the
        pre-flight's header and the micro-batch's id; an answer too large to write becomes an
        error answer there."""
        value, headers = self._answer(
            request, routed, output, latency_ms, served=False, at=utc_now(), as_json=False
        )
        marks = [
            (h.PREFLIGHT, (routed.preflight or "").encode()),
            (h.PREFLIGHT_BATCH, batch_id.encode()),
        ]
        try:
            out.produce(
                self.catalogue.preflight_results,
                value,
                key=request.request_id.encode(),
                headers=[*headers, *marks],
            )
        except OutputRefusedError as exc:
            detail = f"the model's output cannot be written: {exc.detail}"
            answer = self._answer_to(request, routed)
            self.refusals.refuse(
                out, msg, exc.reason, detail, answer=answer, payload=output.outputs,
                payload_kind="output",
            )  # fmt: skip

    def _answer_to(self, request: InferenceRequest | None, routed: _Routed | None) -> AnswerTo:
        if routed is not None and routed.preflight is not None:
            return AnswerTo(
                request.request_id if request else "",
                model=self.options.model,
                version=self.options.version,
                arm=routed.arm,
                served=False,
                rollout_id=routed.rollout_id,
                weight_bp=routed.weight_bp,
                routing_key=request.routing_key if request else None,
                topic=self.catalogue.preflight_results,
                headers=((h.PREFLIGHT, routed.preflight.encode()),),
            )
        return AnswerTo(
            request.request_id if request else "",
            model=self.options.model,
            version=self.options.version,
            arm=routed.arm if routed else Arm.STABLE,
            served=routed.served if routed else True,
            rollout_id=routed.rollout_id if routed else None,
            weight_bp=routed.weight_bp if routed else 0,
            routing_key=request.routing_key if request else None,
        )

    def _refuse(self, out: TxnOutput, msg: Message, reason: str, detail: str) -> None:
        """Answer a request this worker cannot serve with an error result (when its id is
        known) and dead-letter it (also the loop's refusal for an input whose handling
        failed)."""
        meta = h.header_dict(h.as_list(msg.headers()))
        rid = meta.get(h.REQUEST_ID)
        answer = None
        replayed = msg.topic() == self.preflight_topic
        try:
            routed: _Routed | None = _Routed.from_headers(meta, preflight=replayed)
        except DecodeError:
            routed = None
        if routed is None and replayed:
            # A replayed request is never answered on the live results topics.
            preflight = meta.get(h.PREFLIGHT) or "unknown"
            routed = _Routed(
                Arm.STABLE, None, 0, False, None, False, at_least_once=False, preflight=preflight
            )
        if rid:
            answer = replace(self._answer_to(None, routed), request_id=rid)
        at_least_once = routed is not None and routed.at_least_once
        self.refusals.refuse(out, msg, reason, detail, answer=answer, at_least_once=at_least_once)
        if routed is not None:
            # Routed and not run: it still counts for the second's completeness.
            second = (routed.routed_at_ms or int(time.time() * 1000)) // 1000
            cell = self._cell(routed, second)
            if cell is not None:
                self.evidence.add_refused(cell)


class _Batch:
    """One micro-batch's items in a rollout, for the served evidence; ``state``: the model's
    rollout state while the batch is handled (it changes only between batches)."""

    __slots__ = (
        "buckets",
        "cells",
        "errors",
        "latencies",
        "plan",
        "state",
        "state_thresholds",
        "thresholds",
    )

    def __init__(self, state: RolloutState | None) -> None:
        self.state = state
        #: The state's latency thresholds, for items of its rollout.
        self.state_thresholds = _thresholds(state)
        #: The state's plan when it compares ground truth (its answers' predictions are
        #: published for the label joiner), else None.
        plan = plan_of(state) if state is not None else None
        self.plan = plan if plan is not None and labelled_metrics(plan) else None
        self.cells: list[Cell] = []
        self.buckets: list[int] = []
        self.errors: list[bool] = []
        self.latencies: list[float] = []
        self.thresholds: list[Thresholds | None] = []


def _thresholds(state: RolloutState | None) -> Thresholds | None:
    """The rollout's latency thresholds, once the evaluator has fixed them."""
    if state is None or not state.latency_thresholds_ms:
        return None
    t = state.latency_thresholds_ms
    return Thresholds(state.revision, float(t.get("p95", math.inf)), float(t.get("p99", math.inf)))


def _text(raw: str | bytes | None) -> str | None:
    """A header value as text (as h.header_dict has it); None when absent or without a value
    (every header read here means the same either way)."""
    return None if raw is None else h.header_text(raw)
