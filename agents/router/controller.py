"""The controller: applies control commands to rollout states, exactly once.

Every router process runs one, but the control topic has a single partition consumed by one
consumer group, so exactly one instance applies commands at a time; the others take over on
rebalance. A command and its effects (the new state on the compacted rollout-state topic and
an event on the events topic) commit in one transaction with the command's offset. When a
control key is configured, only signed, recent, never-seen commands are applied (see
:mod:`model_canary.agents.router.command_guard`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from confluent_kafka import Message

from model_canary.agents import metrics
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.kafka.dead_letters import dead_letter
from model_canary.agents.kafka.eos import ExactlyOnceLoop, LoopConfig, TxnHooks, TxnOutput
from model_canary.agents.kafka.state_view import StateView
from model_canary.agents.router.command_guard import CommandGuard, control_record
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.codec.json_records import encode_json, is_json
from model_canary.streams.errors import CanaryError, DecodeError
from model_canary.streams.messages import (
    Action,
    ControlCommand,
    ControlEvent,
    Decision,
    RolloutState,
    utc_now,
)
from model_canary.streams.rollout import CommandRejectedError, apply_command
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)

AGENT = "controller"


class Controller:
    """Consume the control topic and apply each command."""

    def __init__(self, settings: Settings, instance: str) -> None:
        self.settings = settings
        self.catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
        self.view = StateView(settings, client_id=f"canary-controller-state-{instance}")
        self.admin = Admin(settings)
        self._state_codec = codec_for(RolloutState)
        self._event_codec = codec_for(ControlEvent)
        prefix = settings.topic_prefix
        self.loop = ExactlyOnceLoop(
            settings,
            LoopConfig(
                agent=AGENT,
                group_id=f"{prefix}.controller",
                topics=(self.catalogue.control,),
                transactional_id=f"{prefix}.controller.{instance}",
                max_batch=100,
                commit=settings.commit_policy,
            ),
            self.handle,
            refuse=self._refuse_input,
            # A state written in an aborted transaction was never written: the commands
            # behind it are read again and must apply to the state before it.
            hooks=TxnHooks(after_commit=self.view.commit_local, on_abort=self.view.rollback_local),
        )
        self._caught_up = -1  # the assignment generation the view was caught up for
        self.guard = CommandGuard(
            settings, self.catalogue.control, client_id=f"canary-controller-replay-{instance}"
        )

    def handle(self, batch: Sequence[Message], out: TxnOutput) -> None:
        if self._caught_up != self.loop.assignments:
            # After every (re)assignment: read the states committed by whichever instance
            # owned the control partition before, so commands apply to the latest state.
            self.view.catch_up()
            self.guard.catch_up()
            self._caught_up = self.loop.assignments
        # Anything that raises here aborts the transaction; the loop then refuses the message
        # it was on (out.source: a rejection event and a dead letter) and handles the rest again.
        for msg in batch:
            out.source = msg
            self._handle_one(msg, out)

    def _refuse_input(self, out: TxnOutput, msg: Message, reason: str, detail: str) -> None:
        self._reject(out, None, reason, detail, msg)

    def _handle_one(self, msg: Message, out: TxnOutput) -> None:
        as_json = is_json(h.header_dict(h.as_list(msg.headers())).get(h.CONTENT_TYPE))
        try:
            record = control_record(msg)
        except DecodeError as exc:
            self._reject(out, None, exc.reason, str(exc), msg, as_json=as_json)
            return
        if isinstance(record, Decision):
            # The evaluator's evidence record, kept on the topic for audit and history: it moves
            # nothing, but a forged one is said so where history shows it.
            self._check_decision(out, record, msg)
            return
        if not isinstance(record, ControlCommand):
            self._reject(
                out,
                None,
                "invalid-command",
                f"a {type(record).__name__} is not a control command",
                msg,
            )
            return
        command = record
        now = utc_now()
        rejection = self.guard.check(command, msg, now)
        if rejection is not None:  # unsigned, forged, stale or replayed: nothing changes
            self._reject(out, command, rejection.reason, rejection.detail, msg, as_json=as_json)
            return
        state = self.view.get(command.model)
        try:
            new = apply_command(state, command, now)
            if command.action in (Action.REGISTER, Action.START):
                self._ensure_version_topics(new)
        except CommandRejectedError as rej:
            self._reject(out, command, rej.reason, str(rej), msg, as_json=as_json)
            return
        except CanaryError as exc:
            self._reject(out, command, "unavailable", str(exc), msg, as_json=as_json)
            return
        out.produce(
            self.catalogue.rollout_state, self._state_codec.encode(new), key=new.model.encode()
        )
        self.view.apply_local(new)
        self._event(out, command, "applied", "", f"phase {new.phase.value}", new, as_json=as_json)
        metrics.COMMANDS.labels(command.action.value, "applied").inc()
        metrics.WEIGHT.labels(new.model).set(new.weight_bp / 10_000)

    def _ensure_version_topics(self, state: RolloutState) -> None:
        versions = [v for v in (state.baseline_version, state.canary_version) if v]
        self.admin.ensure_topics(self.catalogue.version_specs(state.model, *versions))

    def _reject(
        self,
        out: TxnOutput,
        command: ControlCommand | None,
        reason: str,
        detail: str,
        msg: Message,
        *,
        as_json: bool = False,
    ) -> None:
        log.warning("rejected command at offset %s: %s: %s", msg.offset(), reason, detail)
        metrics.COMMANDS.labels(command.action.value if command else "unknown", "rejected").inc()
        if command is None:
            # Unreadable: keep the bytes for inspection too.
            dead_letter(
                out, self.catalogue.dead_letters, msg, agent=AGENT, reason=reason, detail=detail
            )
        self._event(out, command, "rejected", reason, detail, None, as_json=as_json)

    def _check_decision(self, out: TxnOutput, decision: Decision, msg: Message) -> None:
        rejection = self.guard.authentic(decision)
        if rejection is None:
            return
        log.warning(
            "decision record at offset %s is not authentic: %s: %s",
            msg.offset(),
            rejection.reason,
            rejection.detail,
        )
        metrics.COMMANDS.labels("decision", "rejected").inc()
        event = ControlEvent(
            event_id=uuid.uuid4().hex,
            model=decision.model,
            command_id=decision.decision_id,
            action="decision",
            issued_by="",
            outcome="rejected",
            reason=rejection.reason,
            detail=f"decision record {decision.outcome.value}: {rejection.detail}",
            revision=-1,
            at=utc_now(),
        )
        key = decision.model.encode() if decision.model else None
        out.produce(self.catalogue.events, self._event_codec.encode(event), key=key)

    def _event(
        self,
        out: TxnOutput,
        command: ControlCommand | None,
        outcome: str,
        reason: str,
        detail: str,
        state: RolloutState | None,
        *,
        as_json: bool = False,
    ) -> None:
        """The command's event; in JSON (with its content type) for a JSON command."""
        event = ControlEvent(
            event_id=uuid.uuid4().hex,
            model=command.model if command else "",
            command_id=command.command_id if command else "",
            action=command.action.value if command else "",
            issued_by=command.issued_by if command else "",
            outcome=outcome,
            reason=reason,
            detail=detail,
            revision=state.revision if state else -1,
            phase=state.phase.value if state else None,
            weight_bp=state.weight_bp if state else None,
            at=utc_now(),
        )
        key = event.model.encode() if event.model else None
        if as_json:
            headers: h.RawHeaders = [(h.CONTENT_TYPE, h.JSON.encode())]
            out.produce(self.catalogue.events, encode_json(event), key=key, headers=headers)
        else:
            out.produce(self.catalogue.events, self._event_codec.encode(event), key=key)
