"""Send control commands and learn whether the controller applied or rejected them."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer

from model_canary.agents.client.tail import open_tail
from model_canary.agents.kafka.clients import LazyProducer, consume
from model_canary.agents.kafka.errors import produce_confirmed
from model_canary.agents.kafka.state_view import StateView
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.codec.json_records import decode_record
from model_canary.streams.errors import (
    CommandRejectedError,
    ConfigError,
    DecodeError,
    RequestTimeoutError,
)
from model_canary.streams.messages import (
    Action,
    ControlCommand,
    ControlEvent,
    RolloutState,
    utc_now,
)
from model_canary.streams.settings import Settings
from model_canary.streams.signing import sign_if_keyed
from model_canary.streams.topics import TopicCatalogue


@dataclass(frozen=True, slots=True)
class ControlOutcome:
    """What became of a command: ``applied`` (with the new phase and weight) or ``rejected``."""

    command: ControlCommand
    event: ControlEvent

    @property
    def applied(self) -> bool:
        return self.event.outcome == "applied"


#: CLI command names that differ from the action they send.
CLI_ACTIONS = {"promote": Action.ADVANCE}


def action_named(name: str | Action) -> Action:
    """The action a name stands for, spelled as in records or as on the command line.

    >>> action_named("set-weight"), action_named("promote"), action_named(Action.PAUSE)
    (<Action.SET_WEIGHT: 'set_weight'>, <Action.ADVANCE: 'advance'>, <Action.PAUSE: 'pause'>)
    """
    if isinstance(name, Action):
        return name
    key = name.strip().lower()
    if key in CLI_ACTIONS:
        return CLI_ACTIONS[key]
    try:
        return Action(key.replace("-", "_"))
    except ValueError:
        known = ", ".join(a.value.replace("_", "-") for a in Action)
        raise ConfigError(f"unknown action {name!r}; one of {known}") from None


class ControlClient:
    """Operators' and the evaluator's way to move traffic.

    Commands are signed with the settings' control key (the first of ``control_keys``) when
    one is configured, and issued by that key's principal unless ``issued_by`` says; a router
    with keys refuses unsigned ones, and ones issued by someone the key may not sign for.

    >>> control = ControlClient(Settings(bootstrap="localhost:9092"))
    >>> # control.send("iris", "start", baseline_version="v1", canary_version="v2")
    """

    def __init__(self, settings: Settings | None = None, *, issued_by: str | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.catalogue = TopicCatalogue(self.settings.topic_prefix)
        # A key signs only for its principals: by default, commands are issued by the signing
        # key's principal (its id unless the key file says otherwise).
        signer = self.settings.control_keys.signer
        self.issued_by = issued_by or (signer.principal if signer else "operator")
        self._producer = LazyProducer(self.settings, "canary-control")
        self._command_codec = codec_for(ControlCommand)

    def command(self, model: str, action: str | Action, **fields: Any) -> ControlCommand:
        """Build a command with a fresh id and the current time; ``action`` as the record
        spells it (``set_weight``) or as the CLI does (``set-weight``, ``promote``)."""
        return ControlCommand(
            command_id=uuid.uuid4().hex,
            model=model,
            action=action_named(action),
            issued_by=self.issued_by,
            issued_at=utc_now(),
            **fields,
        )

    def publish(self, command: ControlCommand) -> ControlCommand:
        """Produce the command to the control topic and wait until the broker has it (a refused
        write raises :class:`~model_canary.streams.errors.KafkaOperationError`); returns it as sent.

        An unsigned command is signed first when the settings hold a control key.
        """
        command = sign_if_keyed(command, self.settings.control_keys)
        produce_confirmed(
            self._producer.producer,
            f"publish {command.action.value} to {self.catalogue.control}",
            self.catalogue.control,
            self._command_codec.encode(command),
            key=command.model.encode(),
        )
        return command

    def send(
        self, model: str, action: str, *, wait: float = 30.0, check: bool = True, **fields: Any
    ) -> ControlOutcome:
        """Send a command and wait up to ``wait`` seconds for the controller's verdict.

        Raises :class:`CommandRejectedError` on rejection when ``check`` is true, and
        :class:`RequestTimeoutError` when no controller answered (is a router running?).
        """
        return self.submit(self.command(model, action, **fields), wait=wait, check=check)

    def submit(
        self, command: ControlCommand, *, wait: float = 30.0, check: bool = True
    ) -> ControlOutcome:
        """Publish a command built beforehand and wait for the verdict, like :meth:`send`."""
        events = open_tail(self.settings, self.catalogue.events, "canary-control-events")
        try:
            command = self.publish(command)
            outcome = self._await(events, command, wait)
        finally:
            events.close()
        if check and not outcome.applied:
            e = outcome.event
            raise CommandRejectedError(
                e.reason,
                f"{e.action} for {e.model!r} rejected ({e.reason}): {e.detail}",
                command=outcome.command,
                event=e,
            )
        return outcome

    def _await(self, events: Consumer, command: ControlCommand, wait: float) -> ControlOutcome:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for msg in consume(events, 100, 0.2):
                try:
                    meta = h.header_dict(h.as_list(msg.headers()))
                    event = decode_record(ControlEvent, msg.value(), meta.get(h.CONTENT_TYPE))
                except DecodeError:
                    continue
                if event.command_id == command.command_id:
                    return ControlOutcome(command, event)
        raise RequestTimeoutError(
            f"no controller answered {command.action.value} for {command.model!r} within "
            f"{wait:g}s: is a router running ('canary router')?"
        )

    def state(self, model: str) -> RolloutState | None:
        """The model's current rollout state, read from the rollout-state topic."""
        view = StateView(self.settings, client_id="canary-control-state")
        try:
            view.catch_up(timeout=10)
            return view.get(model)
        finally:
            view.close()
