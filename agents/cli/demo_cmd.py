"""``canary demo``: the end-to-end run (the README's main job); ``canary demo train``: only
write the demo's models."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.demo.models import write_models
from model_canary.agents.demo.plan import REGRESSIONS, SCENARIOS, Scenario
from model_canary.streams.errors import ConfigError


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="run a live canary rollout of a new scikit-learn model end to end",
        description="Start the local broker (unless --bootstrap), train two iris models, start "
        "the router, one worker per version and the evaluator as separate processes, drive a "
        "keyed load with delayed labels and start a rollout whose decisions the evaluator "
        "takes. Shows the rollout live, writes an HTML report, and prints a JSON summary as "
        "the last line. Every process it started is stopped at the end, also on Ctrl-C.",
    )
    demo.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="good",
        help="the candidate's story (good); preflight: recorded traffic, a bad candidate "
        "stopped by its pre-flight before any user sees it, the good one on to a live 1%% step; "
        "aa: the baseline's own model as the candidate (an identical canary), judged by the "
        "default plan with its durations divided by --speed (any rollback is a false one)",
    )
    demo.add_argument(
        "--regression",
        choices=REGRESSIONS,
        help="with --scenario bad: what is worse (default errors)",
    )
    demo.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="time scale: divides step durations and label delay (default 1: a few minutes)",
    )
    demo.add_argument("--rate", type=float, default=50.0, help="requests per second (50)")
    demo.add_argument(
        "--keys",
        type=int,
        default=10_000,
        help="distinct routing keys (10000: enough that 1%% of them is a fair sample)",
    )
    demo.add_argument(
        "--key-skew",
        type=float,
        default=0.0,
        help="0: keys uniform over --keys; s > 0: Zipf(s) (user i sends in proportion to "
        "1/i^s: heavy users, whose requests all go to one arm)",
    )
    demo.add_argument(
        "--runs",
        type=int,
        default=1,
        help="run the scenario this many times, each under a fresh topic prefix: one JSON line "
        "per run (its outcome and decisions), then a summary line (default 1: one summary)",
    )
    demo.add_argument(
        "--report",
        type=Path,
        default=Path("canary-demo-report.html"),
        help="where to write the HTML report (default ./canary-demo-report.html)",
    )
    demo.add_argument(
        "--timeout", type=float, default=600.0, help="give up after this many seconds (600)"
    )
    demo.add_argument(
        "--keep-broker", action="store_true", help="leave the local broker it started running"
    )
    demo.add_argument(
        "--json", action="store_true", help="no live view: progress on stderr, JSON on stdout"
    )
    demo.set_defaults(handler=run)
    actions = demo.add_subparsers(dest="demo_action", metavar="[train]")
    train = actions.add_parser(
        "train",
        help="only train and write the demo's models",
        description="Write DIR/iris-v1.joblib (baseline) and DIR/iris-v2.joblib (candidate), "
        "scikit-learn models for 'canary worker --adapter sklearn:PATH'.",
    )
    train.add_argument("--out", type=Path, required=True, metavar="DIR")
    train.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    paths = write_models(args.out, broken=False)
    for path in paths.values():
        print(path)
    return 0


def run(args: argparse.Namespace) -> int:
    from model_canary.agents.demo.run import DemoOptions, run_demo

    if args.runs < 1:
        raise ConfigError("--runs must be at least 1")
    base = settings_from_args(args)
    regression = args.regression or ("errors" if args.scenario == "bad" else None)
    outcomes = []
    for run_index in range(args.runs):
        settings = base
        if args.topic_prefix is None or args.runs > 1:
            # A fresh prefix per run: an earlier demo's rollout state does not get in the way.
            prefix = args.topic_prefix or f"demo{int(time.time())}"
            settings = base.with_overrides(
                topic_prefix=prefix if args.runs == 1 else f"{prefix}-{run_index + 1}"
            )
        report = args.report
        if args.runs > 1:
            report = report.with_name(f"{report.stem}-{run_index + 1}{report.suffix}")
        options = DemoOptions(
            scenario=Scenario(args.scenario, regression),
            speed=args.speed,
            rate=args.rate,
            keys=args.keys,
            key_skew=args.key_skew,
            timeout=args.timeout,
            report=report,
            live=not args.json and sys.stdout.isatty() and args.runs == 1,
            keep_broker=args.keep_broker or run_index < args.runs - 1,
        )
        summary = run_demo(settings, options)
        ok = summary["final_phase"] == summary["expected_phase"] and summary["audit"]["ok"]
        ok = ok and summary["lost"] == 0 and summary["duplicates"] == 0
        if args.runs == 1:
            print(json.dumps(summary), flush=True)
            return 0 if ok else 1
        outcomes.append(run_outcome(run_index + 1, summary, ok))
        print(json.dumps(outcomes[-1]), flush=True)
    print(json.dumps(runs_summary(outcomes)), flush=True)
    return 0 if all(o["ok"] for o in outcomes) else 1


def run_outcome(run: int, summary: dict[str, Any], ok: bool) -> dict[str, Any]:
    """One run of ``--runs``: how it ended and the decisions that moved it.

    >>> s = {"final_phase": "Succeeded", "expected_phase": "Succeeded", "duration_s": 9.0,
    ...      "requests": 10, "lost": 0, "duplicates": 0, "audit": {"ok": True},
    ...      "decisions": [{"action": "ADVANCE", "weight_percent": 1.0, "t_s": 40.2,
    ...                     "reason": "fine", "step": 0}]}
    >>> run_outcome(1, s, True)["decisions"]
    [{'action': 'ADVANCE', 'weight_percent': 1.0, 't_s': 40.2, 'reason': 'fine'}]
    """
    keep = ("final_phase", "expected_phase", "duration_s", "requests", "lost", "duplicates")
    decisions = [
        {k: d.get(k) for k in ("action", "weight_percent", "t_s", "reason")}
        for d in summary["decisions"]
    ]
    return {
        "run": run,
        **{k: summary.get(k) for k in keep},
        "audit_ok": summary["audit"]["ok"],
        "decisions": decisions,
        "ok": ok,
    }


def runs_summary(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """The last line of ``--runs``: how many runs ended in each phase.

    >>> runs_summary([{"final_phase": "Succeeded", "ok": True},
    ...               {"final_phase": "RolledBack", "ok": False}])
    {'runs': 2, 'phases': {'RolledBack': 1, 'Succeeded': 1}, 'rolled_back': 1, 'ok': 1}
    """
    phases: dict[str, int] = {}
    for o in outcomes:
        phases[str(o["final_phase"])] = phases.get(str(o["final_phase"]), 0) + 1
    return {
        "runs": len(outcomes),
        "phases": dict(sorted(phases.items())),
        "rolled_back": phases.get("RolledBack", 0),
        "ok": sum(1 for o in outcomes if o["ok"]),
    }
