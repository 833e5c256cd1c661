"""The evaluator as a faust-streaming app.

* Two agents (concurrency 1, so offsets are never committed past an event in flight) read the
  metrics and feedback topics, both keyed by model, and keep their state in changelog-backed
  tables: ``aggregates`` (one :class:`~model_canary.streams.evaluation.Aggregate` per model) and
  ``predictions`` (request id -> what a later label is joined with, per arm: see
  :mod:`model_canary.agents.evaluator.labels`). With
  ``processing_guarantee="exactly_once"`` faust commits table changes and consumed offsets in
  one transaction, so a restarted evaluator resumes without counting anything twice.
* A timer decides on the clock, not only when events arrive: for every rollout whose
  aggregate this instance owns, it runs the decision rule and publishes the decision (with its
  evidence) and, where one is due, a command to the control topic.

No windowed tables are used (their close callbacks see raw per-key values and hopping windows
emit step-sized data); the evidence is cumulative per weight, which the sequential tests need.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any

import faust

from model_canary.agents import metrics
from model_canary.agents.evaluator.decisions import DecisionSink
from model_canary.agents.evaluator.labels import add_label, add_prediction
from model_canary.agents.evaluator.security import faust_credentials
from model_canary.agents.kafka.dead_letters import dead_letter_headers
from model_canary.agents.kafka.state_view import StateView
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.codec.json_records import decode_record
from model_canary.streams.enums import Arm, Mode, Phase
from model_canary.streams.errors import ConfigError, DecodeError
from model_canary.streams.evaluation import Aggregate, policy
from model_canary.streams.messages import Feedback, MetricEvent, RolloutState, epoch_ms, utc_now
from model_canary.streams.plan import RolloutPlan, parse_plan
from model_canary.streams.settings import Settings
from model_canary.streams.stats import decide
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)

AGENT = "evaluator"
DECIDING = frozenset({Phase.PROGRESSING, Phase.HOLDING, Phase.PROMOTING})
PENDING_TIMEOUT_S = 30.0


def broker_urls(settings: Settings) -> list[str]:
    return [f"kafka://{host.strip()}" for host in settings.bootstrap_servers.split(",")]


def build_app(settings: Settings, *, interval_s: float = 1.0) -> faust.App:
    """The evaluator app for ``settings`` (nothing connects until the worker starts)."""
    catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
    # faust's data folder, under the state folder rather than the working directory.
    datadir = settings.state_dir / "evaluator" / f"{settings.topic_prefix}-evaluator"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.topic_prefix}-evaluator",
        broker=broker_urls(settings),
        broker_credentials=faust_credentials(settings.extra_config),
        processing_guarantee="exactly_once",
        store="memory://",
        topic_partitions=settings.partitions,
        table_standby_replicas=0,
        broker_commit_interval=0.5,
        # A crashed instance's partitions move to the others (or to its restart) after this.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        web_enabled=False,
        datadir=str(datadir),
        # Tables hold JSON under text keys; the source topics carry our Avro bytes.
        value_serializer="json",
        key_serializer="json",
        consumer_auto_offset_reset="earliest",
    )
    metrics_topic = app.topic(catalogue.metrics, value_serializer="raw", key_serializer="raw")
    feedback_topic = app.topic(catalogue.feedback, value_serializer="raw", key_serializer="raw")
    dead_letters = app.topic(catalogue.dead_letters, value_serializer="raw", key_serializer="raw")
    aggregates = app.Table("aggregates")
    predictions = app.Table("predictions")
    brain = Evaluator(settings)

    @app.agent(metrics_topic, concurrency=1)
    async def on_metrics(stream: Any) -> None:
        async for event in stream.events():
            try:
                brain.on_metric(event.value, event.message, aggregates, predictions)
            except DecodeError as exc:
                await _dead_letter(dead_letters, event.message, exc.reason, str(exc))
            except Exception as exc:  # never stop on input
                log.exception("metric event at offset %s failed", event.message.offset)
                await _dead_letter(dead_letters, event.message, "internal-error", _text(exc))

    @app.agent(feedback_topic, concurrency=1)
    async def on_feedback(stream: Any) -> None:
        async for event in stream.events():
            try:
                content_type = h.header_dict(h.as_list(event.headers)).get(h.CONTENT_TYPE)
                brain.on_feedback(event.value, aggregates, predictions, content_type)
            except DecodeError as exc:
                await _dead_letter(dead_letters, event.message, exc.reason, str(exc))
            except Exception as exc:
                log.exception("feedback at offset %s failed", event.message.offset)
                await _dead_letter(dead_letters, event.message, "internal-error", _text(exc))

    @app.timer(interval=interval_s)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        try:
            brain.tick(aggregates)
        except Exception:
            log.exception("evaluation failed")

    return app


class Evaluator:
    """The evaluator's logic between faust and the pure decision rule."""

    def __init__(self, settings: Settings) -> None:
        self.view = StateView(settings, client_id="canary-evaluator-state")
        self.sink = DecisionSink(settings)
        self._metric = codec_for(MetricEvent)
        self._caught_up = False
        self._pending: dict[str, tuple[int, float]] = {}  # model -> (revision, sent at)
        self._last_said: dict[str, str] = {}  # model -> last verdict that moved nothing

    def _state(self, model: str, rollout_id: str | None = None) -> RolloutState | None:
        if not self._caught_up:
            self.view.catch_up(timeout=10)
            self._caught_up = True
        state = self.view.get(model)
        if state is None or (rollout_id is not None and state.rollout_id != rollout_id):
            # The event may be newer than our view of the state: read what has arrived.
            self.view.poll(0.05)
            state = self.view.get(model)
        return state

    def on_metric(self, value: bytes, message: Any, aggregates: Any, predictions: Any) -> None:
        """Count a metric event; :class:`DecodeError` if it is unreadable."""
        event = self._metric.decode(value)
        if event.rollout_id is None or event.arm is Arm.STABLE:
            return
        state = self._state(event.model, event.rollout_id)
        if state is None or state.rollout_id != event.rollout_id:
            return
        if not event.served and state.mode is not Mode.SHADOW:
            return  # a canary answer not served outside shadow mode: nothing to compare
        plan = plan_of(state)
        agg = _aggregate(aggregates, event.model, event.rollout_id)
        keep = agg.record(event, state, plan)
        agg.seen(message.topic, message.partition, message.offset)
        if keep and "accuracy" in plan.metrics:
            entry = [
                event.rollout_id,
                event.arm is Arm.CANARY,
                event.weight_bp,
                event.prediction,
                epoch_ms(event.routed_at),
            ]
            arm = "canary" if event.arm is Arm.CANARY else "baseline"
            for waiting, label in add_prediction(predictions, event.request_id, arm, entry):
                _join(agg, waiting, label)  # the label came first
        aggregates[event.model] = agg.to_json()
        _export(event.model, agg)

    def on_feedback(
        self, value: bytes, aggregates: Any, predictions: Any, content_type: str | None = None
    ) -> None:
        """Join a label (Avro, or JSON with its content type) with its prediction;
        :class:`DecodeError` if it is unreadable."""
        fb = decode_record(Feedback, value, content_type, defaults={"observed_at": utc_now()})
        if not fb.label:
            return  # a value or attributes only: no class label to judge accuracy by
        joined = add_label(predictions, fb.request_id, fb.label)
        raw = aggregates.get(fb.model)
        if not joined or raw is None:
            return  # no prediction yet (it will join the label), or a duplicate label
        agg = Aggregate.from_json(raw)
        # In shadow mode both arms' predictions of the request wait for this label.
        current = [(entry, label) for entry, label in joined if entry[0] == raw["rollout_id"]]
        for entry, label in current:
            _join(agg, entry, label)
        if current:
            aggregates[fb.model] = agg.to_json()
            _export(fb.model, agg)

    def tick(self, aggregates: Any) -> None:
        if not self._caught_up:
            self._state("")
        self.view.poll(0)
        for key, raw in list(aggregates.items()):
            model = str(key)
            state = self.view.get(model)
            if state is None or state.rollout_id != raw["rollout_id"]:
                continue
            for phase in Phase:
                metrics.PHASE.labels(model, phase.value).set(1 if phase is state.phase else 0)
            if state.phase not in DECIDING:
                continue
            pending = self._pending.get(model)
            if (
                pending
                and pending[0] == state.revision
                and time.monotonic() - pending[1] < PENDING_TIMEOUT_S
            ):
                continue  # our command for this revision is not applied yet
            agg = Aggregate.from_json(raw)
            _export(model, agg)
            plan = plan_of(state)
            verdict = decide(agg.snapshot(state, plan, utc_now()), policy(plan))
            for e in verdict.evidence:
                metrics.TEST_STATISTIC.labels(model, e.metric).set(e.statistic)
            # The same verdict on the same state is published once when it moves nothing (a
            # HOLD, or a shadow's "no harm" ADVANCE); one with a command is retried by the
            # pending timeout above.
            said = f"{state.revision}:{verdict.outcome.value}:{verdict.code}"
            if self._last_said.get(model) == said:
                continue
            emitted = self.sink.emit(state, verdict, agg.offsets)
            metrics.DECISIONS.labels(verdict.outcome.value).inc()
            if emitted.command is not None:
                self._pending[model] = (state.revision, time.monotonic())
                self._last_said.pop(model, None)
            else:
                self._last_said[model] = said


