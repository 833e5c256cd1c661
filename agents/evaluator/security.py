"""The librdkafka security settings every other agent takes, translated for faust/aiokafka.

>>> faust_credentials({}) is None
True
>>> faust_credentials({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
...                    "sasl.username": "ev", "sasl.password": "s"}).mechanism.value
'SCRAM-SHA-512'
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import faust

from model_canary.streams.errors import ConfigError

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def faust_credentials(extra: Mapping[str, str]) -> Any | None:
    """faust ``broker_credentials`` for ``security.protocol`` PLAINTEXT, SSL, SASL_PLAINTEXT or
    SASL_SSL with PLAIN or SCRAM (``sasl.username``/``sasl.password``, ``ssl.ca.location``,
    ``ssl.certificate.location``/``ssl.key.location``/``ssl.key.password``)."""
    protocol = extra.get("security.protocol", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return None
    context = _ssl_context(extra) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        mechanism = extra.get("sasl.mechanism", "PLAIN").upper()
        if mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"the evaluator supports sasl.mechanism {', '.join(SASL_MECHANISMS)}, "
                f"not {mechanism}"
            )
        return faust.SASLCredentials(
            username=extra.get("sasl.username"),
            password=extra.get("sasl.password"),
            mechanism=mechanism,
            ssl_context=context,
        )
    raise ConfigError(f"unknown security.protocol {protocol!r}")


def _ssl_context(extra: Mapping[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=extra.get("ssl.ca.location"))
    cert = extra.get("ssl.certificate.location")
    if cert:
        context.load_cert_chain(
            cert, keyfile=extra.get("ssl.key.location"), password=extra.get("ssl.key.password")
        )
    if extra.get("enable.ssl.certificate.verification", "true").lower() == "false":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
