"""``canary chaos``: the fault-injection suite."""

from __future__ import annotations

import argparse
import json

from model_canary.agents.chaos.scenarios import BROKER_NAMES, CLUSTER_NAMES, NAMES
from model_canary.agents.cli.common import settings_from_args


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    cmd = sub.add_parser(
        "chaos",
        parents=[common],
        help="fault injection under load: kill, pause and restart agents (and the broker), "
        "and break their code (exceptions, oversized messages, poison, produce errors)",
        description="Start a router, three noop workers (baseline twice, canary) and the "
        "evaluator on a 50% rollout, put a steady keyed load on it, and run each scenario in "
        "turn: after each, the audit must show 0 lost and 0 duplicated requests and the rollout "
        "state must be what it was; the recovery time is measured. The code faults "
        "(handler-exception, oversized-output, produce-error, oversized-request, poison-message) "
        "send a few requests that break an agent's code: each must be answered with an error "
        "result and dead-lettered once with its reason, and no agent may exit. broker-restart "
        "runs only when this run started the local broker itself. With --cluster 3 the run "
        "starts a three-node cluster of its own and kills the busiest partition's leader, kills "
        "the active controller, restarts every node in turn and freezes one node. Exits 1 if a "
        "scenario failed.",
    )
    cmd.add_argument(
        "--scenario",
        action="append",
        choices=NAMES,
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(NAMES)}",
    )
    cmd.add_argument("--rate", type=float, default=2000.0, help="requests per second (2000)")
    cmd.add_argument(
        "--duration", type=float, default=30.0, help="seconds of load per scenario (30)"
    )
    cmd.add_argument(
        "--cluster",
        type=int,
        default=0,
        metavar="N",
        help="start a local cluster of N nodes (from --broker-port) and run the cluster "
        f"scenarios on it ({', '.join(CLUSTER_NAMES)}) unless --scenario says otherwise",
    )
    cmd.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from model_canary.agents.chaos.run import ChaosOptions, run_chaos, summary

    default = CLUSTER_NAMES if args.cluster else BROKER_NAMES
    options = ChaosOptions(
        scenarios=tuple(args.scenario or default),
        rate=args.rate,
        seconds=args.duration,
        cluster=args.cluster,
    )
    outcomes = run_chaos(settings_from_args(args), options)
    result = summary(outcomes, options)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1
