"""One error root for the project, a small subclass per failure.

Every error the project raises on purpose is a :class:`CanaryError`, so a caller can catch the
whole family at once::

    try:
        codec.decode(payload)
    except DecodeError as exc:
        dead_letter(reason=exc.reason)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model_canary.streams.messages import ControlCommand, ControlEvent


class CanaryError(Exception):
    """Root of every error model-canary raises on purpose."""


class ConfigError(CanaryError):
    """A setting, flag, plan or environment variable is missing or invalid."""


class RecordValidationError(CanaryError, ValueError):
    """A record (or a value on its way into one) fails its checks: an identity field is
    empty, an enum-like value unknown, a timestamp naive, basis points out of range, a tensor
    ragged. Also a ``ValueError``, so code that validates with ``except ValueError`` works.

    >>> from model_canary.streams.messages import EPOCH, Feedback
    >>> try:
    ...     Feedback(request_id="", model="iris", label="1", observed_at=EPOCH)
    ... except RecordValidationError as exc:
    ...     print(exc)
    Feedback.request_id must not be empty
    """


class RecordTypeError(RecordValidationError, TypeError):
    """A value of the wrong type where a record (or one of its fields) was expected."""


class CommandRejectedError(CanaryError):
    """A control command that changed nothing: invalid, not allowed in the rollout's phase,
    or (with signing on) unsigned, forged, stale or replayed.

    ``reason`` is the short code of the ``rejected`` event (``unknown-model``, ``bad-weight``,
    ``forbidden-transition``, ``invalid-command``, ``stale``, ``unsigned``...). The state
    machine raises it without ``event``; the control client raises it with the command it sent
    and the controller's event.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        command: ControlCommand | None = None,
        event: ControlEvent | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.command = command
        self.event = event


class DecodeError(CanaryError, ValueError):
    """A message could not be turned into a record (also a ``ValueError``).

    ``reason`` is a short machine-friendly code (it becomes the dead-letter reason header);
    the message text says what exactly is wrong.
    """

    reason = "undecodable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.detail = message


class UndecodableError(DecodeError):
    """The bytes are not a valid encoding of any known record (truncated, corrupt, not JSON)."""

    reason = "undecodable"


class UnknownSchemaError(DecodeError):
    """An Avro single-object message names a writer schema fingerprint nobody registered."""

    reason = "unknown-schema"


class InvalidRecordError(DecodeError):
    """The message decodes but its content is wrong: a required field is missing, a value
    has the wrong type, or an identifier is empty."""

    reason = "invalid-record"


class UnsupportedContentTypeError(DecodeError):
    """The ``content-type`` header names an encoding the project does not read."""

    reason = "unsupported-content-type"


class PayloadTooLargeError(DecodeError):
    """The message is larger than the configured size limit."""

    reason = "too-large"


class EvidenceError(CanaryError, ValueError):
    """Evidence that cannot be read or applied: malformed packed columns, a record of another
    rollout, a snapshot this version cannot read. Also a ``ValueError``."""


class BrokerError(CanaryError):
    """The local development broker could not be installed, started or stopped."""


class KafkaOperationError(CanaryError):
    """A Kafka client operation failed; carries librdkafka's error code and description.

    >>> str(KafkaOperationError("create topics", "TOPIC_AUTHORIZATION_FAILED", "not allowed"))
    'create topics failed: TOPIC_AUTHORIZATION_FAILED: not allowed'
    """

    def __init__(self, operation: str, code: str, description: str, *, retriable: bool = False):
        super().__init__(f"{operation} failed: {code}: {description}")
        self.operation = operation
        self.code = code
        self.description = description
        self.retriable = retriable


class OutputRefusedError(CanaryError):
    """A message an agent was about to write cannot be written, whatever the retries: it is
    larger than the topic (or producer) accepts, or Kafka refused that one message.

    ``reason`` becomes the refusal's reason (the error result's ``error_type`` and the dead
    letter's reason): ``too-large``, or Kafka's error name in lower case with dashes.

    >>> OutputRefusedError("too-large", "2097152 bytes exceed canary.results' limit").reason
    'too-large'
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class KafkaUnavailableError(CanaryError):
    """No Kafka cluster answered at the bootstrap servers in time, or it refused the client."""


class RequestTimeoutError(CanaryError):
    """No served result arrived for a request within its timeout."""


class ModelContractError(CanaryError, ValueError):
    """A model broke its adapter's contract for a whole batch (returned something that is not
    a list, or the wrong number of items); the worker answers every item with an error."""
