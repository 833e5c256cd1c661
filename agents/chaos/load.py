"""A steady keyed load and a watch on the served results, both in background threads, with
the send and arrival time of every request (to measure recovery).

>>> # load = SteadyLoad(settings, "iris", rate=2000, seconds=30, id_prefix="s1-")
>>> # watch = ResultWatch(settings); watch.start(); load.start(); load.join()
"""

from __future__ import annotations

import threading
import time

from model_canary.agents.bench.load import INPUTS
from model_canary.agents.client.inference import CanaryClient
from model_canary.agents.client.tail import open_tail
from model_canary.agents.kafka.clients import consume
from model_canary.streams.codec.results import decode_result
from model_canary.streams.errors import DecodeError
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue


class SteadyLoad(threading.Thread):
    """``rate`` requests per second for ``seconds``, keys cycling through ``keys`` users.

    ``sent`` maps each request id to its send time (``time.monotonic()``), in send order.
    """

    def __init__(
        self,
        settings: Settings,
        model: str,
        *,
        rate: float,
        seconds: float,
        id_prefix: str,
        keys: int = 1000,
    ) -> None:
        super().__init__(name="chaos-load", daemon=True)
        self.settings = settings
        self.model = model
        self.rate = rate
        self.seconds = seconds
        self.id_prefix = id_prefix
        self.keys = keys
        self.sent: dict[str, float] = {}
        self.elapsed = 0.0

    def run(self) -> None:
        client = CanaryClient(self.settings)
        n = max(1, int(self.rate * self.seconds))
        began = time.monotonic()
        try:
            for i in range(n):
                wait = began + i / self.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                rid = f"{self.id_prefix}{i}"
                self._send(client, rid, f"user-{i % self.keys}")
                self.sent[rid] = time.monotonic()
            self.elapsed = time.monotonic() - began
            # While the broker is down, requests wait in the producer's queue.
            client.flush(120)
        finally:
            client.close()

    def _send(self, client: CanaryClient, rid: str, key: str) -> None:
        # While the broker is down the local queue fills up; send() then waits for room.
        client.send(INPUTS, model=self.model, key=key, request_id=rid, flush=False)

    @property
    def achieved_rate(self) -> float:
        return len(self.sent) / self.elapsed if self.elapsed else 0.0


class ResultWatch(threading.Thread):
    """Tails the results topic (read_committed, from its end as of start): ``served`` maps
    each request id to when its first served result arrived (``time.monotonic()``)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="chaos-watch", daemon=True)
        self.served: dict[str, float] = {}
        self._stop_event = threading.Event()
        topic = TopicCatalogue(settings.topic_prefix).results
        self._consumer = open_tail(settings, topic, "canary-chaos-watch")

    def run(self) -> None:
        served = self.served
        try:
            while not self._stop_event.is_set():
                for msg in consume(self._consumer, 1000, 0.2):
                    try:
                        result = decode_result(msg.value(), msg.headers())
                    except DecodeError:
                        continue
                    if result.served:
                        served.setdefault(result.request_id, time.monotonic())
        finally:
            self._consumer.close()

    def wait_for(self, ids: dict[str, float], timeout: float) -> bool:
        """Wait until every id in ``ids`` was served; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(rid in self.served for rid in ids):
                return True
            time.sleep(0.25)
        return False

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)
