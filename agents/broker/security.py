"""Opt-in SASL/SCRAM authentication and ACL authorization for the local broker.

Clients connect with SCRAM over a ``SASL_PLAINTEXT`` listener; the combined broker reaches its
own controller over a ``SASL_PLAINTEXT`` listener with ``PLAIN`` as the admin user (KRaft
cannot use SCRAM there: the SCRAM credentials live in the metadata log the controller serves).
The SCRAM credentials are written into the metadata at format time, so the first start already
authenticates everyone (and a later change of passwords needs a fresh state folder); the
StandardAuthorizer denies what no ACL allows, except to the admin (a super user).

>>> sec = BrokerSecurity({"admin": "a-secret", "alice": "b-secret"})
>>> sec.client_config("alice")["sasl.username"]
'alice'
>>> sec
BrokerSecurity(users=['admin', 'alice'], admin='admin', mechanism='SCRAM-SHA-512')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from model_canary.streams.errors import ConfigError

__all__ = ["BrokerSecurity"]

_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """SCRAM users (name -> password) of the local broker; ``admin`` is its super user."""

    users: Mapping[str, str]
    admin: str = "admin"
    mechanism: str = "SCRAM-SHA-512"

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
            f"mechanism={self.mechanism!r})"
        )

    def client_config(self, user: str) -> dict[str, str]:
        """The librdkafka settings that connect as ``user``."""
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": self.mechanism,
            "sasl.username": user,
            "sasl.password": self.users[user],
        }

    def server_properties(self, port: int, controller_port: int) -> dict[str, str]:
        """The server.properties entries replacing the PLAINTEXT listeners."""
        password = self.users[self.admin]
        scram_login = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain_login = "org.apache.kafka.common.security.plain.PlainLoginModule"
        jaas_key = f"listener.name.sasl_plaintext.{self.mechanism.lower()}.sasl.jaas.config"
        return {
            "listeners": f"SASL_PLAINTEXT://127.0.0.1:{port},"
            f"CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,"
            "CONTROLLER:SASL_PLAINTEXT",
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
        }

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` options storing every user's SCRAM credential."""
        args: list[str] = []
        for name, password in sorted(self.users.items()):
            args += ["--add-scram", f"{self.mechanism}=[name={name},password={password}]"]
        return args
