"""Send ground truth: the label a request should have had, learned after the fact.

>>> labels = FeedbackClient(Settings(bootstrap="localhost:9092"))  # connects on first use
>>> # labels.send("r1", model="iris", label="2"); labels.close()
"""

from __future__ import annotations

from confluent_kafka import Producer

from model_canary.agents.kafka.config import producer_config
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.messages import Feedback, utc_now
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue


class FeedbackClient:
    """Produces :class:`Feedback` records to the feedback topic, keyed by model (the
    evaluator's partitioning). Not thread-safe; call :meth:`close` to flush."""

    def __init__(self, settings: Settings | None = None, *, source: str | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.topic = TopicCatalogue(self.settings.topic_prefix).feedback
        self.source = source
        self._codec = codec_for(Feedback)
        self._producer: Producer | None = None

    def send(self, request_id: str, *, model: str, label: str, flush: bool = False) -> None:
        """Label request ``request_id``; without ``flush`` it goes out within linger.ms."""
        if self._producer is None:
            self._producer = Producer(producer_config(self.settings, "canary-feedback"))
        record = Feedback(
            request_id=request_id,
            model=model,
            label=label,
            observed_at=utc_now(),
            source=self.source,
        )
        self._producer.produce(self.topic, self._codec.encode(record), key=model.encode())
        self._producer.poll(0)
        if flush:
            self._producer.flush(10)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
