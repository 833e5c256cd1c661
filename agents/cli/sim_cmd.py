"""``canary sim``: the evaluator's test bench on simulated traffic (no Kafka)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from model_canary.streams.errors import ConfigError
from model_canary.streams.sim.catalogue import BY_NAME, SCENARIOS
from model_canary.streams.sim.report import render
from model_canary.streams.sim.runner import DEFAULT_SEED, run
from model_canary.streams.sim.scenario import Scenario, load_scenario


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    # No connection options: the benchmark is pure computation (``common`` is Kafka settings).
    sim = sub.add_parser(
        "sim",
        help="simulate rollouts through the evaluator's own decision code",
        description="Simulate rollouts under a rollout plan (the default plan unless a scenario "
        "sets one): traffic is routed by the router's split, summarised into evidence as the "
        "workers publish it, and decided every second by the evaluator's own code (completeness "
        "watermark, thresholds, warm-up, tests, plan). A/A scenarios measure false rollbacks and "
        "the time to promote an identical canary; harmful ones how often a regression is caught "
        "before 100% and how fast, against an 'oracle' (the SPRT that knows the true ratio, on "
        "the same evidence: a reference, not a method). Prints a table, the targets with 95% "
        "intervals, and last one JSON line. Scenarios: " + ", ".join(s.name for s in SCENARIOS),
    )
    sim.add_argument("--replications", type=int, default=2000, help="runs per scenario")
    sim.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    sim.add_argument(
        "--scenario",
        action="extend",
        nargs="+",
        choices=sorted(BY_NAME),
        metavar="NAME",
        help="run only these built-in scenarios (repeatable; default: all)",
    )
    sim.add_argument(
        "--scenario-file",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a scenario of your own traffic (JSON or YAML; format in docs/statistics.md); "
        "with it, only the scenarios named by --scenario run besides",
    )
    sim.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: one per CPU)",
    )
    sim.add_argument("--json-only", action="store_true", help="print only the JSON line")
    sim.set_defaults(handler=run_sim)


def run_sim(args: argparse.Namespace) -> int:
    if args.replications < 1:
        raise ConfigError("--replications must be at least 1")
    if args.processes < 1:
        raise ConfigError("--processes must be at least 1")
    chosen: list[Scenario] = [BY_NAME[n] for n in args.scenario or []]
    chosen += [load_scenario(p) for p in args.scenario_file]
    if not chosen:
        chosen = list(SCENARIOS)
    names = [s.name for s in chosen]
    if len(set(names)) != len(names):
        raise ConfigError(f"scenario names must differ, got {names}")
    result = run(chosen, replications=args.replications, seed=args.seed, processes=args.processes)
    for line in render(result, json_only=args.json_only):
        print(line)
    return 0
