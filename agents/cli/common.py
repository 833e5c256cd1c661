"""Options every ``canary`` command shares, and turning them into :class:`Settings`."""

from __future__ import annotations

import argparse
from pathlib import Path

from model_canary.streams.latency import Delivery, LatencyMode
from model_canary.streams.settings import Settings, parse_key_values


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (each also read from CANARY_* variables)")
    group.add_argument(
        "--bootstrap",
        metavar="HOST:PORT[,...]",
        help="an existing Kafka cluster (CANARY_BOOTSTRAP); default: the local broker",
    )
    group.add_argument(
        "--broker-port",
        type=int,
        metavar="PORT",
        help="port of the local development broker (CANARY_BROKER_PORT, default 9092)",
    )
    group.add_argument(
        "--topic-prefix",
        metavar="PREFIX",
        help="prefix of every topic name (CANARY_TOPIC_PREFIX, default 'canary')",
    )
    group.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where the local broker keeps data and logs "
        "(CANARY_STATE_DIR, default ~/.local/state/model-canary)",
    )
    group.add_argument(
        "--connect-timeout",
        type=float,
        metavar="SECONDS",
        help="how long a command waits for Kafka to answer before it fails, when it has no "
        "--timeout of its own (CANARY_CONNECT_TIMEOUT, default 10); agents wait until it does",
    )
    group.add_argument(
        "--kafka-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka setting passed to every client, e.g. security.protocol=SASL_SSL "
        "(repeatable; also CANARY_KAFKA_<KEY> and CANARY_KAFKA_CONFIG_FILE)",
    )
    add_latency_options(parser)


def add_latency_options(parser: argparse.ArgumentParser) -> None:
    """``--latency`` and ``--delivery``, for the commands that move or wait for requests."""
    group = parser.add_argument_group("latency (each also read from CANARY_* variables)")
    group.add_argument(
        "--latency",
        choices=[m.value for m in LatencyMode],
        help="how long transactions stay open and clients linger and wait: low, balanced or "
        "throughput (CANARY_LATENCY, default balanced; see docs/latency.md)",
    )
    group.add_argument(
        "--delivery",
        choices=[d.value for d in Delivery],
        help="the data path's guarantee: exactly-once (transactions) or at-least-once (no "
        "transactions; an answer may come twice, marked so; CANARY_DELIVERY, default "
        "exactly-once)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        bootstrap=getattr(args, "bootstrap", None),
        broker_port=getattr(args, "broker_port", None),
        topic_prefix=getattr(args, "topic_prefix", None),
        state_dir=getattr(args, "state_dir", None),
        connect_timeout_s=getattr(args, "connect_timeout", None),
        latency=getattr(args, "latency", None),
        delivery=getattr(args, "delivery", None),
        extra_config=parse_key_values(getattr(args, "kafka_config", None) or []),
    )
