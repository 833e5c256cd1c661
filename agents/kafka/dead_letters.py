"""Dead letters: a message no agent could process, with the reason in headers and a bounded
copy of what failed (the payload cut to :data:`MAX_COPY` bytes, with its full size and SHA-256
digest), so a dead letter can always be written, however large the original was."""

from __future__ import annotations

import hashlib
import logging

from confluent_kafka import Message

from model_canary.agents import metrics
from model_canary.agents.kafka.eos import TxnOutput
from model_canary.streams import headers as h

log = logging.getLogger(__name__)

MAX_DETAIL = 1000
#: Bytes of the failed payload a dead letter keeps.
MAX_COPY = 64 * 1024
#: Bytes of the original headers a dead letter keeps (the canary-* headers always).
MAX_HEADER_BYTES = 16 * 1024
DLQ_HEADERS = frozenset(
    {
        h.DLQ_REASON,
        h.DLQ_DETAIL,
        h.DLQ_TOPIC,
        h.DLQ_PARTITION,
        h.DLQ_OFFSET,
        h.DLQ_AGENT,
        h.DLQ_SIZE,
        h.DLQ_SHA256,
        h.DLQ_TRUNCATED,
        h.DLQ_PAYLOAD,
    }
)


def dead_letter(
    out: TxnOutput,
    topic: str,
    msg: Message,
    *,
    agent: str,
    reason: str,
    detail: str,
    payload: bytes | None = None,
    payload_kind: str = "request",
    extra_headers: h.RawHeaders | None = None,
) -> None:
    """Copy ``msg`` (key and headers, but for any ``canary-dlq-*`` headers it came with) to
    ``topic`` with why it failed; the value is ``payload`` (default: the message's own value),
    cut to :data:`MAX_COPY` bytes.

    Produced inside the caller's transaction, so a dead letter is written exactly once.
    """
    headers = dead_letter_headers(
        msg.headers(),
        (msg.topic() or "", msg.partition(), msg.offset()),
        agent=agent,
        reason=reason,
        detail=detail,
    )
    value = msg.value() if payload is None else payload
    copy, copy_headers = bounded_copy(value, payload_kind)
    out.produce(topic, copy, key=msg.key(), headers=headers + copy_headers + (extra_headers or []))


def bounded_copy(value: bytes | None, kind: str = "request") -> tuple[bytes | None, h.RawHeaders]:
    """``value`` cut to :data:`MAX_COPY` bytes, with headers giving its size and digest.

    >>> copy, headers = bounded_copy(b"x" * 100_000)
    >>> len(copy), dict(headers)["canary-dlq-truncated"], dict(headers)["canary-dlq-size"]
    (65536, b'1', b'100000')
    """
    if value is None:
        return None, [(h.DLQ_PAYLOAD, kind.encode())]
    truncated = len(value) > MAX_COPY
    headers: h.RawHeaders = [
        (h.DLQ_PAYLOAD, kind.encode()),
        (h.DLQ_SIZE, str(len(value)).encode()),
        (h.DLQ_SHA256, hashlib.sha256(value).hexdigest().encode()),
        (h.DLQ_TRUNCATED, b"1" if truncated else b"0"),
    ]
    return (value[:MAX_COPY] if truncated else value), headers


def dead_letter_headers(
    original: object,
    source: tuple[str, int | None, int | None],
    *,
    agent: str,
    reason: str,
    detail: str,
) -> h.RawHeaders:
    """The original headers (bounded) plus the dead-letter ones for a message consumed at
    ``source`` (topic, partition, offset); counts the dead letter. For agents with their own
    producer (the evaluator's faust app)."""
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
    if sum(len(k) + len(v or b"") for k, v in kept) > MAX_HEADER_BYTES:
        # Oversized headers would make the dead letter itself unwritable: keep ours only.
        kept = [(k, v) for k, v in kept if k.startswith("canary-") or k == h.CONTENT_TYPE]
        kept = kept if sum(len(k) + len(v or b"") for k, v in kept) <= MAX_HEADER_BYTES else []
    return kept + extra