async def _dead_letter(topic: Any, message: Any, reason: str, detail: str) -> None:
    """Keep an event the evaluator cannot use on the dead-letter topic, as the other agents do
    (sent inside faust's transaction for the event)."""
    log.warning("dead letter from %s@%s: %s: %s", message.topic, message.offset, reason, detail)
    source = (message.topic, message.partition, message.offset)
    headers = dead_letter_headers(
        message.headers, source, agent=AGENT, reason=reason, detail=detail
    )
    await topic.send(key=message.key, value=message.value, headers=headers)


def _text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def plan_of(state: RolloutState) -> RolloutPlan:
    """The rollout's plan (from the start command), or the defaults."""
    if state.plan_json:
        try:
            return _stored_plan(state.plan_json)
        except ConfigError as exc:
            log.warning("unreadable plan for %s, using defaults: %s", state.model, exc)
    try:
        return parse_plan({"model": state.model, "canary": state.canary_version or "unknown"})
    except ConfigError:
        return RolloutPlan(model=state.model, baseline=None, canary="unknown")


@lru_cache(maxsize=64)
def _stored_plan(text: str) -> RolloutPlan:
    # Every metric event needs its rollout's plan: parse each stored plan once, not per event
    # (plans are frozen, so sharing one is safe; a parse error is raised again every time).
    return RolloutPlan.from_json(text)


def _aggregate(aggregates: Any, model: str, rollout_id: str) -> Aggregate:
    raw = aggregates.get(model)
    if raw is None or raw.get("rollout_id") != rollout_id:
        return Aggregate.new(rollout_id)
    return Aggregate.from_json(raw)


def _join(agg: Aggregate, entry: list[Any], label: str) -> None:
    _rollout, canary, weight_bp, prediction, routed_ms = entry
    agg.label(
        weight_bp=int(weight_bp),
        canary=bool(canary),
        correct=str(prediction) == label,
        this_step=routed_ms >= agg.step_key,
    )


def _export(model: str, agg: Aggregate) -> None:
    for metric, by_weight in agg.counts.items():
        for arm, col in (("canary", 0), ("baseline", 1)):
            metrics.EVALUATED.labels(model, metric, arm).set(
                sum(r[col] for r in by_weight.values())
            )
            metrics.BAD_EVENTS.labels(model, metric, arm).set(
                sum(r[col + 2] for r in by_weight.values())
            )
