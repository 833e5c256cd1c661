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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

from confluent_kafka import Message

from model_canary.agents import metrics
from model_canary.agents.kafka.alo import data_loop
from model_canary.agents.kafka.eos import (
    PRODUCE_DEFAULTS,
    LoopConfig,
    TxnHooks,
    TxnOutput,
    tune_gc,
)
from model_canary.agents.kafka.refusals import Refusals, answer_to_unrouted
from model_canary.agents.kafka.state_view import StateView
from model_canary.streams import headers as h
from model_canary.streams.accounting import position_id
from model_canary.streams.codec.requests import decode_request
from model_canary.streams.enums import Arm
from model_canary.streams.errors import DecodeError
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
from model_canary.streams.evidence.wire import encode_evidence
from model_canary.streams.route_header import RouteHeader, encode_parts
from model_canary.streams.routing import Route, RoutePlan, remember
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)

AGENT = "router"
# Headers a router sets; a client's values for them are dropped (canary-arm is read first as a
# forced arm).
_ROUTER_HEADERS = h.ROUTER_SET


_JSON = h.JSON.encode()
_JSON_LEN = len(_JSON)
_MODEL, _REQUEST_ID, _CONTENT_TYPE, _ARM = h.MODEL, h.REQUEST_ID, h.CONTENT_TYPE, h.ARM
_ROUTE, _ROUTING_KEY = h.ROUTE, h.ROUTING_KEY
#: The headers as the Python client writes a request (``CanaryClient.send``), in its order:
#: a request laid out so is read by position, without a dictionary of its headers. Four
#: distinct names, none of them a router's (so a request laid out so has no router header).
CLIENT_LAYOUT = (_CONTENT_TYPE, _REQUEST_ID, _MODEL, _ROUTING_KEY)
assert len(set(CLIENT_LAYOUT)) == len(CLIENT_LAYOUT)
assert _ROUTER_HEADERS.isdisjoint(CLIENT_LAYOUT)


class _Output:
    """Where one route's requests go: topic, its ``canary-route`` value around the routed-at
    stamp, metric labels, and the cohort buckets of the batch's requests routed there (a
    rollout's arms: for the routed evidence; every route: their number is the routed count)."""

    __slots__ = ("buckets", "cell", "labels", "parts", "shadow", "tail", "topic")

    def __init__(
        self,
        topic: str,
        parts: tuple[bytes, bytes],
        labels: tuple[str, str, str],
        cell: Cell | None,
        *,
        shadow: bool = False,
    ) -> None:
        self.topic = topic
        self.parts = parts
        # A shadow copy also carries canary-shadow: 1, so that a worker older than
        # canary-route (upgraded after the router, against the documented order) never writes
        # it as a served answer.
        self.shadow: h.RawHeaders = [(h.SHADOW, b"1")] if shadow else []
        self.labels = labels
        self.cell = cell  # None: no evidence (no rollout in progress)
        self.buckets: list[int] = []
        #: The header the router adds, with the batch's routed-at stamp (set per batch).
        self.tail: h.RawHeaders = []

    def stamp(self, routed_at: bytes) -> None:
        """Set :attr:`tail` for a batch routed at ``routed_at`` (epoch ms, as text)."""
        head, rest = self.parts
        self.tail = [(_ROUTE, head + routed_at + rest), *self.shadow]


_Routed = tuple[tuple[_Output, ...], int]


class _Plan(NamedTuple):
    """A model's route plan compiled for routing: per route its output, per tuple of routes
    the plan returns (by identity) their outputs, the largest request value its output
    topics take (headers aside), and a memo of the routing keys routed by it: per key its
    outputs and its cohort bucket (``recall(key)``: the memo's ``get``; see :func:`_remember`).
    The plan, memo included, is dropped when any rollout state changes."""

    routes: RoutePlan
    outputs: dict[Route, _Output]
    by_set: dict[int, tuple[_Output, ...]]
    largest: int
    memo: dict[bytes, _Routed]
    recall: Callable[[bytes], _Routed | None]


