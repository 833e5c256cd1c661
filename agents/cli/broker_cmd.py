"""``canary broker start | stop | status``: the local development broker."""

from __future__ import annotations

import argparse
import time

from model_canary.agents.broker import KAFKA_VERSION, LocalBroker
from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.kafka.admin import Admin

HELP = f"run a local single-node Apache Kafka {KAFKA_VERSION} broker (KRaft) for development"


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser(
        "broker",
        help=HELP,
        description=HELP
        + ". Kafka's jars are fetched once with Maven into the cache folder. With --bootstrap "
        "(or CANARY_BOOTSTRAP) nothing local is started: the commands only check that cluster.",
    )
    actions = parser.add_subparsers(dest="broker_action", required=True, metavar="ACTION")
    start = actions.add_parser(
        "start", parents=[common], help="start the broker and wait until it answers"
    )
    start.add_argument("--timeout", type=float, default=90.0, help="seconds to wait (default 90)")
    actions.add_parser("stop", parents=[common], help="stop the broker; no broker process remains")
    actions.add_parser(
        "status", parents=[common], help="say whether the broker is up (exit 0) or not (exit 1)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    action: str = args.broker_action
    if not settings.uses_local_broker:
        up = Admin(settings).ping(timeout=5.0)
        state = "answering" if up else "NOT answering"
        print(
            f"using the existing cluster at {settings.bootstrap}: {state}; "
            f"nothing local is {action}ed"
        )
        return 0 if up or action == "stop" else 1
    broker = LocalBroker(settings)
    if action == "start":
        began = time.monotonic()
        already = broker.pid() is not None
        status = broker.start(timeout=args.timeout)
        verb = "already running" if already else f"started in {time.monotonic() - began:.1f}s"
        print(f"{verb}: {status.describe()}")
        print(f"logs: {broker.logs_dir}")
        return 0
    if action == "stop":
        stopped = broker.stop()
        print("stopped" if stopped else f"no local broker was running for {broker.bootstrap}")
        return 0
    status = broker.status()
    print(status.describe())
    return 0 if status.answering else 1
