"""Faults that break code, not processes: requests an agent fails on, sent in the middle of
the steady load, and the watch that checks each was answered and dead-lettered once.

Each fault sends a few requests with ids ``fault-<scenario>-<n>`` and records what must become
of each (:class:`Expected`): an error result with the refusal's reason as its ``error_type``
(unless the router cannot read the request's id), and exactly one dead letter with that reason.

* ``handler-exception``: the workers' fault adapter returns text where bytes are due for a
  marked request (an adapter bug): the worker raises while publishing, mid-batch.
* ``oversized-output``: the model answers a marked request with 2 MiB, more than the results
  topic takes.
* ``produce-error``: the results topic's limit is lowered to 512 KiB while the workers run;
  a marked request's 700 KiB answer passes the worker's own size check (it read the topic's
  limit before) and the broker refuses the write.
* ``oversized-request``: 5 MiB requests, on a requests topic that takes 10 MiB; the
  per-version topics the router writes to take 1 MiB.
* ``poison-message``: a JSON request whose ``inputs`` is a lone UTF-16 surrogate: decoding it
  raises ``UnicodeEncodeError``, which no decoder path expects (not a ``DecodeError``).

>>> Expected("too-large").answered
True
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from model_canary.agents.client.inference import CanaryClient
from model_canary.agents.client.tail import open_tail
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.kafka.clients import new_producer
from model_canary.agents.worker.adapters.faults import MARKER
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.errors import DecodeError, KafkaOperationError
from model_canary.streams.messages import InferenceResult
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

PREFIX = "fault-"
PER_SCENARIO = 5
SPACING_S = 0.4
BIG_REQUEST = 5 * 1024 * 1024
REQUESTS_LIMIT = 10 * 1024 * 1024
RESULTS_LIMIT = 512 * 1024
INPUTS = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]'


@dataclass(frozen=True, slots=True)
class Expected:
    """What must become of one faulty request: a dead letter with ``reason``, and an error
    result with that ``error_type`` when ``answered``."""

    reason: str
    answered: bool = True


class Injector:
    """Sends a scenario's faulty requests and remembers what must become of them."""

    def __init__(self, settings: Settings, model: str) -> None:
        self.settings = settings
        self.model = model
        self.catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
        self.expected: dict[str, Expected] = {}

    def reset(self) -> None:
        self.expected = {}

    def _ids(self, scenario: str) -> list[str]:
        return [f"{PREFIX}{scenario}-{i}" for i in range(PER_SCENARIO)]

    def marked(self, scenario: str, fault: str, expected: Expected) -> None:
        """Requests whose model input asks the workers' fault adapter for ``fault``."""
        client = CanaryClient(self.settings)
        try:
            for i, rid in enumerate(self._ids(scenario)):
                payload = INPUTS + f',"{MARKER}":"{fault}"}}'.encode()
                client.send(payload, model=self.model, key=f"fault-user-{i}", request_id=rid)
                self.expected[rid] = expected
                time.sleep(SPACING_S)
        finally:
            client.close()

    def oversized_requests(self, scenario: str) -> None:
        """5 MiB requests (the requests topic takes them; the router's outputs do not)."""
        big: dict[str, Any] = {"message.max.bytes": REQUESTS_LIMIT}
        producer = new_producer(self.settings, "canary-chaos-big", **big)
        for rid in self._ids(scenario):
            self._raw(producer, rid, b"\0" * BIG_REQUEST, "avro/binary")
            self.expected[rid] = Expected("too-large")
            time.sleep(SPACING_S)

    def poison(self, scenario: str) -> None:
        """JSON requests whose ``inputs`` the decoder fails on in a way it did not foresee."""
        producer = new_producer(self.settings, "canary-chaos-poison")
        for rid in self._ids(scenario):
            body = f'{{"request_id":"{rid}","model":"{self.model}","inputs":"\\ud800"}}'
            self._raw(producer, rid, body.encode(), h.JSON)
            # The router reads a JSON request's id from its body, which does not decode: it
            # cannot answer, only dead-letter (the audit matches the two by position).
            self.expected[rid] = Expected("internal-error", answered=False)
            time.sleep(SPACING_S)

    def _raw(self, producer: Producer, rid: str, value: bytes, content_type: str) -> None:
        headers: h.RawHeaders = [
            (h.CONTENT_TYPE, content_type.encode()),
            (h.MODEL, self.model.encode()),
            (h.REQUEST_ID, rid.encode()),
        ]
        producer.produce(self.catalogue.requests, value, key=rid.encode(), headers=headers)
        left = producer.flush(30)
        if left:
            raise KafkaOperationError(
                "produce", "_MSG_TIMED_OUT", f"{rid} was not written within 30 s"
            )

    def limit(self, topic: str, max_bytes: int | None) -> None:
        """Set (or with ``None`` reset) ``topic``'s ``max.message.bytes``."""
        Admin(self.settings).alter_topic_config(
            topic, {"max.message.bytes": None if max_bytes is None else str(max_bytes)}
        )


class FaultWatch(threading.Thread):
    """Tails the results and dead-letter topics (read_committed, from their ends as of start)
    for the answers to faulty requests (ids starting with :data:`PREFIX`)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="chaos-fault-watch", daemon=True)
        catalogue = TopicCatalogue(settings.topic_prefix)
        self._results_topic = catalogue.results
        self._consumer = open_tail(
            settings, [catalogue.results, catalogue.dead_letters], "canary-chaos-faults"
        )
        self._codec = codec_for(InferenceResult)
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        #: request id -> error types of its results (``""`` for a result with no error)
        self.results: dict[str, list[str]] = defaultdict(list)
        #: request id -> reasons of its dead letters
        self.dead_letters: dict[str, list[str]] = defaultdict(list)

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                for msg in self._consumer.consume(500, timeout=0.2):
                    if msg.error() is None:
                        self._take(msg.topic(), msg.value() or b"", msg.headers())
        finally:
            self._consumer.close()

    def _take(self, topic: str | None, value: bytes, headers: object) -> None:
        if topic == self._results_topic:
            if PREFIX.encode() not in value:
                return
            try:
                result = self._codec.decode(value)
            except DecodeError:
                return
            if result.request_id.startswith(PREFIX):
                with self._lock:
                    self.results[result.request_id].append(result.error_type or "")
            return
        meta = h.header_dict(h.as_list(headers))
        rid = meta.get(h.REQUEST_ID, "")
        if rid.startswith(PREFIX):
            with self._lock:
                self.dead_letters[rid].append(meta.get(h.DLQ_REASON, "?"))

    def problems(self, expected: dict[str, Expected]) -> list[str]:
        """What is wrong with the answers to ``expected`` so far (empty: all as expected)."""
        out = []
        with self._lock:
            for rid, want in sorted(expected.items()):
                results, dead = self.results.get(rid, []), self.dead_letters.get(rid, [])
                if dead != [want.reason]:
                    out.append(f"{rid}: dead letters {dead or 'none'}, expected [{want.reason}]")
                if want.answered and results != [want.reason]:
                    out.append(f"{rid}: results {results or 'none'}, expected [{want.reason}]")
                if not want.answered and results:
                    out.append(f"{rid}: results {results}, expected none")
        return out

    def wait_for(self, expected: dict[str, Expected], timeout: float) -> list[str]:
        """Wait until the answers to ``expected`` are as expected; the problems left."""
        deadline = time.monotonic() + timeout
        while True:
            problems = self.problems(expected)
            if not problems or time.monotonic() >= deadline:
                return problems
            time.sleep(0.25)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)
