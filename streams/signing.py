"""Signed control commands: HMAC-SHA256 over a canonical encoding, and the verifier that
rejects unsigned, forged, stale and replayed commands.

The signature covers every field of the command except ``signature`` itself (``key_id``
included, so a signature cannot be moved to another key), encoded as sorted-key compact ASCII
JSON with timestamps as epoch milliseconds: the same bytes on every Python version and after
an Avro round trip.

>>> from model_canary.streams.messages import ControlCommand, utc_now
>>> ring = KeyRing.parse("ops:0123456789abcdef0123")
>>> cmd = ControlCommand(command_id="c1", model="iris", action="pause", issued_at=utc_now())
>>> signed = sign(cmd, ring.signer) if ring.signer else cmd
>>> verifier = Verifier(ring)
>>> verifier.verify(signed, utc_now()) is None
True
>>> verifier.verify(signed, utc_now()).reason   # the same command again
'replayed'
>>> Verifier(ring).verify(cmd, utc_now()).reason
'unsigned'
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import hmac
import json
import math
from collections.abc import Hashable, Mapping
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from model_canary.streams.errors import ConfigError, RecordTypeError
from model_canary.streams.messages import ControlCommand, epoch_ms
from model_canary.streams.signing_keys import KeyRing, Secret, SigningKey

__all__ = [
    "DEFAULT_WINDOW",
    "KeyRing",
    "Rejection",
    "Verifier",
    "canonical_bytes",
    "sign",
    "sign_if_keyed",
]

DEFAULT_WINDOW = timedelta(seconds=300)
# Domain separation: these bytes can never be mistaken for another message signed with the key.
_DOMAIN = b"model-canary/control-command/v1\n"


def canonical_bytes(command: ControlCommand) -> bytes:
    """The bytes a command's signature covers.

    Fields that are ``None`` are left out, so a field added to the schema later (with a null
    default) keeps the signatures of commands that do not use it valid in both directions; a
    verifier that does not know a field a command sets drops it when decoding, and the
    signature then fails, which is the safe way round.
    """
    fields = {
        f.name: _plain(getattr(command, f.name))
        for f in dataclasses.fields(command)
        if f.name != "signature" and getattr(command, f.name) is not None
    }
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _DOMAIN + text.encode("ascii")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return epoch_ms(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, str | int):  # bool is an int
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value  # json writes the shortest text that reads back as the same float
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    raise RecordTypeError(f"no canonical form for a {type(value).__name__} field")


def _mac(secret: Secret, command: ControlCommand) -> str:
    return hmac.new(secret.value, canonical_bytes(command), hashlib.sha256).hexdigest()


def sign(command: ControlCommand, key: SigningKey) -> ControlCommand:
    """A copy of ``command`` with ``key_id`` and ``signature`` set (see the module example)."""
    unsigned = dataclasses.replace(command, key_id=key.key_id, signature=None)
    return dataclasses.replace(unsigned, signature=_mac(key.secret, unsigned))


def sign_if_keyed(command: ControlCommand, ring: KeyRing) -> ControlCommand:
    """Sign with the ring's signing key; unchanged when there is none or it is signed already."""
    if ring.signer is None or command.signature is not None:
        return command
    return sign(command, ring.signer)


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """Why a command was refused: a short code and the words (never a secret)."""

    reason: str
    detail: str


_NEVER = object()


class Verifier:
    """Accepts a command only if it is signed by a key of the ring, issued within ``window`` of
    this clock (either way) and its id was not seen before (see the module example).

    Ids are remembered only for as long as their command would pass the time check, so the
    replay cache stays bounded while a replay can never outlive it. ``origin`` says where a
    command was read (partition and offset): reading the same message again, after an aborted
    transaction or a rebalance, is a redelivery, not a replay; the same id anywhere else is.
    """

    def __init__(self, ring: KeyRing, window: timedelta = DEFAULT_WINDOW) -> None:
        if not ring:
            raise ConfigError("a verifier needs at least one key")
        if window <= timedelta(0):
            raise ConfigError("the window must be positive")
        self.ring = ring
        self.window = window
        self._seen: dict[str, Hashable] = {}
        self._expiry: list[tuple[datetime, str]] = []  # heap of (issued_at, command_id)
        self._latest: datetime | None = None

    def __len__(self) -> int:
        """How many command ids are remembered."""
        return len(self._seen)

    def authentic(self, command: ControlCommand) -> Rejection | None:
        """Check the signature only: ``None`` when it is valid."""
        if command.signature is None or command.key_id is None:
            return Rejection("unsigned", "the command carries no signature")
        key_id = command.key_id[:64]
        secret = self.ring.secret(command.key_id)
        if secret is None:
            return Rejection("unknown-key-id", f"no control key has the id {key_id!r}")
        expected = _mac(secret, command).encode("ascii")
        if not hmac.compare_digest(expected, command.signature.encode("utf-8", "replace")):
            return Rejection(
                "bad-signature", f"the signature does not match key {key_id!r}: forged or altered"
            )
        return None

    def verify(
        self, command: ControlCommand, now: datetime, origin: Hashable = None
    ) -> Rejection | None:
        """``None`` if the command may be applied (its id is then remembered), else why not."""
        rejection = self.authentic(command)
        if rejection is not None:
            return rejection
        # A clock stepping back must not revive ids already forgotten as stale.
        self._latest = now = now if self._latest is None else max(now, self._latest)
        self._forget_before(now - self.window)
        age = now - command.issued_at
        window_s = f"{self.window.total_seconds():g}s"
        if age > self.window:
            return Rejection(
                "stale",
                f"issued {age.total_seconds():.0f}s ago; commands older than {window_s} "
                "are refused",
            )
        if -age > self.window:
            return Rejection(
                "future-timestamp",
                f"issued {-age.total_seconds():.0f}s in the future; clocks may differ by "
                f"{window_s} at most",
            )
        first = self._seen.get(command.command_id, _NEVER)
        if first is not _NEVER and (origin is None or first != origin):
            return Rejection("replayed", f"command id {command.command_id[:64]!r} was seen before")
        self._remember(command, origin)
        return None

    def remember(self, command: ControlCommand, origin: Hashable = None) -> bool:
        """Note an authentic command as seen (when re-reading the log after a restart)."""
        if self.authentic(command) is not None:
            return False
        self._remember(command, origin)
        return True

    def _remember(self, command: ControlCommand, origin: Hashable) -> None:
        if command.command_id not in self._seen:
            self._seen[command.command_id] = origin
            heapq.heappush(self._expiry, (command.issued_at, command.command_id))

    def _forget_before(self, oldest: datetime) -> None:
        while self._expiry and self._expiry[0][0] < oldest:
            _, command_id = heapq.heappop(self._expiry)
            del self._seen[command_id]
