"""Pre-flight records on the compacted preflights topic: publish one, read them back.

>>> # publish(settings, record); records(settings)["pf-iris-v2-..."].status
"""

from __future__ import annotations

from confluent_kafka import KafkaError, Message

from model_canary.agents.audit.reader import RangeReader
from model_canary.agents.kafka.clients import new_producer, produce
from model_canary.agents.kafka.errors import wrap
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.errors import DecodeError, KafkaOperationError
from model_canary.streams.messages import Preflight
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue


def publish(settings: Settings, record: Preflight, timeout: float = 30.0) -> None:
    """Write ``record`` (keyed by its id) and wait until the broker has it."""
    topic = TopicCatalogue(settings.topic_prefix, settings.partitions).preflights
    producer = new_producer(settings, "canary-preflight-record")
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _msg: Message) -> None:
        if error is not None:
            failures.append(error)

    value = codec_for(Preflight).encode(record)
    produce(producer, topic, value, record.preflight_id.encode(), on_delivery=delivered)
    left = producer.flush(timeout)
    if failures:
        raise wrap(f"write pre-flight {record.preflight_id} to {topic}", failures[0])
    if left:
        raise KafkaOperationError(
            f"write pre-flight {record.preflight_id}", "_MSG_TIMED_OUT", f"not sent in {timeout:g}s"
        )


def records(settings: Settings) -> dict[str, Preflight]:
    """Every pre-flight's latest committed record, by id (unreadable records are skipped)."""
    topic = TopicCatalogue(settings.topic_prefix, settings.partitions).preflights
    codec = codec_for(Preflight)
    out: dict[str, Preflight] = {}

    def take(msg: Message) -> None:
        try:
            record = codec.decode(msg.value() or b"")
        except DecodeError:
            return
        out[record.preflight_id] = record

    reader = RangeReader(settings, "canary-preflight-records")
    try:
        reader.read(reader.starts([topic], None), reader.ends([topic]), take)
    finally:
        reader.close()
    return out
