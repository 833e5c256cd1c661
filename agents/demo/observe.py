"""Watch the demo's topics from their beginning (read_committed): every result (served and
shadow), every applied command and every evaluator decision, in a background thread.

>>> obs = Observer(Settings(), "iris", t0_ms=0, labels={})  # reads nothing until start()
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException

from model_canary.agents.client.tail import open_tail
from model_canary.agents.demo.events import DecisionRow, PhaseChange
from model_canary.agents.demo.summary import Sample
from model_canary.agents.kafka.clients import usable
from model_canary.streams.codec.avro import decode_any
from model_canary.streams.errors import DecodeError
from model_canary.streams.messages import ControlEvent, Decision, InferenceResult, epoch_ms
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)


class Observer:
    """Collects :class:`Sample` s, :class:`PhaseChange` s and :class:`DecisionRow` s for one
    model. ``labels`` maps request ids to true labels (read while the load runs). Lists only
    grow, so other threads may read them while it runs."""

    def __init__(
        self, settings: Settings, model: str, *, t0_ms: int, labels: Mapping[str, str | None]
    ) -> None:
        self.settings = settings
        self.model = model
        self.t0_ms = t0_ms
        self.labels = labels
        self.samples: list[Sample] = []
        self.served: Counter[str] = Counter()
        self.changes: list[PhaseChange] = []
        self.decisions: list[DecisionRow] = []
        self.phase = "Stable"
        self.weight_percent = 0.0
        self.step = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        catalogue = TopicCatalogue(self.settings.topic_prefix)
        topics = [catalogue.results, catalogue.shadow_results, catalogue.control, catalogue.events]
        consumer = open_tail(self.settings, topics, "canary-demo-observer", from_beginning=True)
        self._thread = threading.Thread(
            target=self._run, args=(consumer,), name="demo-observer", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                try:
                    msgs = consumer.consume(1000, timeout=0.2)
                except KafkaException as exc:
                    log.warning("observer: %s", exc)
                    continue
                for msg in msgs:
                    if usable(msg):
                        self._on(msg.value() or b"")
        finally:
            consumer.close()

    def _on(self, value: bytes) -> None:
        try:
            record = decode_any(value)
        except DecodeError:
            return  # not ours to judge: the agents dead-letter bad input
        if isinstance(record, InferenceResult) and record.model == self.model:
            self._result(record)
        elif isinstance(record, Decision) and record.model == self.model:
            self.decisions.append(
                DecisionRow(
                    t=self._t(epoch_ms(record.decided_at)),
                    outcome=record.outcome.value,
                    step=record.step_index,
                    weight_percent=record.weight_bp / 100,
                    reason=record.reason,
                    evidence=record.evidence,
                )
            )
        elif (
            isinstance(record, ControlEvent)
            and record.model == self.model
            and record.outcome == "applied"
        ):
            self.phase = record.phase or self.phase
            # A finalized rollout has weight 0 (no canary left): the new version is the
            # stable one and serves everything.
            done = self.phase == "Succeeded"
            self.weight_percent = 100.0 if done else (record.weight_bp or 0) / 100
            self.changes.append(
                PhaseChange(
                    t=self._t(epoch_ms(record.at)),
                    action=record.action,
                    issued_by=record.issued_by,
                    phase=self.phase,
                    weight_percent=self.weight_percent,
                    reason=record.reason,
                )
            )

    def _result(self, r: InferenceResult) -> None:
        if r.served:
            self.served[r.request_id] += 1
        prediction = None if r.error is not None else _prediction(r.outputs)
        label = self.labels.get(r.request_id)
        self.samples.append(
            Sample(
                t=self._t(epoch_ms(r.created_at)),
                request_id=r.request_id,
                version=r.version,
                arm=r.arm.value,
                served=r.served,
                error=r.error is not None,
                latency_ms=r.latency_ms,
                prediction=prediction,
                correct=None if label is None or prediction is None else prediction == label,
            )
        )

    def _t(self, at_ms: int) -> float:
        return (at_ms - self.t0_ms) / 1000


def _prediction(outputs: bytes) -> str | None:
    """The first value of the first output tensor of an OIP response, as text."""
    try:
        value = json.loads(outputs)["outputs"][0]["data"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return str(int(value)) if isinstance(value, int | float) else str(value)
