"""What goes on the control topic: the evaluator's decisions (with their evidence) and its
commands.

Each command carries the state revision it was decided on (``expected_revision``): the
controller rejects it if the state moved meanwhile, so a decision is never applied twice
(after a restart) nor over an operator's newer command. Commands are signed with the
settings' control key when one is configured, and so are the decision records (the key must
sign for ``evaluator``), so history and the controller can tell a forged one.
:meth:`DecisionSink.publish` blocks (it waits for the broker): call it off the event loop.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Producer

from model_canary.agents.kafka.clients import new_producer
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.enums import Action
from model_canary.streams.messages import (
    ControlCommand,
    Decision,
    OffsetRange,
    RolloutState,
    utc_now,
)
from model_canary.streams.settings import Settings
from model_canary.streams.signing import sign_if_keyed
from model_canary.streams.stats import Verdict, action_for
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Emitted:
    """A decision and the command it asks for (if any), to publish together."""

    decision: Decision | None
    command: ControlCommand | None


class DecisionSink:
    """Builds and publishes decisions and the evaluator's commands (see the module)."""

    def __init__(self, settings: Settings) -> None:
        self.catalogue = TopicCatalogue(settings.topic_prefix)
        self._settings = settings
        self._producer: Producer | None = None
        self._decisions = codec_for(Decision)
        self._commands = codec_for(ControlCommand)

    def decision(
        self, state: RolloutState, verdict: Verdict, offsets: Mapping[int, list[int]]
    ) -> Emitted:
        """The decision record for ``verdict`` (citing the evidence ``offsets`` it rests on:
        evidence partition -> [first, last]) and the command it asks for."""
        now = utc_now()
        decision = Decision(
            decision_id=uuid.uuid4().hex,
            model=state.model,
            rollout_id=state.rollout_id,
            outcome=verdict.outcome,
            step_index=state.step_index,
            weight_bp=state.weight_bp,
            reason=f"{verdict.code}: {verdict.reason}",
            decided_at=now,
            evidence=verdict.evidence,
            offsets=tuple(
                OffsetRange(topic=self.catalogue.evidence, partition=p, first=span[0], last=span[1])
                for p, span in sorted(offsets.items())
            ),
        )
        decision = sign_if_keyed(decision, self._settings.control_keys)  # evidence, signed too
        action = action_for(verdict.outcome, verdict.code, state.mode, state.phase)
        command = None if action is None else self._command(state, action, decision.reason)
        return Emitted(decision, command)

    def thresholds(self, state: RolloutState, thresholds: Mapping[str, float]) -> Emitted:
        """The command fixing the rollout's latency thresholds."""
        text = ", ".join(f"{k} {v:.3g} ms" for k, v in sorted(thresholds.items()))
        command = self._command(
            state,
            Action.SET_THRESHOLDS,
            f"latency thresholds from the baseline's first answers: {text}",
            latency_thresholds_ms=dict(thresholds),
        )
        return Emitted(None, command)

    def _command(
        self, state: RolloutState, action: Action, reason: str, **fields: object
    ) -> ControlCommand:
        return sign_if_keyed(
            ControlCommand(
                command_id=uuid.uuid4().hex,
                model=state.model,
                action=action,
                issued_by="evaluator",
                issued_at=utc_now(),
                reason=reason,
                expected_revision=state.revision,
                **fields,  # type: ignore[arg-type]
            ),
            self._settings.control_keys,
        )

    def publish(self, emitted: Emitted) -> None:
        """Send the decision and the command, and wait until the broker has them."""
        producer = self._open()
        if emitted.decision is not None:
            d = emitted.decision
            producer.produce(
                self.catalogue.control, self._decisions.encode(d), key=d.model.encode()
            )
            log.info("%s %s at %g%%: %s", d.model, d.outcome.value, d.weight_bp / 100, d.reason)
        if emitted.command is not None:
            c = emitted.command
            producer.produce(self.catalogue.control, self._commands.encode(c), key=c.model.encode())
        left = producer.flush(10)
        if left:
            log.warning("%d control record(s) not delivered within 10 s; will retry", left)

    def emit(
        self, state: RolloutState, verdict: Verdict, offsets: Mapping[int, list[int]]
    ) -> Emitted:
        """Build and publish at once (for callers off the event loop)."""
        emitted = self.decision(state, verdict, offsets)
        self.publish(emitted)
        return emitted

    def _open(self) -> Producer:
        if self._producer is None:
            self._producer = new_producer(self._settings, "canary-evaluator")
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
