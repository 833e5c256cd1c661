"""The router: republishes each request, payload untouched, to the request topic of the
version its rollout state picks, inside Kafka transactions.

Routing metadata comes from the Kafka key (the routing key) and headers (model, request id,
content type), so an Avro request is never decoded. A JSON request (from kcat or a shell) is
validated, since that is cheap and its sender has no schema to check against; a request
without the metadata headers is decoded once to find them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Message

from agents import metrics
from agents.kafka.dead_letters import dead_letter
from agents.kafka.eos import ExactlyOnceLoop, LoopConfig, TxnOutput
from agents.kafka.state_view import StateView
from streams import headers as h
from streams.codec.requests import decode_request
from streams.errors import DecodeError
from streams.routing import routes_for
from streams.settings import Settings
from streams.topics import TopicCatalogue

log = logging.getLogger(__name__)

AGENT = "router"
# Headers the router sets; a client's values for them are replaced (canary-arm is read first
# as a forced arm).
_ROUTER_HEADERS = frozenset({h.ARM, h.VERSION, h.ROLLOUT_ID, h.WEIGHT_BP, h.ROUTED_AT_MS, h.SHADOW})


@dataclass(frozen=True, slots=True)
class RouterOptions:
    instance: str = "router-1"
    max_batch: int = 1000
    state_poll_interval_s: float = 0.05


class Router:
    """Route requests until stopped.

    >>> # Router(Settings.from_env()).run(stop_on_signals())
    """

    def __init__(self, settings: Settings, options: RouterOptions | None = None) -> None:
        self.settings = settings
        self.options = options or RouterOptions()
        self.catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
        self.view = StateView(settings, client_id=f"canary-router-state-{self.options.instance}")
        prefix = settings.topic_prefix
        self.loop = ExactlyOnceLoop(
            settings,
            LoopConfig(
                agent=AGENT,
                group_id=f"{prefix}.router",
                topics=(self.catalogue.requests,),
                transactional_id=f"{prefix}.router.{self.options.instance}",
                max_batch=self.options.max_batch,
                commit_interval_ms=settings.commit_interval_ms,
            ),
            self.handle,
            on_idle=self._refresh_state,
        )
        self._last_state_poll = 0.0

    def run(self, stop: threading.Event) -> None:
        self.view.catch_up()
        self._publish_weights()
        try:
            self.loop.run(stop)
        finally:
            self.view.close()

    def _refresh_state(self) -> None:
        now = time.monotonic()
        if now - self._last_state_poll >= self.options.state_poll_interval_s:
            self._last_state_poll = now
            if self.view.poll(0):
                self._publish_weights()

    def _publish_weights(self) -> None:
        for model, state in self.view.states.items():
            metrics.WEIGHT.labels(model).set(state.weight_bp / 10_000)

    # -- per batch -----------------------------------------------------------------------
    def handle(self, batch: Sequence[Message], out: TxnOutput) -> None:
        # State changes are applied between batches only, so one batch routes consistently.
        self._refresh_state()
        routed_at = str(int(time.time() * 1000)).encode()
        for msg in batch:
            try:
                self._route(msg, out, routed_at)
            except Exception as exc:  # the router never stops on input
                log.exception(
                    "routing failed at %s[%s]@%s", msg.topic(), msg.partition(), msg.offset()
                )
                self._dead(out, msg, "internal-error", f"{type(exc).__name__}: {exc}")

    def _route(self, msg: Message, out: TxnOutput, routed_at: bytes) -> None:
        value = msg.value()
        if not value:
            self._dead(out, msg, "empty", "the message has no value")
            return
        if len(value) > self.settings.max_request_bytes:
            self._dead(
                out,
                msg,
                "too-large",
                f"{len(value)} bytes exceed the limit of {self.settings.max_request_bytes}",
            )
            return
        raw_headers = h.as_list(msg.headers())
        meta = h.header_dict(raw_headers)
        model = meta.get(h.MODEL)
        request_id = meta.get(h.REQUEST_ID)
        content_type = meta.get(h.CONTENT_TYPE)
        added: h.RawHeaders = []
        if not model or not request_id or (content_type or "").startswith(h.JSON):
            try:
                request = decode_request(
                    value, content_type, max_bytes=self.settings.max_request_bytes
                )
            except DecodeError as exc:
                self._dead(out, msg, exc.reason, str(exc))
                return
            if model and model != request.model:
                self._dead(
                    out,
                    msg,
                    "invalid-record",
                    f"header model {model!r} differs from payload model {request.model!r}",
                )
                return
            if not model:
                added.append((h.MODEL, request.model.encode()))
            if not request_id:
                added.append((h.REQUEST_ID, request.request_id.encode()))
            model, request_id = request.model, request.request_id
        state = self.view.get(model)
        if state is None:
            self._dead(
                out, msg, "unknown-model", f"model {model!r} has no registered version or rollout"
            )
            return
        key = msg.key() or request_id.encode()
        forced = meta.get(h.ARM)
        kept = [(k, v) for k, v in raw_headers if k not in _ROUTER_HEADERS] + added
        for route in routes_for(state, key, forced):
            headers: h.RawHeaders = [
                *kept,
                (h.ARM, route.arm.value.encode()),
                (h.VERSION, route.version.encode()),
                (h.ROLLOUT_ID, route.rollout_id.encode()),
                (h.WEIGHT_BP, str(route.weight_bp).encode()),
                (h.ROUTED_AT_MS, routed_at),
            ]
            if not route.served:
                headers.append((h.SHADOW, b"1"))
            out.produce(
                self.catalogue.version_requests(model, route.version),
                value,
                key=key,
                headers=headers,
            )
            metrics.ROUTED.labels(model, route.version, route.arm.value).inc()

    def _dead(self, out: TxnOutput, msg: Message, reason: str, detail: str) -> None:
        dead_letter(
            out, self.catalogue.dead_letters, msg, agent=AGENT, reason=reason, detail=detail
        )
