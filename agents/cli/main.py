"""Entry point of the ``canary`` console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from model_canary.agents.cli import (
    agents_cmd,
    audit_cmd,
    bench_cmd,
    broker_cmd,
    chaos_cmd,
    control_cmd,
    data_cmd,
    demo_cmd,
    evaluator_cmd,
    history_cmd,
    joiner_cmd,
    load_cmd,
    plan_cmd,
    preflight_cmd,
    sim_cmd,
    topics_cmd,
)
from model_canary.agents.cli.common import add_connection_options, settings_from_args
from model_canary.streams import __version__
from model_canary.streams.errors import CanaryError

DESCRIPTION = (
    "model-canary: Kafka-native progressive delivery for machine-learning models. "
    "Requests arrive on a Kafka topic; a router splits them between a baseline and a canary "
    "version; an evaluator promotes or rolls back."
)


# Commands that only talk to an existing cluster: when it does not answer, they fail within
# their --timeout (else --connect-timeout) with one line saying so, instead of a client timing
# out somewhere inside. The agents wait for it instead; broker, demo, bench and chaos may start
# a broker of their own; sim needs none.
NEEDS_KAFKA = frozenset(
    {
        "topics",
        "model",
        "rollout",
        "set-weight",
        "promote",
        "rollback",
        "pause",
        "resume",
        "status",
        "history",
        "request",
        "tail",
        "load",
        "audit",
        "preflight",
        "feedback",
        "bench",
    }
)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_connection_options(common)
    parser = argparse.ArgumentParser(prog="canary", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"model-canary {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = (
        broker_cmd,
        topics_cmd,
        agents_cmd,
        evaluator_cmd,
        joiner_cmd,
        control_cmd,
        history_cmd,
        preflight_cmd,
        data_cmd,
        demo_cmd,
        load_cmd,
        bench_cmd,
        sim_cmd,
        plan_cmd,
        audit_cmd,
        chaos_cmd,
    )
    for module in modules:
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in NEEDS_KAFKA:
            _wait_for_kafka(args)
        code: int = args.handler(args)
    except CanaryError as exc:
        print(f"canary: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _wait_for_kafka(args: argparse.Namespace) -> None:
    from model_canary.agents.kafka.reachable import wait_for_kafka

    settings = settings_from_args(args)
    # A bench's --timeout bounds its phases, not the wait for Kafka.
    own = None if args.command == "bench" else getattr(args, "timeout", None)
    timeout = own or settings.connect_timeout_s
    wait_for_kafka(settings, timeout=timeout, say=lambda _line: None)


if __name__ == "__main__":
    sys.exit(main())
