"""Wrap confluent-kafka errors into the project's hierarchy, keeping code and description."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, Producer

from model_canary.streams.errors import KafkaOperationError


def wrap(operation: str, error: KafkaError | KafkaException | BaseException) -> KafkaOperationError:
    """A :class:`KafkaOperationError` for ``error``, raised while doing ``operation``."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]
    if isinstance(error, KafkaError):
        return KafkaOperationError(
            operation, error.name(), error.str(), retriable=bool(error.retriable())
        )
    return KafkaOperationError(operation, type(error).__name__, str(error))


def produce_confirmed(
    producer: Producer,
    operation: str,
    topic: str,
    value: bytes,
    *,
    key: bytes | None = None,
    timeout: float = 30.0,
) -> None:
    """Produce one message and wait for the broker's acknowledgement.

    A refused write (``TOPIC_AUTHORIZATION_FAILED`` for a principal without WRITE, say) raises
    :class:`KafkaOperationError` with Kafka's code and description instead of passing silently.
    """
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _msg: object) -> None:
        if error is not None:
            failures.append(error)

    try:
        producer.produce(topic, value, key=key, on_delivery=delivered)
    except (KafkaException, BufferError) as exc:
        raise wrap(operation, exc) from None
    try:
        left = producer.flush(timeout)
    except KafkaException as exc:  # a fatal producer error (no producer id granted, say)
        raise wrap(operation, exc) from None
    if failures:
        raise wrap(operation, failures[0])
    if left:
        raise KafkaOperationError(
            operation, "_MSG_TIMED_OUT", f"not acknowledged by the broker within {timeout:g}s"
        )
