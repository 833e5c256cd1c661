"""``canary demo``: the end-to-end run (the README's main job); ``canary demo train``: only
write the demo's models."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.demo.models import write_models
from model_canary.agents.demo.plan import REGRESSIONS, SCENARIOS, Scenario


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
        "stopped by its pre-flight before any user sees it, the good one on to a live 1%% step",
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

    settings = settings_from_args(args)
    if args.topic_prefix is None:
        # A fresh prefix per run: an earlier demo's rollout state does not get in the way.
        settings = settings.with_overrides(topic_prefix=f"demo{int(time.time())}")
    regression = args.regression or ("errors" if args.scenario == "bad" else None)
    options = DemoOptions(
        scenario=Scenario(args.scenario, regression),
        speed=args.speed,
        rate=args.rate,
        keys=args.keys,
        timeout=args.timeout,
        report=args.report,
        live=not args.json and sys.stdout.isatty(),
        keep_broker=args.keep_broker,
    )
    summary = run_demo(settings, options)
    print(json.dumps(summary), flush=True)
    ok = summary["final_phase"] == summary["expected_phase"] and summary["audit"]["ok"]
    return 0 if ok and summary["lost"] == 0 and summary["duplicates"] == 0 else 1
