"""Control-plane keys: HMAC secrets with a key id, kept out of every repr, log line and error.

A key ring is the set of keys a process knows; its first key is the one it signs with, all of
them verify (so a key can be rotated: add the new key to the verifiers' rings, switch the
signers, then drop the old key). Lines read ``key_id:secret``; a line without ``:`` is a bare
secret with the key id ``default``.

>>> ring = KeyRing.parse("ops:0123456789abcdef0123\\nevaluator:fedcba9876543210fedc")
>>> ring.key_ids, ring.signer.key_id if ring.signer else None
(('ops', 'evaluator'), 'ops')
>>> ring
KeyRing(key_ids=('ops', 'evaluator'))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from model_canary.streams.errors import ConfigError

DEFAULT_KEY_ID = "default"
MIN_SECRET_BYTES = 16
KEY_ENV = "CANARY_CONTROL_KEY"
KEY_FILE_ENV = "CANARY_CONTROL_KEY_FILE"


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """Secret bytes whose ``repr`` and ``str`` never show them.

    >>> Secret(b"hunter2hunter2hunter2")
    Secret(<redacted>)
    """

    value: bytes

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__


ANYONE = "*"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One HMAC key, the id commands name it by, and the principals it may sign for (empty:
    its key id only)."""

    key_id: str
    secret: Secret
    principals: frozenset[str] = frozenset()

    @property
    def allowed(self) -> frozenset[str]:
        """The ``issued_by`` values this key may sign (``*``: any)."""
        return self.principals or frozenset({self.key_id})

    def may_sign_for(self, principal: str) -> bool:
        return ANYONE in self.allowed or principal in self.allowed

    @property
    def principal(self) -> str:
        """Who a command signed with this key is issued by, unless the signer says: its key
        id when allowed, else the first of its principals."""
        if self.may_sign_for(self.key_id):
            return self.key_id
        return sorted(self.allowed)[0]


@dataclass(frozen=True, slots=True, repr=False)
class KeyRing:
    """The keys a process knows (see the module example); empty means "not configured"."""

    keys: tuple[SigningKey, ...] = ()

    def __post_init__(self) -> None:
        unique: dict[str, SigningKey] = {}
        for key in self.keys:
            known = unique.setdefault(key.key_id, key)
            if known != key:
                raise ConfigError(f"control key id {key.key_id!r} is given twice, differently")
        object.__setattr__(self, "keys", tuple(unique.values()))

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={self.key_ids!r})"

    def __bool__(self) -> bool:
        return bool(self.keys)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self.keys)

    @property
    def signer(self) -> SigningKey | None:
        """The key this process signs with: the first one."""
        return self.keys[0] if self.keys else None

    def secret(self, key_id: str) -> Secret | None:
        key = self.key(key_id)
        return None if key is None else key.secret

    def key(self, key_id: str) -> SigningKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)

    def to_text(self) -> str:
        """The ring as :meth:`parse` reads it (``key_id:secret`` lines): a secret in clear,
        for handing the ring to a child process's environment, never for a log."""
        return "\n".join(f"{k.key_id}:{k.secret.value.decode()}" for k in self.keys)

    def __add__(self, other: KeyRing) -> KeyRing:
        return KeyRing(self.keys + other.keys)

    @classmethod
    def parse(cls, text: str, *, source: str = KEY_ENV) -> KeyRing:
        """Keys from ``key_id:secret`` lines; blank lines and ``#`` comments are skipped."""
        keys = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                keys.append(parse_key(line, f"{source}, line {number}"))
        return cls(tuple(keys))

    @classmethod
    def read(cls, path: Path) -> KeyRing:
        """The key ring in a file (see :meth:`parse`); an empty file is an error."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read control key file {path}: {exc}") from None
        ring = cls.parse(text, source=str(path))
        if not ring:
            raise ConfigError(f"control key file {path} holds no key")
        return ring

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KeyRing:
        """``CANARY_CONTROL_KEY`` (signs) then the keys of ``CANARY_CONTROL_KEY_FILE``."""
        ring = cls.parse(env[KEY_ENV]) if env.get(KEY_ENV) else cls()
        if env.get(KEY_FILE_ENV):
            ring += cls.read(Path(env[KEY_FILE_ENV]).expanduser())
        return ring


def parse_key(line: str, source: str) -> SigningKey:
    """``"ops:SECRET"`` -> key ``ops`` (signs as ``ops``); ``"ops[alice,bob]:SECRET"`` -> key
    ``ops`` signing as ``alice`` or ``bob``; ``"SECRET"`` -> key ``default``.

    Errors name the line, never its content (it may be a secret).
    """
    head, sep, secret = line.strip().partition(":")
    if not sep:
        head, secret = DEFAULT_KEY_ID, head
    key_id, principals = _principals(head.strip(), source)
    secret = secret.strip()
    if not valid_key_id(key_id):
        raise ConfigError(
            f"{source}: a key id must be 1-64 letters, digits, '.', '_' or '-' "
            "(a secret containing ':' needs an explicit key id, 'ID:SECRET')"
        )
    raw = secret.encode("utf-8")
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{source}: the secret of key {key_id!r} is shorter than {MIN_SECRET_BYTES} bytes "
            "(make one with: openssl rand -hex 32)"
        )
    return SigningKey(key_id, Secret(raw), principals)


def _principals(head: str, source: str) -> tuple[str, frozenset[str]]:
    """``"ops[alice, bob]"`` -> ``("ops", {"alice", "bob"})``; ``"ops"`` -> ``("ops", {})``."""
    if not head.endswith("]") or "[" not in head:
        return head, frozenset()
    key_id, _, rest = head[:-1].partition("[")
    names = frozenset(name.strip() for name in rest.split(","))
    if not names or not all(n == ANYONE or valid_key_id(n) for n in names):
        raise ConfigError(
            f"{source}: principals are written ID[name,name]: names of 1-64 letters, digits, "
            "'.', '_' or '-', or '*' for anyone"
        )
    return key_id.strip(), names


def valid_key_id(key_id: str) -> bool:
    return 0 < len(key_id) <= 64 and all(
        c.isascii() and (c.isalnum() or c in "._-") for c in key_id
    )
