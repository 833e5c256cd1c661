"""Send feedback: the label a request should have had, a score or rating, attributes such as a
complaint — whatever is learned about an answer after the fact.

>>> labels = FeedbackClient(Settings(bootstrap="localhost:9092"))  # connects on first use
>>> # labels.send("r1", model="iris", label="2"); labels.close()
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import KafkaError

from model_canary.agents.kafka.clients import LazyProducer
from model_canary.agents.kafka.errors import wrap
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.errors import KafkaOperationError
from model_canary.streams.messages import Feedback, utc_now
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue


def feedback_key(record: Feedback) -> bytes:
    """The Kafka key of a label: its request id, as its prediction is keyed, so the label
    joiner finds both on the same partition (the label topic and the predictions topic have
    the same partition count). A label keyed otherwise still joins, one hop later: the joiner
    re-keys it through the feedback-rekeyed topic.

    >>> from model_canary.streams.messages import EPOCH
    >>> feedback_key(Feedback(request_id="r1", model="iris", label="2", observed_at=EPOCH))
    b'r1'
    """
    return record.request_id.encode()


class FeedbackClient:
    """Produces :class:`Feedback` records to the feedback topic (keyed by
    :func:`feedback_key`). Not thread-safe; call :meth:`close` to flush."""

    def __init__(self, settings: Settings | None = None, *, source: str | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.topic = TopicCatalogue(self.settings.topic_prefix).feedback
        self.source = source
        self._codec = codec_for(Feedback)
        self._producer = LazyProducer(self.settings, "canary-feedback")
        self._failures: list[KafkaError] = []

    def send(
        self,
        request_id: str,
        *,
        model: str,
        label: str = "",
        value: float | None = None,
        attributes: Mapping[str, str] | None = None,
        flush: bool = False,
    ) -> None:
        """Send feedback on request ``request_id``: its true ``label``, a numeric ``value``
        (a rating, a score, a regression target) and/or ``attributes`` (at least one;
        :class:`~model_canary.streams.errors.RecordValidationError` otherwise). Without
        ``flush`` it goes out within linger.ms. With ``flush``, wait until the broker has it
        (and everything sent before): a refused write raises
        :class:`~model_canary.streams.errors.KafkaOperationError`."""
        record = Feedback(
            request_id=request_id,
            model=model,
            label=label,
            value=value,
            attributes=dict(attributes or {}),
            observed_at=utc_now(),
            source=self.source,
        )
        self._producer.produce(
            self.topic,
            self._codec.encode(record),
            key=feedback_key(record),
            on_delivery=self._delivered,
        )
        if flush:
            self.flush()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for every label sent to be acknowledged; raise on the first refused one."""
        left = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if failures:
            raise wrap(f"send a label to {self.topic}", failures[0])
        if left:
            raise KafkaOperationError(
                f"send a label to {self.topic}",
                "_MSG_TIMED_OUT",
                f"not acknowledged in {timeout:g}s",
            )

    def close(self) -> None:
        self._producer.close(10)

    def _delivered(self, error: KafkaError | None, _msg: object) -> None:
        if error is not None:
            self._failures.append(error)
