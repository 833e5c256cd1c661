"""Opt-in SASL/SCRAM authentication and ACL authorization for the local broker, optionally
over TLS.

Clients connect with SCRAM over a ``SASL_PLAINTEXT`` listener, or ``SASL_SSL`` when ``tls``
is given (:mod:`model_canary.agents.broker.tls`: the broker's certificate, signed by a local CA
clients trust with ``ssl.ca.location``); the combined broker reaches its
own controller over a ``SASL_PLAINTEXT`` listener with ``PLAIN`` as the admin user (KRaft
cannot use SCRAM there: the SCRAM credentials live in the metadata log the controller serves).
The SCRAM credentials are written into the metadata at format time, so the first start already
authenticates everyone (and a later change of passwords needs a fresh state folder); the
StandardAuthorizer denies what no ACL allows, except to the admin (a super user).

>>> sec = BrokerSecurity({"admin": "a-secret", "alice": "b-secret"})
>>> sec.client_config("alice")["sasl.username"]
'alice'
>>> sec
BrokerSecurity(users=['admin', 'alice'], admin='admin', mechanism='SCRAM-SHA-512', tls=None)
>>> sec.protocol
'SASL_PLAINTEXT'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from model_canary.agents.broker.tls import BrokerTls
from model_canary.streams.errors import ConfigError

__all__ = ["BrokerSecurity"]

_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """SCRAM users (name -> password) of the local broker; ``admin`` is its super user."""

    users: Mapping[str, str]
    admin: str = "admin"
    mechanism: str = "SCRAM-SHA-512"
    tls: BrokerTls | None = None

    def __post_init__(self) -> None:
        if self.mechanism not in _MECHANISMS:
            raise ConfigError(f"mechanism must be one of {', '.join(_MECHANISMS)}")
        if self.admin not in self.users:
            raise ConfigError(f"the admin user {self.admin!r} needs a password in users")
        for name, password in self.users.items():
            # Both end up inside JAAS and kafka-storage option strings: keep them parseable.
            if not name or not password or any(c in name + password for c in '"\\,=[] \n'):
                raise ConfigError(f"user {name!r}: names and passwords must be plain words")
        object.__setattr__(self, "users", MappingProxyType(dict(self.users)))

    def __repr__(self) -> str:
        # Never the passwords: a repr ends up in logs and test reports.
        return (
            f"BrokerSecurity(users={sorted(self.users)}, admin={self.admin!r}, "
            f"mechanism={self.mechanism!r}, tls={self.tls!r})"
        )

    @property
    def protocol(self) -> str:
        """The client listener's security protocol."""
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"

    def client_config(self, user: str) -> dict[str, str]:
        """The librdkafka settings that connect as ``user``."""
        return {
            "security.protocol": self.protocol,
            "sasl.mechanism": self.mechanism,
            "sasl.username": user,
            "sasl.password": self.users[user],
            **(self.tls.client_config() if self.tls else {}),
        }

    def server_properties(self, port: int, controller_port: int) -> dict[str, str]:
        """The server.properties entries replacing the PLAINTEXT listeners."""
        password = self.users[self.admin]
        scram_login = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain_login = "org.apache.kafka.common.security.plain.PlainLoginModule"
        name = self.protocol
        jaas_key = f"listener.name.{name.lower()}.{self.mechanism.lower()}.sasl.jaas.config"
        return {
            "listeners": f"{name}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"{name}://127.0.0.1:{port}",
            "inter.broker.listener.name": name,
            "listener.security.protocol.map": f"{name}:{name},CONTROLLER:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": self.mechanism,
            "sasl.mechanism.inter.broker.protocol": self.mechanism,
            jaas_key: f'{scram_login} required username="{self.admin}" password="{password}";',
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": f"{plain_login} required "
            f'username="{self.admin}" password="{password}" user_{self.admin}="{password}";',
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{self.admin}",
            "allow.everyone.if.no.acl.found": "false",
            **(self.tls.server_properties() if self.tls else {}),
        }

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` options storing every user's SCRAM credential."""
        args: list[str] = []
        for name, password in sorted(self.users.items()):
            args += ["--add-scram", f"{self.mechanism}=[name={name},password={password}]"]
        return args


def read_users(path: Path) -> dict[str, str]:
    """SCRAM users from a file of ``NAME:PASSWORD`` lines (blank lines and ``#`` comments are
    skipped). Errors name the file and line, never a password.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "users"
    >>> _ = f.write_text("# who may connect\\nadmin:a-secret\\nrouter:r-secret\\n")
    >>> sorted(read_users(f))
    ['admin', 'router']
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read SCRAM users file {path}: {exc}") from None
    users: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, password = line.strip().partition(":")
        if not sep or not name or not password:
            raise ConfigError(f"{path}, line {number}: expected NAME:PASSWORD")
        if name in users:
            raise ConfigError(f"{path}, line {number}: user {name!r} is given twice")
        users[name] = password
    if not users:
        raise ConfigError(f"SCRAM users file {path} holds no user")
    return users
