"""One settings object for every agent and command, fed by ``CANARY_*`` environment variables
and overridden by command-line flags.

Unknown librdkafka settings (SASL, TLS, timeouts...) pass through untouched to every Kafka
client, so a secured cluster needs configuration, not code::

    CANARY_BOOTSTRAP=kafka-1:9093 \\
    CANARY_KAFKA_SECURITY_PROTOCOL=SASL_SSL CANARY_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 \\
    canary router

>>> s = Settings.from_env({"CANARY_TOPIC_PREFIX": "ml", "CANARY_KAFKA_SASL_MECHANISM": "PLAIN"})
>>> s.topic_prefix, dict(s.extra_config)
('ml', {'sasl.mechanism': 'PLAIN'})
>>> s.bootstrap_servers
'127.0.0.1:9092'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from model_canary.streams.errors import ConfigError
from model_canary.streams.latency import (
    AT_LEAST_ONCE_COMMIT_MS,
    DEFAULT_DELIVERY,
    DEFAULT_LATENCY,
    CommitPolicy,
    Delivery,
    LatencyMode,
    LatencyProfile,
    delivery_of,
    latency_mode,
    profile_of,
)
from model_canary.streams.signing_keys import KEY_ENV, KEY_FILE_ENV, KeyRing

ENV_PREFIX = "CANARY_"
KAFKA_ENV_PREFIX = "CANARY_KAFKA_"
CONNECT_TIMEOUT_ENV = "CANARY_CONNECT_TIMEOUT"

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "model-canary"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "model-canary"


@dataclass(frozen=True, slots=True)
class Settings:
    """Where Kafka is, how topics are named, and how clients connect.

    ``bootstrap`` is ``None`` for the local development broker (``canary broker start``,
    listening on ``127.0.0.1:broker_port``); any other value points at an existing cluster and
    nothing local is started.
    """

    bootstrap: str | None = None
    topic_prefix: str = "canary"
    broker_port: int = 9092
    state_dir: Path = field(default_factory=_default_state_dir)
    cache_dir: Path = field(default_factory=_default_cache_dir)
    partitions: int = 3
    replication_factor: int = 1
    # How long transactions stay open, linger and fetch waits (streams.latency); a commit
    # interval, when set, replaces the profile's commit policy (commit every N ms).
    latency: LatencyMode = DEFAULT_LATENCY
    commit_interval_ms: int | None = None
    # The data path's guarantee: exactly-once (transactions) or at-least-once.
    delivery: Delivery = DEFAULT_DELIVERY
    max_request_bytes: int = 1_048_576
    metrics_port: int | None = None
    # How long a CLI command waits for Kafka to answer before it fails (agents wait on).
    connect_timeout_s: float = 10.0
    extra_config: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    # Keys that sign and verify control commands (CANARY_CONTROL_KEY, CANARY_CONTROL_KEY_FILE).
    control_keys: KeyRing = field(default_factory=KeyRing)
    # How producers write evidence: "sets" (one message per transaction and model, the
    # default: half the evaluator's messages) or "records" (one per cell); readers take both
    # (docs/evidence.md).
    evidence_format: str = "sets"

    def __post_init__(self) -> None:
        if not self.topic_prefix or not all(c.isalnum() or c in "._-" for c in self.topic_prefix):
            raise ConfigError(
                f"topic prefix {self.topic_prefix!r} must be non-empty and use only "
                "letters, digits, '.', '_' and '-'"
            )
        if not 1 <= self.broker_port <= 65535:
            raise ConfigError(f"broker port {self.broker_port} is outside 1..65535")
        for name in ("partitions", "replication_factor", "commit_interval_ms", "max_request_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        object.__setattr__(self, "latency", latency_mode(self.latency))
        object.__setattr__(self, "delivery", delivery_of(self.delivery))
        if not self.connect_timeout_s > 0:
            raise ConfigError(f"the connect timeout must be > 0 s, got {self.connect_timeout_s}")
        object.__setattr__(self, "extra_config", MappingProxyType(dict(self.extra_config)))
        if self.evidence_format not in ("records", "sets"):
            raise ConfigError(
                f"the evidence format must be records or sets, got {self.evidence_format!r}"
            )

    @property
    def evidence_sets(self) -> bool:
        """Whether producers write evidence as sets (``CANARY_EVIDENCE_FORMAT=sets``).

        >>> alone = Settings.from_env({"CANARY_EVIDENCE_FORMAT": "records"})
        >>> Settings().evidence_sets, alone.evidence_sets, alone.to_env()["CANARY_EVIDENCE_FORMAT"]
        (True, False, 'records')
        """
        return self.evidence_format == "sets"

    def __repr__(self) -> str:
        # Settings end up in logs, tracebacks and test reports: never with a password in them.
        fields = ", ".join(
            f"{name}={redact_config(value) if name == 'extra_config' else value!r}"
            for name, value in ((n, getattr(self, n)) for n in self.__dataclass_fields__)
        )
        return f"Settings({fields})"

    @property
    def bootstrap_servers(self) -> str:
        """The ``bootstrap.servers`` every client uses."""
        return self.bootstrap or f"127.0.0.1:{self.broker_port}"

    @property
    def uses_local_broker(self) -> bool:
        return self.bootstrap is None

    @property
    def profile(self) -> LatencyProfile:
        """The latency profile (linger, fetch wait, commit policy) every client follows."""
        return profile_of(self.latency)

    @property
    def commit_policy(self) -> CommitPolicy:
        """When exactly-once loops commit: the profile's policy, or every
        ``commit_interval_ms`` when that is set.

        >>> Settings(latency="throughput").commit_policy
        CommitPolicy(min_ms=100, max_ms=100)
        >>> Settings(commit_interval_ms=5000).commit_policy
        CommitPolicy(min_ms=5000, max_ms=5000)
        """
        if self.commit_interval_ms is not None:
            return CommitPolicy.every(self.commit_interval_ms)
        return self.profile.commit

    @property
    def data_commit_policy(self) -> CommitPolicy:
        """When the data path's loops (router, workers) commit: :attr:`commit_policy` with
        exactly-once delivery; with at-least-once, every ``AT_LEAST_ONCE_COMMIT_MS`` (or
        ``commit_interval_ms`` when that is set), whatever the profile.

        >>> Settings(delivery="at-least-once").data_commit_policy
        CommitPolicy(min_ms=1000, max_ms=1000)
        >>> Settings().data_commit_policy == Settings().commit_policy
        True
        """
        if self.exactly_once or self.commit_interval_ms is not None:
            return self.commit_policy
        return CommitPolicy.every(AT_LEAST_ONCE_COMMIT_MS)

    @property
    def exactly_once(self) -> bool:
        return self.delivery is Delivery.EXACTLY_ONCE

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given fields replaced; ``None`` values are ignored (unset flags)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``CANARY_*`` variables, then ``overrides`` (``None`` means unset)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for var, name in _TEXT_VARS.items():
            if env.get(var):
                values[name] = env[var]
        for var, name in _NUMBER_VARS.items():
            if env.get(var):
                values[name] = _parse_int(var, env[var])
        for var, name in _FLOAT_VARS.items():
            if env.get(var):
                values[name] = _parse_float(var, env[var])
        for var, name in _PATH_VARS.items():
            if env.get(var):
                values[name] = Path(env[var]).expanduser()
        extra = kafka_config_from_env(env)
        extra.update(overrides.pop("extra_config", None) or {})
        values["extra_config"] = extra
        values["control_keys"] = KeyRing.from_env(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The ``CANARY_*`` variables from which :meth:`from_env` makes these settings again:
        how a process hands its settings to the agents it starts (the values include Kafka
        passwords and control keys, as the parent's own environment did: never log them).

        >>> s = Settings(topic_prefix="ml", partitions=6, extra_config={"sasl.mechanism": "PLAIN"})
        >>> env = s.to_env()
        >>> env["CANARY_TOPIC_PREFIX"], env["CANARY_KAFKA_SASL_MECHANISM"]
        ('ml', 'PLAIN')
        >>> "CANARY_BOOTSTRAP" in env  # the local broker: its port travels instead
        False
        >>> Settings.from_env(env) == s
        True
        """
        env: dict[str, str] = {}
        for var, name in (
            *_TEXT_VARS.items(),
            *_NUMBER_VARS.items(),
            *_FLOAT_VARS.items(),
            *_PATH_VARS.items(),
        ):
            value = getattr(self, name)
            if value is not None:
                env[var] = str(value)
        for key, value in self.extra_config.items():
            env[KAFKA_ENV_PREFIX + key.upper().replace(".", "_")] = value
        if self.control_keys:
            env[KEY_ENV] = self.control_keys.to_text()
        return env

    def child_env(
        self, extra: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The environment of a process started with these settings: ``base`` (default: this
        process's environment) without any variable settings are read from, then
        :meth:`to_env`, then ``extra``; Python output unbuffered, so logs are timely."""
        base = os.environ if base is None else base
        env = {k: v for k, v in base.items() if not is_settings_var(k)}
        env.update(self.to_env())
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env


_TEXT_VARS = {
    "CANARY_BOOTSTRAP": "bootstrap",
    "CANARY_TOPIC_PREFIX": "topic_prefix",
    # Checked (and made the enum) by Settings itself.
    "CANARY_LATENCY": "latency",
    "CANARY_DELIVERY": "delivery",
    "CANARY_EVIDENCE_FORMAT": "evidence_format",
}
_NUMBER_VARS = {
    "CANARY_BROKER_PORT": "broker_port",
    "CANARY_PARTITIONS": "partitions",
    "CANARY_REPLICATION_FACTOR": "replication_factor",
    "CANARY_COMMIT_INTERVAL_MS": "commit_interval_ms",
    "CANARY_MAX_REQUEST_BYTES": "max_request_bytes",
    "CANARY_METRICS_PORT": "metrics_port",
}
_FLOAT_VARS = {CONNECT_TIMEOUT_ENV: "connect_timeout_s"}
_PATH_VARS = {"CANARY_STATE_DIR": "state_dir", "CANARY_CACHE_DIR": "cache_dir"}


def is_settings_var(name: str) -> bool:
    """Whether :meth:`Settings.from_env` reads the environment variable ``name``.

    >>> is_settings_var("CANARY_KAFKA_SASL_PASSWORD"), is_settings_var("CANARY_SCHEMA_DIRS")
    (True, False)
    """
    return (
        name in _TEXT_VARS
        or name in _NUMBER_VARS
        or name in _FLOAT_VARS
        or name in _PATH_VARS
        or name.startswith(KAFKA_ENV_PREFIX)
        or name in (KEY_ENV, KEY_FILE_ENV)
    )


REDACTED = "[redacted]"
# Parts of a setting's name that mark its value as a secret: sasl.password, ssl.key.password,
# ssl.keystore.password, ssl.key.pem, sasl.oauthbearer.client.secret, sasl.jaas.config...
_SECRET_MARKERS = ("password", "secret", "token", "key", "credential", "jaas", "oauthbearer.config")


def is_secret(name: str) -> bool:
    """Whether a Kafka client setting's value must never be shown.

    >>> is_secret("sasl.password"), is_secret("ssl.keystore.password"), is_secret("sasl.username")
    (True, True, False)
    """
    lowered = name.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def redact_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` safe to log: every secret value replaced by ``[redacted]``.

    >>> redact_config({"sasl.username": "ev", "sasl.password": "s3cr3t"})
    {'sasl.username': 'ev', 'sasl.password': '[redacted]'}
    """
    return {k: REDACTED if is_secret(k) else v for k, v in config.items()}


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _parse_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def kafka_config_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """librdkafka settings from the environment.

    ``CANARY_KAFKA_CONFIG_FILE`` names a Java-style properties file (``key=value`` lines);
    each ``CANARY_KAFKA_<NAME>`` variable sets ``<name>`` with ``_`` read as ``.``
    (librdkafka property names use dots only). Variables win over the file.
    """
    config: dict[str, str] = {}
    path = env.get("CANARY_KAFKA_CONFIG_FILE")
    if path:
        config.update(read_properties(Path(path)))
    for var, value in env.items():
        if var.startswith(KAFKA_ENV_PREFIX) and var != "CANARY_KAFKA_CONFIG_FILE":
            config[var[len(KAFKA_ENV_PREFIX) :].lower().replace("_", ".")] = value
    return config


def read_properties(path: Path) -> dict[str, str]:
    """Parse ``key=value`` lines; ``#`` and ``!`` start comments."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read Kafka config file {path}: {exc.strerror}") from None
    return parse_key_values(
        (line for line in lines if line.strip() and line.lstrip()[0] not in "#!"),
        source=str(path),
    )


def parse_key_values(items: Iterable[str], *, source: str = "--kafka-config") -> dict[str, str]:
    """``["a.b=1", "c=x=y"]`` -> ``{"a.b": "1", "c": "x=y"}``; a missing ``=`` is an error."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # The text may be a secret typed with the wrong separator: never echo it.
            shown = REDACTED if is_secret(item) else repr(item.strip())
            raise ConfigError(f"{source}: expected KEY=VALUE, got {shown}")
        out[key.strip()] = value.strip()
    return out
