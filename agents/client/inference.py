"""Request/reply over Kafka: produce an inference request, wait for its served result.

Results are keyed by request id, so the partition an answer lands on is known before the
request is sent (:func:`~model_canary.streams.partitioning.partition_of`, the producers'
murmur2). A client reads one partition of the results topic, its *home* partition (chosen at
random when it starts, so clients spread over the partitions), and gives each request an id
whose answer lands there: it waits on the partition its answers come to, not on every answer
of every client. A request id the caller chooses may land elsewhere: that partition is read
too, from before the request is sent.

An answer that comes twice (at-least-once delivery: ``CANARY_DELIVERY=at-least-once``) is
given once; the repeats are dropped and counted (:attr:`CanaryClient.repeats`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from model_canary.agents.client.tail import end_offset, open_tail
from model_canary.agents.kafka.clients import LazyProducer, consume
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import INFERENCE_REQUEST_CONTENT_TYPE, codec_for
from model_canary.streams.codec.requests import canonical_json, oip_request
from model_canary.streams.codec.results import decode_result
from model_canary.streams.errors import (
    CanaryError,
    DecodeError,
    KafkaOperationError,
    RequestTimeoutError,
)
from model_canary.streams.messages import InferenceRequest, InferenceResult, utc_now
from model_canary.streams.partitioning import partition_of
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

Inputs = bytes | Mapping[str, Any]

#: How many answered request ids a client remembers, to recognise an answer's repeats.
REMEMBERED_ANSWERS = 100_000
#: How long the listener waits for an answer before it looks for partitions to add.
LISTEN_WAIT_S = 0.05
#: How long sending a request waits for the partition of its answer to be read.
WATCH_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)


class InferenceError(CanaryError):
    """The model answered the request with an error; ``result`` holds the whole answer."""

    def __init__(self, result: InferenceResult) -> None:
        super().__init__(
            f"model {result.model} {result.version} failed request {result.request_id}: "
            f"{result.error_type}: {result.error}"
        )
        self.result = result


class CanaryClient:
    """Send inference requests to a model and receive the served results.

    ``inputs`` is an Open Inference Protocol request body (bytes), a full OIP request dict
    (``{"inputs": [...]}``), or a mapping of tensor name to nested lists, made into OIP.
    ``key`` is the routing key (a user or session id): the same key always gets the same arm
    while the weight holds. Thread-safe; connects on first use.

    >>> client = CanaryClient(Settings(bootstrap="localhost:9092"))
    >>> # client.infer({"x": [[5.1, 3.5, 1.4, 0.2]]}, model="iris", key="user-7").outputs
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self.settings = settings or Settings.from_env(**overrides)
        self.catalogue = TopicCatalogue(self.settings.topic_prefix)
        self._producer = LazyProducer(self.settings, "canary-client")
        self._results: Consumer | None = None
        self._partitions = 0  # of the results topic, once the listener started
        self._home = 0  # the results partition this client's own request ids answer on
        self._watched: set[int] = set()  # results partitions read
        # Partitions to read too, and their readiness: the listener thread, which owns the
        # consumer, adds them (a consumer polled in one thread hangs if another queries it).
        self._to_watch: dict[int, threading.Event] = {}
        self._reading: list[int] = []  # the consumer's assignment, as the listener last saw it
        self._watch_errors: dict[int, Exception] = {}
        self._answered: deque[str] = deque(maxlen=REMEMBERED_ANSWERS)
        self._answered_ids: set[str] = set()
        #: Answers received again for a request already answered (dropped).
        self.repeats = 0
        self._listener: threading.Thread | None = None
        self._pending: dict[str, Future[InferenceResult]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._request_codec = codec_for(InferenceRequest)
        self._result_codec = codec_for(InferenceResult)

    # -- public --------------------------------------------------------------------------
    def infer(
        self,
        inputs: Inputs,
        *,
        model: str,
        key: str | None = None,
        timeout: float = 30.0,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> InferenceResult:
        """Send one request and return its served result.

        Raises :class:`RequestTimeoutError` when nothing is served within ``timeout`` seconds
        and :class:`InferenceError` when the model answered with an error.
        """
        future = self.infer_nowait(
            inputs, model=model, key=key, request_id=request_id, headers=headers
        )
        try:
            result = future.result(timeout)
        except TimeoutError:
            raise self._timed_out(future, model, timeout) from None
        return _served(result)

    def infer_nowait(
        self,
        inputs: Inputs,
        *,
        model: str,
        key: str | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Future[InferenceResult]:
        """Send one request; the future completes with its served result (error or not)."""
        self._ensure_listener()
        if request_id is None:
            rid = self.new_request_id()
        else:
            rid = request_id
            self._watch(partition_of(rid.encode(), self._partitions))
        future: Future[InferenceResult] = Future()
        future.request_id = rid  # type: ignore[attr-defined]
        with self._lock:
            self._pending[rid] = future
        # No flush: librdkafka sends within linger.ms, so many requests go out in batches.
        self.send(inputs, model=model, key=key, request_id=rid, headers=headers, flush=False)
        return future

    def send(
        self,
        inputs: Inputs,
        *,
        model: str,
        key: str | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        flush: bool = True,
    ) -> str:
        """Send a request without waiting for its result; returns the request id."""
        rid = request_id or uuid.uuid4().hex
        request = InferenceRequest(
            request_id=rid,
            model=model,
            inputs=to_oip(inputs),
            routing_key=key,
            created_at=utc_now(),
        )
        self._open_producer()
        extra = list((headers or {}).items())
        self._producer.produce(
            self.catalogue.requests,
            self._request_codec.encode(request),
            key=(key or rid).encode(),
            headers=h.as_list(
                h.encode_headers(
                    [
                        (h.CONTENT_TYPE, INFERENCE_REQUEST_CONTENT_TYPE),
                        (h.REQUEST_ID, rid),
                        (h.MODEL, model),
                        (h.ROUTING_KEY, key),
                        *extra,
                    ]
                )
            ),
        )
        if flush:
            self._producer.flush(10)
        return rid

    @property
    def results_partitions(self) -> list[int]:
        """The partitions of the results topic this client reads (empty before its first
        request)."""
        return list(self._reading)

    def new_request_id(self) -> str:
        """A fresh request id whose answer lands on this client's home partition (random ids
        are drawn until one does: as many tries, on average, as the results topic has
        partitions)."""
        self._ensure_listener()
        while True:
            rid = uuid.uuid4().hex
            if partition_of(rid.encode(), self._partitions) == self._home:
                return rid

    def flush(self, timeout: float = 30.0) -> None:
        self._producer.flush(timeout)

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.join(5)
        self._producer.close(10)

    def __enter__(self) -> CanaryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------
    def _open_producer(self) -> None:
        with self._lock:  # made once, before threads share it
            _ = self._producer.producer

    def _ensure_listener(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            # Positioned at the end before any request is sent, so no answer is missed.
            self._results = open_tail(
                self.settings, self.catalogue.results, "canary-client", only=self._choose_home
            )
            self._listener = threading.Thread(
                target=self._listen, name="canary-client-results", daemon=True
            )
            self._listener.start()

    def _choose_home(self, partitions: int) -> list[int]:
        self._partitions = partitions
        self._home = random.randrange(partitions)
        self._watched = {self._home}
        return [self._home]

    def _watch(self, partition: int) -> None:
        """Read ``partition`` of the results topic too, from its end now: returns once the
        listener reads it, so the request whose answer lands there can be sent."""
        with self._lock:
            if partition in self._watched:
                return
            ready = self._to_watch.setdefault(partition, threading.Event())
        if not ready.wait(WATCH_TIMEOUT_S):
            raise KafkaOperationError(
                "read results", "_TIMED_OUT", f"partition {partition} not assigned in time"
            )
        error = self._watch_errors.pop(partition, None)
        if error is not None:
            raise KafkaOperationError("read results", "WATCH", str(error)) from error

    def _add_watched(self, consumer: Consumer) -> None:
        """In the listener thread: start reading the partitions :meth:`_watch` asked for."""
        with self._lock:
            todo = [(p, e) for p, e in self._to_watch.items() if not e.is_set()]
        topic = self.catalogue.results
        for partition, ready in todo:
            try:
                offset = end_offset(consumer, topic, partition)
                consumer.incremental_assign([TopicPartition(topic, partition, offset)])
            except KafkaException as exc:
                self._watch_errors[partition] = exc
            else:
                with self._lock:
                    self._watched.add(partition)
                self._reading = sorted(tp.partition for tp in consumer.assignment())
            with self._lock:
                del self._to_watch[partition]
            ready.set()

    def _listen(self) -> None:
        # Only this thread touches the consumer: a call from another thread while it polls
        # can wait indefinitely.
        consumer = self._results
        assert consumer is not None
        self._reading = sorted(tp.partition for tp in consumer.assignment())
        try:
            while not self._closed.is_set():
                if self._to_watch:
                    self._add_watched(consumer)
                try:
                    msgs = consume(consumer, 500, LISTEN_WAIT_S)
                except KafkaOperationError as exc:
                    log.warning("reading results: %s", exc)
                    continue
                for msg in msgs:
                    rid = (msg.key() or b"").decode("utf-8", "replace")
                    if rid not in self._pending:
                        if rid in self._answered_ids:
                            self._repeated(msg)
                        continue
                    try:
                        result = decode_result(msg.value(), msg.headers())
                    except DecodeError:
                        continue
                    if not result.served:
                        continue  # a shadow output is never the answer
                    with self._lock:
                        future = self._pending.pop(result.request_id, None)
                        self._remember(result.request_id)
                    if future is not None and not future.done():
                        future.set_result(result)
        finally:
            consumer.close()

    def _remember(self, rid: str) -> None:
        if len(self._answered) == self._answered.maxlen:
            self._answered_ids.discard(self._answered[0])
        self._answered.append(rid)
        self._answered_ids.add(rid)

    def _repeated(self, msg: Message) -> None:
        """An answer to a request already answered: dropped, and counted if it is served."""
        try:
            result = self._result_codec.decode(msg.value() or b"")
        except DecodeError:
            return
        if result.served:
            self.repeats += 1

    def _timed_out(
        self, future: Future[InferenceResult], model: str, timeout: float
    ) -> RequestTimeoutError:
        """Stop waiting for ``future``'s request; the error to raise."""
        rid: str = getattr(future, "request_id", "?")
        with self._lock:
            self._pending.pop(rid, None)
        return RequestTimeoutError(
            f"no served result for request {rid} to {model!r} within {timeout:g}s"
        )


def _served(result: InferenceResult) -> InferenceResult:
    """The result, or :class:`InferenceError` when the model answered with an error."""
    if result.error is not None:
        raise InferenceError(result)
    return result


class AsyncCanaryClient:
    """The asyncio face of :class:`CanaryClient`.

    >>> async def main() -> None:
    ...     async with AsyncCanaryClient(Settings(bootstrap="localhost:9092")) as client:
    ...         pass  # result = await client.infer({"x": [[1.0, 2.0]]}, model="iris")
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self._sync = CanaryClient(settings, **overrides)

    async def infer(
        self,
        inputs: Inputs,
        *,
        model: str,
        key: str | None = None,
        timeout: float = 30.0,
        request_id: str | None = None,
    ) -> InferenceResult:
        loop = asyncio.get_running_loop()
        future = await loop.run_in_executor(
            None,
            lambda: self._sync.infer_nowait(inputs, model=model, key=key, request_id=request_id),
        )
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            raise self._sync._timed_out(future, model, timeout) from None
        return _served(result)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._sync.close)

    async def __aenter__(self) -> AsyncCanaryClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


def to_oip(inputs: Inputs) -> bytes:
    """Request ``inputs`` as bytes: kept as given, an OIP dict, or tensors made into OIP."""
    if isinstance(inputs, bytes | bytearray):
        return bytes(inputs)
    if "inputs" in inputs and isinstance(inputs["inputs"], Sequence):
        return canonical_json(dict(inputs))
    return oip_request(inputs)
