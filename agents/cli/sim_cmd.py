"""``canary sim``: the simulation benchmark of the evaluator's statistics (no Kafka)."""

from __future__ import annotations

import argparse

from model_canary.streams.errors import ConfigError
from model_canary.streams.sim.report import render
from model_canary.streams.sim.runner import DEFAULT_SEED, run
from model_canary.streams.sim.scenarios import SCENARIOS


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    # No connection options: the benchmark is pure computation (``common`` is Kafka settings).
    sim = sub.add_parser(
        "sim",
        help="simulate canary rollouts: our sequential test against Kayenta- and Argo-style checks",
        description="Simulate rollouts at 1,000 requests a minute through 1%, 20% and 50% "
        "steps of 30 minutes, in A/A scenarios (false rollbacks) and regressions (how often "
        "and how fast each method rolls back). In regressions an 'oracle' row shows the "
        "information limit: the sequential probability ratio test that knows the true harm "
        "ratio (a reference, not a method). Prints a table, the targets (flagging those no "
        "valid test can meet), and last one JSON line. Scenarios: "
        + ", ".join(s.name for s in SCENARIOS)
        + ".",
    )
    sim.add_argument("--replications", type=int, default=2000, help="runs per scenario")
    sim.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    sim.add_argument(
        "--scenario",
        action="extend",
        nargs="+",
        choices=[s.name for s in SCENARIOS],
        metavar="NAME",
        help="run only these scenarios (repeatable; default: all)",
    )
    sim.add_argument("--json-only", action="store_true", help="print only the JSON line")
    sim.set_defaults(handler=run_sim)


def run_sim(args: argparse.Namespace) -> int:
    if args.replications < 1:
        raise ConfigError("--replications must be at least 1")
    result = run(args.scenario, replications=args.replications, seed=args.seed)
    for line in render(result, json_only=args.json_only):
        print(line)
    return 0
