"""A keyed iris request load with ground truth delivered later (``canary load`` and the demo).

Each request carries one held-out iris row and a routing key drawn from ``keys`` users; its
true label goes to the feedback topic ``label_delay`` seconds after it was sent, as labels
arrive in real systems. A small share of requests is malformed (a feature missing), like the
odd broken client: every version fails those alike, which gives the error-rate comparison
events on both arms.

>>> gen = LoadGenerator(Settings(), LoadOptions(rate=50, duration=10))  # sends nothing yet
>>> # gen.run(threading.Event())
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass

from model_canary.agents.client.feedback import FeedbackClient
from model_canary.agents.client.inference import CanaryClient
from model_canary.agents.demo.models import DemoData, held_out
from model_canary.streams.errors import ConfigError
from model_canary.streams.settings import Settings

#: How often the pacing loop wakes up (seconds).
TICK_S = 0.02


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What to send: ``rate`` requests per second for ``duration`` seconds (None: until
    stopped), labels after ``label_delay`` seconds, ``bad_input`` share malformed."""

    model: str = "iris"
    rate: float = 50.0
    duration: float | None = None
    label_delay: float = 2.0
    keys: int = 10_000
    bad_input: float = 0.03
    seed: int = 1
    id_prefix: str = "load"

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 100_000:
            raise ConfigError(f"rate must lie in (0, 100000] requests/s, got {self.rate!r}")
        if self.duration is not None and self.duration <= 0:
            raise ConfigError(f"duration must be positive, got {self.duration!r}")
        if self.label_delay < 0 or self.keys < 1 or not 0 <= self.bad_input <= 1:
            raise ConfigError("label delay >= 0, keys >= 1 and bad-input share in 0..1 expected")


class LoadGenerator:
    """Sends the load from :meth:`run` (in any thread). ``sent`` maps every request id sent to
    its true label (None for a malformed request); other threads may read it meanwhile."""

    def __init__(
        self, settings: Settings, options: LoadOptions, data: DemoData | None = None
    ) -> None:
        self.settings = settings
        self.options = options
        self.data = data if data is not None else held_out()
        self.sent: dict[str, str | None] = {}
        self.labels_sent = 0
        self._rng = random.Random(options.seed)

    def run(self, stop: threading.Event, *, deliver_pending_labels: bool = True) -> None:
        """Send until ``stop`` is set or the duration is over; then, with
        ``deliver_pending_labels``, wait out the label delay so every label is sent."""
        o = self.options
        pending: deque[tuple[float, str, str]] = deque()
        client = CanaryClient(self.settings)
        labels = FeedbackClient(self.settings, source="canary-load")
        began = time.monotonic()
        try:
            while not stop.is_set():
                elapsed = time.monotonic() - began
                if o.duration is not None and elapsed >= o.duration:
                    break
                while len(self.sent) < int(elapsed * o.rate) + 1:
                    self._send_one(client, pending)
                self._label_due(labels, pending, time.monotonic())
                stop.wait(TICK_S)
            client.flush()
            while deliver_pending_labels and pending and not stop.is_set():
                self._label_due(labels, pending, time.monotonic())
                stop.wait(TICK_S)
        finally:
            client.close()
            labels.close()

    def _send_one(self, client: CanaryClient, pending: deque[tuple[float, str, str]]) -> None:
        o = self.options
        n = len(self.sent)
        row = n % len(self.data.labels)
        rid = f"{o.id_prefix}-{n}"
        key = f"user-{self._rng.randrange(o.keys)}"
        features = [float(v) for v in self.data.features[row]]
        label: str | None = str(int(self.data.labels[row]))
        if self._rng.random() < o.bad_input:
            features, label = features[:3], None  # a client that lost a column
        self.sent[rid] = label
        client.send({"input-0": [features]}, model=o.model, key=key, request_id=rid, flush=False)
        if label is not None:
            pending.append((time.monotonic() + o.label_delay, rid, label))

    def _label_due(
        self, labels: FeedbackClient, pending: deque[tuple[float, str, str]], now: float
    ) -> None:
        while pending and pending[0][0] <= now:
            _due, rid, label = pending.popleft()
            labels.send(rid, model=self.options.model, label=label)
            self.labels_sent += 1
