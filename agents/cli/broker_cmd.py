"""``canary broker start | stop | status``: the local development broker."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from model_canary.agents.broker import KAFKA_VERSION, BrokerSecurity, LocalBroker
from model_canary.agents.broker.cluster import LocalCluster
from model_canary.agents.broker.local import running_ports
from model_canary.agents.broker.security import read_users
from model_canary.agents.broker.tls import make_tls
from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.kafka.admin import Admin
from model_canary.streams.errors import ConfigError
from model_canary.streams.settings import Settings

HELP = (
    f"run a local Apache Kafka {KAFKA_VERSION} broker (KRaft) for development, or a cluster of "
    "several with --nodes"
)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser(
        "broker",
        help=HELP,
        description=HELP
        + ". Kafka's jars are fetched once with Maven into the cache folder. With --bootstrap "
        "(or CANARY_BOOTSTRAP) nothing local is started: the commands only check that cluster. "
        "With --nodes 3, three combined broker-and-controller nodes on 127.0.0.1 (ports "
        "--broker-port to --broker-port + 2 for clients, the next three for the controllers), "
        "every topic with three replicas and min.insync.replicas=2; give the same --nodes to "
        "stop and status.",
    )
    actions = parser.add_subparsers(dest="broker_action", required=True, metavar="ACTION")
    start = actions.add_parser(
        "start", parents=[common], help="start the broker and wait until it answers"
    )
    start.add_argument(
        "--timeout", type=float, help="seconds to wait (default 90; 180 with --nodes)"
    )
    secured = start.add_argument_group(
        "security (decided when the broker's storage is first made: keep the same flags, or "
        "use a fresh --state-dir)"
    )
    secured.add_argument(
        "--scram-users",
        type=Path,
        metavar="FILE",
        help="accept only these SASL/SCRAM-SHA-512 users (NAME:PASSWORD lines) and authorize "
        "with ACLs; the --admin-user is the super user",
    )
    secured.add_argument(
        "--admin-user",
        default="admin",
        metavar="NAME",
        help="the super user among --scram-users (default admin)",
    )
    secured.add_argument(
        "--tls",
        action="store_true",
        help="with --scram-users: SASL_SSL instead of SASL_PLAINTEXT; a local CA and the "
        "broker's certificate (for 127.0.0.1 and localhost) are made once under the broker's "
        "state folder, and clients trust the CA with ssl.ca.location",
    )
    stop = actions.add_parser(
        "stop", parents=[common], help="stop the broker; no broker process remains"
    )
    status = actions.add_parser(
        "status", parents=[common], help="say whether the broker is up (exit 0) or not (exit 1)"
    )
    for action in (start, stop, status):
        action.add_argument(
            "--nodes",
            type=int,
            default=1,
            metavar="N",
            help="a local cluster of N nodes (default 1: the single development broker)",
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
    if args.nodes != 1:
        return _run_cluster(args, settings)
    broker = LocalBroker(settings)
    if action == "start":
        broker = LocalBroker(settings, _security(args, broker))
        began = time.monotonic()
        already = broker.pid() is not None
        status = broker.start(timeout=args.timeout or 90.0)
        verb = "already running" if already else f"started in {time.monotonic() - began:.1f}s"
        print(f"{verb}: {status.describe()}")
        print(f"logs: {broker.logs_dir}")
        if broker.security is not None:
            print(f"clients: {_client_hint(broker)}")
        return 0
    if action == "stop":
        stopped = broker.stop()
        print("stopped" if stopped else f"no local broker was running for {broker.bootstrap}")
        if not stopped:
            _hint_other_ports(settings)
        return 0
    status = broker.status()
    print(status.describe())
    if status.pid is None:
        _hint_other_ports(settings)
    return 0 if status.answering else 1


def _hint_other_ports(settings: Settings) -> None:
    """Name the brokers of the same state folder that run on other ports: a broker is found by
    its port (its home is ``STATE_DIR/broker-PORT``), so ``stop`` without the port it was
    started with looks for one on 9092."""
    others = running_ports(settings.state_dir, exclude=settings.broker_port)
    if others:
        listed = ", ".join(map(str, others))
        print(
            f"{settings.state_dir} has a broker running on port {listed}: "
            f"add --broker-port {others[0]} (or set CANARY_BROKER_PORT)"
        )


def _run_cluster(args: argparse.Namespace, settings: Settings) -> int:
    cluster = LocalCluster(settings, args.nodes)
    action: str = args.broker_action
    if action == "start":
        if args.scram_users or args.tls:
            raise ConfigError("--scram-users and --tls start a single broker: drop --nodes")
        began = time.monotonic()
        already = len(cluster.running())
        cluster.start(timeout=args.timeout or 180.0)
        verb = "already running" if already == args.nodes else "started"
        print(
            f"{verb} in {time.monotonic() - began:.1f}s: {args.nodes} Kafka {KAFKA_VERSION} nodes "
            f"answering at {cluster.bootstrap} (controller quorum: {cluster.voters})"
        )
        print(f"logs: {cluster.home}/node-*/logs")
        print(
            f"clients: CANARY_BOOTSTRAP={cluster.bootstrap} "
            f"CANARY_REPLICATION_FACTOR={cluster.client_settings().replication_factor}"
        )
        return 0
    if action == "stop":
        stopped = cluster.stop()
        print("stopped" if stopped else f"no local cluster was running at {cluster.bootstrap}")
        return 0
    running, brokers = cluster.running(), cluster.brokers()
    print(
        f"{len(running)} of {args.nodes} nodes running ({', '.join(map(str, running)) or 'none'}); "
        f"brokers in the metadata: {', '.join(map(str, sorted(brokers))) or 'none'} "
        f"at {cluster.bootstrap}"
    )
    return 0 if len(brokers) == args.nodes else 1


def _security(args: argparse.Namespace, broker: LocalBroker) -> BrokerSecurity | None:
    if args.scram_users is None:
        if args.tls:
            raise ConfigError("--tls needs --scram-users FILE (the broker serves SASL_SSL)")
        return None
    tls = make_tls(broker.home / "tls") if args.tls else None
    return BrokerSecurity(read_users(args.scram_users), admin=args.admin_user, tls=tls)


def _client_hint(broker: LocalBroker) -> str:
    """The CANARY_* settings a client of the secured broker needs (never a password)."""
    assert broker.security is not None
    shown = {
        k: v
        for k, v in broker.security.client_config(broker.security.admin).items()
        if k not in ("sasl.username", "sasl.password")
    }
    variables = [f"CANARY_BOOTSTRAP={broker.bootstrap}"] + [
        f"CANARY_KAFKA_{k.upper().replace('.', '_')}={v}" for k, v in shown.items()
    ]
    return " ".join(variables) + " CANARY_KAFKA_SASL_USERNAME=... CANARY_KAFKA_SASL_PASSWORD=..."
