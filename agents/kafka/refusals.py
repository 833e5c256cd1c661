"""Refusing a request: every request gets exactly one answer, even when it cannot be routed or
served. A refusal writes, in the caller's transaction, an error result on the results topic
(when the request's id is known, so the client stops waiting at once) and a dead letter with a
bounded copy of what failed and the reason.

>>> answer = AnswerTo("r1", model="iris")
>>> result = error_result(answer, "too-large", "a message of 5242880 bytes exceeds ...")
>>> result.error_type, result.served, result.outputs[:10]
('too-large', True, b'{"error":"')
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from confluent_kafka import Message

from model_canary.agents.kafka.dead_letters import dead_letter
from model_canary.agents.kafka.eos import TxnOutput
from model_canary.streams import headers as h
from model_canary.streams.accounting import position_id, request_ref_of
from model_canary.streams.codec.json_records import is_json
from model_canary.streams.codec.results import encode_result
from model_canary.streams.messages import Arm, InferenceResult, utc_now
from model_canary.streams.topics import TopicCatalogue

MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class AnswerTo:
    """Who a refusal answers: the request's id and whatever is known of its routing."""

    request_id: str
    model: str = ""
    version: str = ""
    arm: Arm = Arm.STABLE
    served: bool = True
    rollout_id: str | None = None
    weight_bp: int = 0
    routing_key: str | None = None
    #: Where the error result goes instead of the results topics (a pre-flight's replayed
    #: request is answered on the pre-flight results topic, never served).
    topic: str | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


def error_result(answer: AnswerTo, reason: str, detail: str) -> InferenceResult:
    """The error result a refusal answers with (the OIP error shape ``{"error": ...}``)."""
    message = detail[:MAX_ERROR_CHARS]
    return InferenceResult(
        request_id=answer.request_id,
        model=answer.model,
        version=answer.version,
        arm=answer.arm,
        served=answer.served,
        outputs=json.dumps({"error": message}, separators=(",", ":")).encode(),
        content_type=h.JSON,
        error=message,
        error_type=reason,
        rollout_id=answer.rollout_id,
        weight_bp=answer.weight_bp,
        routing_key=answer.routing_key,
        latency_ms=0.0,
        created_at=utc_now(),
    )


def answer_to_unrouted(msg: Message, max_bytes: int) -> AnswerTo:
    """Who to answer for a request refused before routing: its id, or where it was written
    (:func:`~model_canary.streams.accounting.position_id`, as the audit and the router name a
    request without one)."""
    raw = h.as_list(msg.headers())
    ref = request_ref_of(msg.value(), raw, max_bytes)
    rid = ref.request_id or position_id(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
    key = msg.key()
    return AnswerTo(
        rid,
        model=ref.model,
        routing_key=key.decode("utf-8", "replace") if key else None,
    )


class Refusals:
    """``refuse(out, msg, reason, detail, answer=...)`` for one agent."""

    def __init__(
        self, catalogue: TopicCatalogue, agent: str, *, delivery_headers: h.RawHeaders | None = None
    ) -> None:
        self.catalogue = catalogue
        self.agent = agent
        self.delivery_headers = delivery_headers  # on every error result (h.delivery_headers)

    def refuse(
        self,
        out: TxnOutput,
        msg: Message,
        reason: str,
        detail: str,
        *,
        answer: AnswerTo | None,
        payload: bytes | None = None,
        payload_kind: str = "request",
        at_least_once: bool = False,
    ) -> None:
        """Answer ``msg``'s request with an error result (when ``answer`` is given) and
        dead-letter it, both in the open transaction. ``at_least_once``: the request was
        delivered so (routed at least once), so its answer may repeat and is marked so."""
        extra: h.RawHeaders = []
        if answer is not None:
            result = error_result(answer, reason, detail)
            key = answer.request_id.encode()
            meta = h.header_dict(h.as_list(msg.headers()))
            # Answered in the request's own form: JSON for a JSON request.
            value, headers = encode_result(result, as_json=is_json(meta.get(h.CONTENT_TYPE)))
            marks = self.delivery_headers
            if at_least_once and marks is None:
                marks = h.delivery_headers(exactly_once=False)
            headers += marks or []
            topic = self.catalogue.results if result.served else self.catalogue.shadow_results
            out.produce(answer.topic or topic, value, key=key, headers=[*headers, *answer.headers])
            if h.REQUEST_ID not in meta:
                extra.append((h.REQUEST_ID, key))
        dead_letter(
            out,
            self.catalogue.dead_letters,
            msg,
            agent=self.agent,
            reason=reason,
            detail=detail,
            payload=payload,
            payload_kind=payload_kind,
            extra_headers=extra,
        )
