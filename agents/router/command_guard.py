"""The controller's gate for control commands: signature, age and replay checks.

With a key ring configured (``CANARY_CONTROL_KEY``/``CANARY_CONTROL_KEY_FILE``) a command passes
only if :class:`~model_canary.streams.signing.Verifier` accepts it. Without one every command
passes, as before commands were signed, and the controller says so once at start.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from model_canary.agents.kafka.clients import consume, new_reader
from model_canary.agents.kafka.errors import wrap
from model_canary.streams import headers as h
from model_canary.streams.accounting import position_id
from model_canary.streams.codec.avro import decode_any
from model_canary.streams.codec.json_records import decode_json, is_json
from model_canary.streams.errors import DecodeError, KafkaOperationError
from model_canary.streams.messages import ControlCommand, Record, epoch_ms, from_epoch_ms, utc_now
from model_canary.streams.settings import Settings
from model_canary.streams.signing import DEFAULT_WINDOW, Rejection, Signed, Verifier

log = logging.getLogger(__name__)


def control_record(msg: Message) -> Record:
    """The record a control-topic message holds: Avro (a command or a decision), or a JSON
    command (``content-type: application/json``). A JSON command may leave out its id (then
    it is where it was written) and its time (then when it was written), unless it is signed:
    the signature covers both. Raises only :class:`DecodeError` subclasses."""
    value = msg.value() or b""
    if not is_json(h.header_dict(h.as_list(msg.headers())).get(h.CONTENT_TYPE)):
        return decode_any(value)
    kind, when = msg.timestamp()
    issued_at = from_epoch_ms(when) if kind and when > 0 else utc_now()
    where = position_id(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
    return decode_json(
        ControlCommand, value, defaults={"command_id": where, "issued_at": issued_at}
    )


class CommandGuard:
    """``guard.check(command, msg, now)`` -> ``None`` (apply it) or a :class:`Rejection`.

    >>> # guard = CommandGuard(settings, "canary.control", "canary-controller-replay-r1")
    >>> # guard.catch_up(); guard.check(command, msg, utc_now())
    """

    def __init__(
        self, settings: Settings, topic: str, client_id: str, window: timedelta = DEFAULT_WINDOW
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._client_id = client_id
        ring = settings.control_keys
        self.verifier = Verifier(ring, window) if ring else None
        if self.verifier is None:
            log.warning(
                "no control key configured (CANARY_CONTROL_KEY or CANARY_CONTROL_KEY_FILE): "
                "control commands are NOT authenticated; anyone who can write to %s can move "
                "traffic",
                topic,
            )
        else:
            log.info("control commands must be signed by one of the keys %s", ring.key_ids)

    def authentic(self, record: Signed) -> Rejection | None:
        """A decision record's (or command's) signature and issuer only; ``None`` when they
        hold or no key ring is configured."""
        return None if self.verifier is None else self.verifier.authentic(record)

    def check(self, command: ControlCommand, msg: Message, now: datetime) -> Rejection | None:
        if self.verifier is None:
            return None
        return self.verifier.verify(command, now, (msg.partition(), msg.offset()))

    def catch_up(self, timeout: float = 30.0) -> int:
        """Remember the authentic commands already on the control topic; returns how many.

        The replay cache lives in memory, so after a restart or a takeover it is rebuilt from
        the log. Only recent commands matter: one issued more than a window ago is refused as
        stale anyway. A command accepted now was issued at most a window ago, and its first
        copy was written after it was issued (Kafka's CreateTime comes from the signer's own
        clock, read after signing), so reading from two windows back covers it even when the
        topic uses the broker's LogAppendTime and the signer's clock runs a window ahead.
        Remembering where each command was read keeps a redelivery of the same message (its
        offset was not committed) from counting as a replay.
        """
        if self.verifier is None:
            return 0
        since = epoch_ms(utc_now() - 2 * self.verifier.window)
        consumer = new_reader(self._settings, self._client_id, **{"enable.partition.eof": False})
        try:
            return self._read(consumer, since, time.monotonic() + timeout)
        except KafkaException as exc:
            raise wrap(f"re-read recent commands of {self._topic}", exc) from None
        finally:
            consumer.close()

    def _read(self, consumer: Consumer, since_ms: int, deadline: float) -> int:
        meta = consumer.list_topics(self._topic, timeout=10).topics.get(self._topic)
        if meta is None or meta.error is not None:
            raise KafkaOperationError("read", "UNKNOWN_TOPIC", f"no topic {self._topic}")
        wanted = [TopicPartition(self._topic, p, since_ms) for p in meta.partitions]
        starts = consumer.offsets_for_times(wanted, timeout=10)
        ends = {
            tp.partition: consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            for tp in starts
        }
        # offsets_for_times gives -1 when no message is that recent: nothing to read there.
        todo = [tp for tp in starts if 0 <= tp.offset < ends[tp.partition]]
        consumer.assign(todo)
        remembered = 0
        while todo:
            if time.monotonic() > deadline:
                raise KafkaOperationError(
                    "re-read recent commands",
                    "TIMED_OUT",
                    f"{self._topic} was not read to its end in time; refusing to run without "
                    "replay protection",
                )
            for msg in consume(consumer, 500, 0.2):
                offset, partition = msg.offset(), msg.partition()
                if offset is None or partition is None:
                    continue
                if offset < ends[partition]:
                    remembered += self._remember(msg, partition, offset)
            todo = [tp for tp in consumer.position(todo) if tp.offset < ends[tp.partition]]
        log.info("%d recent signed commands remembered from %s", remembered, self._topic)
        return remembered

    def _remember(self, msg: Message, partition: int, offset: int) -> int:
        assert self.verifier is not None
        try:
            record = control_record(msg)
        except DecodeError:
            return 0
        if not isinstance(record, ControlCommand):
            return 0
        return int(self.verifier.remember(record, (partition, offset)))
