"""Read a topic from its current end, without a consumer group (for request/reply and tails)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from model_canary.agents.kafka.clients import new_reader
from model_canary.agents.kafka.errors import wrap
from model_canary.streams.errors import CanaryError, KafkaOperationError
from model_canary.streams.settings import Settings


def open_tail(
    settings: Settings,
    topic: str | Sequence[str],
    client_id: str,
    *,
    from_beginning: bool = False,
    timeout: float = 15.0,
    only: Callable[[int], Sequence[int]] | None = None,
) -> Consumer:
    """A consumer assigned to every partition of ``topic`` (one or several) at its end (or its
    beginning); ``only(partition_count)``, when given, picks the partitions of each topic to
    read instead of all.

    The end offsets are looked up now, so anything produced after this returns is seen.
    """
    consumer = new_reader(settings, client_id)
    start = time.monotonic()
    deadline = start + timeout
    # A topic created a moment ago may not be in this broker's metadata yet: a missing topic
    # is looked up again for a few seconds before it is reported.
    missing_deadline = start + min(timeout, MISSING_GRACE_S)
    while True:
        try:
            names = [topic] if isinstance(topic, str) else list(topic)
            assignment = [
                tp for t in names for tp in _assignment(consumer, t, from_beginning, only)
            ]
            break
        except _Missing:
            if time.monotonic() < missing_deadline:
                time.sleep(0.2)
                continue
            consumer.close()
            raise
        except (KafkaException, _NotReady) as exc:
            # A topic created a moment ago may not have a leader yet ("not leader for
            # partition" is not flagged retriable, but it passes within a second).
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            consumer.close()
            raise (exc if isinstance(exc, _NotReady) else wrap(f"open {topic}", exc)) from None
        except CanaryError:
            consumer.close()
            raise
    consumer.assign(assignment)
    return consumer


MISSING_GRACE_S = 3.0
"""How long a topic absent from the metadata is looked up again before it is reported."""


class _Missing(KafkaOperationError):
    """The topic is not in the metadata (not created, or created a moment ago)."""


class _NotReady(KafkaOperationError):
    """The topic's metadata carries an error (no leader yet, say): tried again until the
    deadline."""


def _assignment(
    consumer: Consumer,
    topic: str,
    from_beginning: bool,
    only: Callable[[int], Sequence[int]] | None,
) -> list[TopicPartition]:
    md = consumer.list_topics(topic, timeout=10)
    meta = md.topics.get(topic)
    if meta is None or not meta.partitions:
        raise _Missing(f"open {topic}", "RuntimeError", "no such topic: run 'canary topics create'")
    if meta.error is not None:
        raise _NotReady(f"open {topic}", meta.error.name(), meta.error.str())
    partitions = sorted(meta.partitions) if only is None else only(len(meta.partitions))
    assignment = []
    for p in partitions:
        offset = OFFSET_BEGINNING if from_beginning else end_offset(consumer, topic, p)
        assignment.append(TopicPartition(topic, p, offset))
    return assignment


def end_offset(consumer: Consumer, topic: str, partition: int) -> int:
    """Where ``topic[partition]`` ends now (its high watermark, asked of the broker)."""
    _low, high = consumer.get_watermark_offsets(
        TopicPartition(topic, partition), timeout=10, cached=False
    )
    return int(high)
