"""Turn a verdict into what goes on the control topic: the evidence record and the command."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from confluent_kafka import Producer

from model_canary.agents.kafka.clients import new_producer
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.enums import Action, Mode, Outcome, Phase
from model_canary.streams.messages import (
    ControlCommand,
    Decision,
    OffsetRange,
    RolloutState,
    utc_now,
)
from model_canary.streams.settings import Settings
from model_canary.streams.signing import sign_if_keyed
from model_canary.streams.stats import Verdict
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)

# HOLD codes that put the rollout in the Holding phase (the others are ordinary waiting).
HOLDING_CODES = frozenset({"sample-ratio-mismatch", "max-duration-exceeded"})


@dataclass(frozen=True, slots=True)
class Emitted:
    decision: Decision
    command: ControlCommand | None


class DecisionSink:
    """Publishes decisions and the evaluator's commands to the control topic.

    Each command carries the state revision it was decided on (``expected_revision``): the
    controller rejects it if the state moved meanwhile, so a decision is never applied twice
    (after a restart) nor over an operator's newer command. Commands are signed with the
    settings' control key when one is configured, and so are the decision records (the key must
    sign for ``evaluator``), so history and the controller can tell a forged one.
    """

    def __init__(self, settings: Settings) -> None:
        self.catalogue = TopicCatalogue(settings.topic_prefix)
        self._settings = settings
        self._producer: Producer | None = None
        self._decisions = codec_for(Decision)
        self._commands = codec_for(ControlCommand)

    def emit(self, state: RolloutState, verdict: Verdict, offsets: dict[str, list[int]]) -> Emitted:
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
                OffsetRange(
                    topic=k.rsplit(":", 1)[0],
                    partition=int(k.rsplit(":", 1)[1]),
                    first=v[0],
                    last=v[1],
                )
                for k, v in sorted(offsets.items())
            ),
        )
        decision = sign_if_keyed(decision, self._settings.control_keys)  # evidence, signed too
        action = _ACTIONS.get(verdict.outcome)
        if state.mode is Mode.SHADOW and verdict.outcome in (Outcome.ADVANCE, Outcome.FINALIZE):
            # A shadow rollout has no steps: the evaluator stops a harmful shadow, but going
            # live (a canary rollout) is the operator's call, informed by this decision.
            action = None
        if verdict.outcome is Outcome.HOLD:
            action = (
                Action.HOLD
                if verdict.code in HOLDING_CODES and state.phase is not Phase.HOLDING
                else None
            )
        command = None
        if action is not None:
            command = sign_if_keyed(
                ControlCommand(
                    command_id=uuid.uuid4().hex,
                    model=state.model,
                    action=action,
                    issued_by="evaluator",
                    issued_at=now,
                    reason=decision.reason,
                    expected_revision=state.revision,
                ),
                self._settings.control_keys,
            )
        producer = self._open()
        key = state.model.encode()
        producer.produce(self.catalogue.control, self._decisions.encode(decision), key=key)
        if command is not None:
            producer.produce(self.catalogue.control, self._commands.encode(command), key=key)
        producer.flush(10)
        log.info(
            "%s %s at %g%%: %s",
            state.model,
            verdict.outcome.value,
            state.weight_bp / 100,
            decision.reason,
        )
        return Emitted(decision, command)

    def _open(self) -> Producer:
        if self._producer is None:
            self._producer = new_producer(self._settings, "canary-evaluator")
        return self._producer


_ACTIONS = {
    Outcome.ADVANCE: Action.ADVANCE,
    Outcome.ROLLBACK: Action.ROLLBACK,
    Outcome.FINALIZE: Action.FINALIZE,
}
