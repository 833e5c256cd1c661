"""Dead letters: a message no agent could process, kept whole with the reason in headers."""

from __future__ import annotations

import logging

from confluent_kafka import Message

from model_canary.agents import metrics
from model_canary.agents.kafka.eos import TxnOutput
from model_canary.streams import headers as h

log = logging.getLogger(__name__)

MAX_DETAIL = 1000
DLQ_HEADERS = frozenset(
    {h.DLQ_REASON, h.DLQ_DETAIL, h.DLQ_TOPIC, h.DLQ_PARTITION, h.DLQ_OFFSET, h.DLQ_AGENT}
)


def dead_letter(
    out: TxnOutput, topic: str, msg: Message, *, agent: str, reason: str, detail: str
) -> None:
    """Copy ``msg`` (key, value and headers untouched, but for any ``canary-dlq-*`` headers it
    came with) to ``topic`` with why it failed.

    Produced inside the caller's transaction, so a dead letter is written exactly once.
    """
    headers = dead_letter_headers(
        msg.headers(),
        (msg.topic() or "", msg.partition(), msg.offset()),
        agent=agent,
        reason=reason,
        detail=detail,
    )
    out.produce(topic, msg.value(), key=msg.key(), headers=headers)


def dead_letter_headers(
    original: object,
    source: tuple[str, int | None, int | None],
    *,
    agent: str,
    reason: str,
    detail: str,
) -> h.RawHeaders:
    """The original headers plus the dead-letter ones for a message consumed at ``source``
    (topic, partition, offset); counts the dead letter. For agents with their own producer
    (the evaluator's faust app)."""
    topic, partition, offset = source
    extra: h.RawHeaders = [
        (h.DLQ_REASON, reason.encode()),
        (h.DLQ_DETAIL, detail[:MAX_DETAIL].encode("utf-8", "replace")),
        (h.DLQ_TOPIC, topic.encode()),
        (h.DLQ_PARTITION, str(partition).encode()),
        (h.DLQ_OFFSET, str(offset).encode()),
        (h.DLQ_AGENT, agent.encode()),
    ]
    metrics.DEAD_LETTERS.labels(agent, reason).inc()
    log.debug("dead letter from %s[%s]@%s: %s", topic, partition, offset, reason)
    # A message may arrive with dead-letter headers of its own: they would pass for ours.
    kept = [(k, v) for k, v in h.as_list(original) if k not in DLQ_HEADERS]
    return kept + extra
