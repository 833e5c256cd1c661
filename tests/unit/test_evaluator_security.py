from __future__ import annotations

import ssl

import pytest

from model_canary.agents.evaluator.security import faust_credentials
from model_canary.streams.errors import ConfigError


def test_plaintext_needs_no_credentials() -> None:
    assert faust_credentials({"security.protocol": "plaintext"}) is None


def test_sasl_ssl_scram() -> None:
    creds = faust_credentials(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "evaluator",
            "sasl.password": "secret",
            "enable.ssl.certificate.verification": "false",
        }
    )
    assert creds is not None
    assert creds.username == "evaluator" and creds.mechanism.value == "SCRAM-SHA-256"
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert creds.ssl_context.verify_mode == ssl.CERT_NONE
    assert "secret" not in repr(creds)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "GSSAPI"}, "GSSAPI"),
        ({"security.protocol": "CARRIER_PIGEON"}, "unknown security.protocol"),
    ],
)
def test_unsupported_settings_are_clear_errors(config: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        faust_credentials(config)