def _remember(plan: _Plan, key: bytes) -> _Routed:
    """Where ``plan`` routes ``key`` (no forced arm): its outputs and its cohort bucket, now
    remembered (the memo is cleared when it holds :data:`MEMO_KEYS` keys, so it stays
    bounded)."""
    chosen, bucket = plan.routes.decide(key)
    return remember(plan.memo, key, (plan.by_set[id(chosen)], bucket))


#: Room left for a routed request's headers when its size is checked against a topic's limit.
HEADER_ROOM = 16 * 1024


def _text(raw: str | bytes | None) -> str:
    if raw is None:
        return ""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _bytes(raw: str | bytes | None) -> bytes:
    if raw is None:
        return b""
    return raw if isinstance(raw, bytes) else raw.encode()


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
        self.loop = data_loop(
            settings,
            LoopConfig(
                agent=AGENT,
                group_id=f"{prefix}.router",
                topics=(self.catalogue.requests,),
                transactional_id=f"{prefix}.router.{self.options.instance}",
                max_batch=self.options.max_batch,
                commit=settings.commit_policy,
            ),
            self.handle,
            on_idle=self._refresh_state,
            refuse=self._refuse,
            hooks=TxnHooks(before_commit=self._publish_evidence, on_abort=self._drop_evidence),
        )
        self.refusals = Refusals(
            self.catalogue, AGENT, delivery_headers=h.delivery_headers(settings.exactly_once)
        )
        self.evidence = EvidenceBuilder("routed", source=self.loop.config.transactional_id)
        self._last_state_poll = 0.0
        self._routed_at = b"0"  # the current batch's stamp (epoch ms)
        # Compiled per model (keyed by the raw model header), dropped when any state changes.
        self._plans: dict[str | bytes, _Plan] = {}
        # Per model, the (rollout id, revision) of the state last logged as routed by.
        self._routing: dict[str, tuple[str, int]] = {}

    def run(self, stop: threading.Event) -> None:
        tune_gc()
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
                self._plans.clear()
                self._publish_weights()

    def _publish_weights(self) -> None:
        """Set each model's weight gauge and log each state the router starts routing by (an
        operator, or a test, sees from then on that this instance routes the model so)."""
        states = self.view.states
        for model, state in states.items():
            metrics.WEIGHT.labels(model).set(state.weight_bp / 10_000)
            seen = (state.rollout_id, state.revision)
            if self._routing.get(model) != seen:
                self._routing[model] = seen
                log.info(
                    "routing %s by rollout state revision %d: %s, baseline %s, canary %s at %s%%",
                    model,
                    state.revision,
                    state.phase.value,
                    state.baseline_version,
                    state.canary_version or "-",
                    f"{state.weight_bp / 100:g}",
                )
        for model in [m for m in self._routing if m not in states]:
            del self._routing[model]
            log.info("routing %s no more: its rollout state was deleted", model)

    # -- per batch -----------------------------------------------------------------------
    def handle(self, batch: Sequence[Message], out: TxnOutput) -> None:
        # State changes are applied between batches only, so one batch routes consistently.
        self._refresh_state()
        routed_at = str(int(time.time() * 1000)).encode()
        self._stamp(routed_at)
        # The common case inline, with everything it touches in locals: a request of a model
        # already routed in this state, with its metadata headers, not JSON, no router
        # headers. Everything else (and any doubt) takes the full path, _route.
        # Anything that raises here (a bug, a write Kafka refuses) aborts the transaction; the
        # loop then refuses the input it was on (out.source) and handles the batch again.
        # Per request: one lookup of its key's outputs and bucket (the plan's memo), one list
        # of headers, one produce
        # and one bucket appended; the evidence and the metrics are summed per batch.
        plans = self._plans
        limit = self.settings.max_request_bytes
        produce = out.fast_produce
        ua, no_cb, _, now = PRODUCE_DEFAULTS  # produce's arguments before headers, positional
        plain = _ROUTER_HEADERS.isdisjoint
        for msg in batch:
            out.source = msg
            value = msg.value()
            raw = msg.headers()
            if value and raw and len(value) <= limit:
                if len(raw) == 4:
                    # Maybe the client's layout: read by position (the same values the
                    # dictionary below would give, its names being distinct).
                    (n0, content_type), (n1, request_id), (n2, model), (n3, _) = raw  # type: ignore[str-unpack]
                    laid_out = (
                        n0 == _CONTENT_TYPE
                        and n1 == _REQUEST_ID
                        and n2 == _MODEL
                        and n3 == _ROUTING_KEY
                    )
                else:
                    laid_out = False
                if not laid_out:
                    meta = dict(raw)
                    model = meta.get(_MODEL)
                    content_type = meta.get(_CONTENT_TYPE)
                    request_id = meta.get(_REQUEST_ID)
                    if not plain(meta):
                        request_id = None  # a router header: the full path drops it
                plan = plans.get(model)  # type: ignore[arg-type]
                if (
                    plan is not None
                    and len(value) <= plan.largest
                    and request_id
                    and not (content_type and content_type[:_JSON_LEN] == _JSON)
                ):
                    # Consumed header values are bytes (the stubs allow str for produce).
                    key: bytes = msg.key() or request_id  # type: ignore[assignment]
                    got = plan.recall(key)
                    if got is None:
                        got = _remember(plan, key)
                    outputs, bucket = got
                    for output in outputs:
                        # Consumed headers are a list (the stubs allow a dict for produce).
                        headers = raw + output.tail  # type: ignore[operator]
                        try:
                            produce(output.topic, value, key, ua, no_cb, no_cb, now, headers)
                        except BufferError:
                            out.produce(output.topic, value, key=key, headers=headers)
                        output.buckets.append(bucket)
                    continue
            self._route(msg, out)
        self._collect_evidence(int(routed_at) // 1000)

    def _stamp(self, routed_at: bytes) -> None:
        """Every output's added header, with this batch's routed-at stamp."""
        self._routed_at = routed_at
        for plan in self._plans.values():
            for output in plan.outputs.values():
                output.stamp(routed_at)

    def _collect_evidence(self, second: int) -> None:
        """The batch's routed requests into the transaction's evidence and the routed
        counts, per route."""
        for plan in self._plans.values():
            for output in plan.outputs.values():
                if output.buckets:
                    metrics.ROUTED.labels(*output.labels).inc(len(output.buckets))
                    if output.cell is not None:
                        self.evidence.add_routed(
                            output.cell._replace(second=second), output.buckets
                        )
                    output.buckets = []

    def _publish_evidence(self, out: TxnOutput) -> None:
        """Before the transaction commits: one routed-evidence record per (route, second),
        citing the requests the transaction consumed."""
        if not self.evidence:
            return
        records = self.evidence.build(self.loop.consumed_ranges())
        for key, value in encode_evidence(records, sets=self.settings.evidence_sets):
            out.produce(self.catalogue.evidence, value, key=key)

    def _drop_evidence(self) -> None:
        # The aborted transaction's routing is done again: so is its evidence.
        self.evidence.clear()
        for plan in self._plans.values():
            for output in plan.outputs.values():
                output.buckets = []

    def _route(self, msg: Message, out: TxnOutput) -> None:
        """The slow path: any request the hot loop in :meth:`handle` does not route itself,
        with the same added headers (``output.tail``: the batch's routed-at stamp included)."""
        value = msg.value()
        if not value:
            self._refuse(out, msg, "empty", "the message has no value")
            return
        if len(value) > self.settings.max_request_bytes:
            self._refuse(
                out,
                msg,
                "too-large",
                f"a request of {len(value)} bytes exceeds the limit of "
                f"{self.settings.max_request_bytes} (CANARY_MAX_REQUEST_BYTES)",
            )
            return
        # Consumed messages carry a list of pairs (the stubs also allow a dict, for produce).
        # dict() and the set test run in C: most requests need no header decoded.
        raw_headers = cast(h.RawHeaders, msg.headers() or [])
        meta = dict(raw_headers)
        model = meta.get(_MODEL)
        request_id = meta.get(_REQUEST_ID)
        content_type = meta.get(_CONTENT_TYPE)
        forced = meta.get(_ARM)
        if _ROUTER_HEADERS.isdisjoint(meta):
            kept = raw_headers
        else:
            kept = [(k, v) for k, v in raw_headers if k not in _ROUTER_HEADERS]
        routing_key = msg.key()
        if not model or not request_id or (content_type or b"")[:_JSON_LEN] == _JSON:
            # A JSON request may be the bare model input, the model named in a header; one
            # without an id is routed, answered and audited under where it was written.
            where = position_id(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
            try:
                request = decode_request(
                    value,
                    _text(content_type) or None,
                    max_bytes=self.settings.max_request_bytes,
                    model=_text(model) or None,
                    request_id=_text(request_id) or where,
                    routing_key=_text(routing_key) or None,
                )
            except DecodeError as exc:
                self._refuse(out, msg, exc.reason, str(exc))
                return
            if model and _text(model) != request.model:
                self._refuse(
                    out,
                    msg,
                    "invalid-record",
                    f"header model {_text(model)!r} differs from payload model {request.model!r}",
                )
                return
            added: h.RawHeaders = []
            if not model:
                added.append((h.MODEL, request.model.encode()))
            if not request_id:
                added.append((h.REQUEST_ID, request.request_id.encode()))
            kept = [*kept, *added]
            model, request_id = request.model, request.request_id
            if not routing_key and request.routing_key:
                routing_key = request.routing_key.encode()
        plan = self._plans.get(model)
        if plan is None:
            plan = self._compile(_text(model))
            if plan is None:
                self._refuse(
                    out,
                    msg,
                    "unknown-model",
                    f"model {_text(model)!r} has no registered version or rollout",
                )
                return
            self._plans[model] = plan
        if len(value) > plan.largest:
            self._refuse(
                out,
                msg,
                "too-large",
                f"a request of {len(value)} bytes exceeds what its version topics take "
                f"({plan.largest + HEADER_ROOM} bytes with headers)",
            )
            return
        key = routing_key or _bytes(request_id)
        chosen, bucket = plan.routes.routed(key, _text(forced) if forced else None)
        for output in plan.by_set[id(chosen)]:
            headers = kept + output.tail
            try:
                out.fast_produce(output.topic, value, key, *PRODUCE_DEFAULTS, headers)
            except BufferError:
                out.produce(output.topic, value, key=key, headers=headers)
            output.buckets.append(bucket)

    def _compile(self, model: str) -> _Plan | None:
        """The model's route plan with each route's topic, encoded header and metric labels."""
        state = self.view.get(model)
        if state is None:
            return None
        plan = RoutePlan(state)
        outputs: dict[Route, _Output] = {}
        for route in plan.all_routes():
            # Routed at least once: the workers mark their answers so (they may repeat).
            parts = encode_parts(
                RouteHeader(
                    route.arm,
                    route.version,
                    route.weight_bp,
                    None,
                    route.rollout_id,
                    served=route.served,
                    at_least_once=not self.settings.exactly_once,
                )
            )
            topic = self.catalogue.version_requests(model, route.version)
            cell = None
            if route.arm is not Arm.STABLE:
                arm = route.arm.value
                cell = Cell(model, route.rollout_id, "", arm, route.served, route.weight_bp, 0)
            labels = (model, route.version, route.arm.value)
            output = _Output(topic, parts, labels, cell, shadow=not route.served)
            output.stamp(self._routed_at)
            outputs[route] = output
        by_set = {id(s): tuple(outputs[r] for r in s) for s in plan.route_sets()}
        limits = self.loop.output.limits
        largest = min(limits.limit(o.topic) for o in outputs.values()) - HEADER_ROOM
        memo: dict[bytes, _Routed] = {}
        return _Plan(plan, outputs, by_set, largest, memo, memo.get)

    def _refuse(self, out: TxnOutput, msg: Message, reason: str, detail: str) -> None:
        """Answer a request the router cannot route with an error result and dead-letter it
        (also the loop's refusal for an input whose handling failed)."""
        answer = answer_to_unrouted(msg, self.settings.max_request_bytes)
        self.refusals.refuse(out, msg, reason, detail, answer=answer)
