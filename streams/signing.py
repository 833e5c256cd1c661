"""Signed control commands and decision records: HMAC-SHA256 over a canonical encoding, and
the verifier that rejects unsigned, forged, stale and replayed commands.

The signature covers every field of the record except ``signature`` itself (``key_id``
included, so a signature cannot be moved to another key), encoded as sorted-key compact ASCII
JSON with timestamps as epoch milliseconds and nested records as objects: the same bytes on
every Python version and after an Avro round trip. A key signs only for its principals (see
:mod:`model_canary.streams.signing_keys`): a command's ``issued_by`` must be one of them, and a
decision record is the evaluator's, so its key must be allowed to sign as ``evaluator``.

>>> from dataclasses import replace
>>> from model_canary.streams.messages import ControlCommand, utc_now
>>> ring = KeyRing.parse("ops:0123456789abcdef0123")
>>> cmd = ControlCommand(command_id="c1", model="iris", action="pause", issued_by="ops",
...                      issued_at=utc_now())
>>> signed = sign(cmd, ring.signer) if ring.signer else cmd
>>> verifier = Verifier(ring)
>>> verifier.verify(signed, utc_now()) is None
True
>>> verifier.verify(signed, utc_now()).reason   # the same command again
'replayed'
>>> Verifier(ring).verify(cmd, utc_now()).reason
'unsigned'
>>> Verifier(ring).verify(sign(replace(cmd, issued_by="evaluator"), ring.keys[0]), utc_now())
Rejection(reason='wrong-issuer', detail="key 'ops' signs for ops, not for 'evaluator'")
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import hmac
import json
from collections.abc import Hashable, Mapping
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from model_canary.streams.errors import ConfigError, RecordTypeError
from model_canary.streams.messages import ControlCommand, Decision, epoch_ms
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

#: What can be signed: both carry ``key_id`` and ``signature``.
Signed = ControlCommand | Decision
#: Who a decision record is issued by: its key must be allowed to sign for this principal.
DECISION_ISSUER = "evaluator"

DEFAULT_WINDOW = timedelta(seconds=300)
# Domain separation: these bytes can never be mistaken for another message signed with the key.
_DOMAINS: dict[type, bytes] = {
    ControlCommand: b"model-canary/control-command/v1\n",
    Decision: b"model-canary/decision/v1\n",
}


def canonical_bytes(record: Signed) -> bytes:
    """The bytes a command's or decision's signature covers.

    Fields that are ``None`` are left out, so a field added to the schema later (with a null
    default) keeps the signatures of records that do not use it valid in both directions; a
    verifier that does not know a field a record sets drops it when decoding, and the
    signature then fails, which is the safe way round.
    """
    text = json.dumps(_fields(record, skip="signature"), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True)  # fmt: skip
    return _DOMAINS[type(record)] + text.encode("ascii")


def _fields(record: Any, skip: str = "") -> dict[str, Any]:
    return {
        f.name: _plain(getattr(record, f.name))
        for f in dataclasses.fields(record)
        if f.name != skip and getattr(record, f.name) is not None
    }


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return epoch_ms(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float):  # bool is an int; a float keeps its repr
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)  # a nested record (a decision's evidence and offsets)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    raise RecordTypeError(f"no canonical form for a {type(value).__name__} field")


def _mac(secret: Secret, record: Signed) -> str:
    return hmac.new(secret.value, canonical_bytes(record), hashlib.sha256).hexdigest()


R = TypeVar("R", ControlCommand, Decision)


def sign(record: R, key: SigningKey) -> R:
    """A copy of ``record`` with ``key_id`` and ``signature`` set (see the module example)."""
    unsigned = dataclasses.replace(record, key_id=key.key_id, signature=None)
    return dataclasses.replace(unsigned, signature=_mac(key.secret, unsigned))


def sign_if_keyed(record: R, ring: KeyRing) -> R:
    """Sign with the ring's signing key; unchanged when there is none or it is signed already."""
    if ring.signer is None or record.signature is not None:
        return record
    return sign(record, ring.signer)


def issuer(record: Signed) -> str:
    """Who the record speaks for: a command's ``issued_by``; a decision's is the evaluator."""
    return record.issued_by if isinstance(record, ControlCommand) else DECISION_ISSUER


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

    def authentic(self, record: Signed) -> Rejection | None:
        """Check the signature, and that its key may sign for the record's issuer, only:
        ``None`` when both hold."""
        what = "command" if isinstance(record, ControlCommand) else "decision"
        if record.signature is None or record.key_id is None:
            return Rejection("unsigned", f"the {what} carries no signature")
        key_id = record.key_id[:64]
        key = self.ring.key(record.key_id)
        if key is None:
            return Rejection("unknown-key-id", f"no control key has the id {key_id!r}")
        expected = _mac(key.secret, record).encode("ascii")
        if not hmac.compare_digest(expected, record.signature.encode("utf-8", "replace")):
            return Rejection(
                "bad-signature", f"the signature does not match key {key_id!r}: forged or altered"
            )
        who = issuer(record)
        if not key.may_sign_for(who):
            return Rejection(
                "wrong-issuer",
                f"key {key_id!r} signs for {', '.join(sorted(key.allowed))}, not for {who[:64]!r}",
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
