"""Wrap confluent-kafka errors into the project's hierarchy, keeping code and description."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from streams.errors import KafkaOperationError


def wrap(operation: str, error: KafkaError | KafkaException | BaseException) -> KafkaOperationError:
    """A :class:`KafkaOperationError` for ``error``, raised while doing ``operation``."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]
    if isinstance(error, KafkaError):
        return KafkaOperationError(
            operation, error.name(), error.str(), retriable=bool(error.retriable())
        )
    return KafkaOperationError(operation, type(error).__name__, str(error))
