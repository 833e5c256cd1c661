"""Secrets in Kafka settings never show in a repr, an error message or a broker description."""

from __future__ import annotations

import pytest

from model_canary.agents.broker.security import BrokerSecurity
from model_canary.streams.errors import ConfigError
from model_canary.streams.settings import (
    REDACTED,
    Settings,
    is_secret,
    parse_key_values,
    redact_config,
)

SECRET = "hunter2-very-secret"


@pytest.mark.parametrize(
    "name",
    [
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "sasl.jaas.config",
        "SASL.PASSWORD",
    ],
)
def test_secret_settings_are_recognised(name: str) -> None:
    assert is_secret(name)
    assert redact_config({name: SECRET}) == {name: REDACTED}


@pytest.mark.parametrize(
    "name", ["sasl.username", "sasl.mechanism", "security.protocol", "ssl.ca.location"]
)
def test_plain_settings_are_shown(name: str) -> None:
    assert not is_secret(name)
    assert redact_config({name: "x"}) == {name: "x"}


def test_settings_repr_hides_passwords_but_keeps_the_rest() -> None:
    s = Settings.from_env(
        {"CANARY_KAFKA_SASL_PASSWORD": SECRET, "CANARY_KAFKA_SASL_USERNAME": "alice"},
        extra_config={"ssl.key.password": SECRET},
    )
    for text in (repr(s), str(s), f"{s}", repr([s])):
        assert SECRET not in text
        assert "alice" in text and REDACTED in text
    # Redaction is for display only: clients still get the real value.
    assert s.extra_config["sasl.password"] == SECRET


def test_a_malformed_secret_setting_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        parse_key_values([f"sasl.password:{SECRET}"])
    assert SECRET not in str(err.value)
    with pytest.raises(ConfigError, match=r"linger\.ms:5"):
        parse_key_values(["linger.ms:5"])


def test_broker_security_repr_names_users_only() -> None:
    sec = BrokerSecurity({"admin": SECRET, "alice": "other-secret"})
    assert SECRET not in repr(sec) and "alice" in repr(sec)
    props = sec.server_properties(29116, 29117)
    assert props["super.users"] == "User:admin"
    assert props["listeners"].startswith("SASL_PLAINTEXT://127.0.0.1:29116")
    assert sec.format_arguments().count("--add-scram") == 2


@pytest.mark.parametrize(
    ("users", "message"),
    [
        ({"alice": "x"}, "admin user"),
        ({"admin": 'quo"te'}, "plain words"),
        ({"admin": ""}, "plain words"),
    ],
)
def test_broker_security_rejects_what_would_break_its_files(
    users: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        BrokerSecurity(users)
