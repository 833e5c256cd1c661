"""Dead letters: a message no agent could process, kept whole with the reason in headers."""

from __future__ import annotations

import logging

from confluent_kafka import Message

from agents import metrics
from agents.kafka.eos import TxnOutput
from streams import headers as h

log = logging.getLogger(__name__)

MAX_DETAIL = 1000


def dead_letter(
    out: TxnOutput, topic: str, msg: Message, *, agent: str, reason: str, detail: str
) -> None:
    """Copy ``msg`` (key, value and headers untouched) to ``topic`` with why it failed.

    Produced inside the caller's transaction, so a dead letter is written exactly once.
    """
    extra: h.RawHeaders = [
        (h.DLQ_REASON, reason.encode()),
        (h.DLQ_DETAIL, detail[:MAX_DETAIL].encode("utf-8", "replace")),
        (h.DLQ_TOPIC, (msg.topic() or "").encode()),
        (h.DLQ_PARTITION, str(msg.partition()).encode()),
        (h.DLQ_OFFSET, str(msg.offset()).encode()),
        (h.DLQ_AGENT, agent.encode()),
    ]
    original = h.as_list(msg.headers())
    out.produce(topic, msg.value(), key=msg.key(), headers=original + extra)
    metrics.DEAD_LETTERS.labels(agent, reason).inc()
    log.debug("dead letter from %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), reason)
