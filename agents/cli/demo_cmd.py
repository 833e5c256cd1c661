"""``canary demo``: the end-to-end run (the README's main job)."""

from __future__ import annotations

import argparse
import json
import time

from agents.cli.common import settings_from_args
from agents.demo.run import DemoOptions, run_demo


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="run a live canary rollout of a new scikit-learn model end to end",
        description="Start the local broker (unless --bootstrap), train two iris models, start "
        "the router and one worker per version as separate processes, and roll v2 out through "
        "the steps with keyed traffic, promoting step by step; finally audit the results topic "
        "for lost and duplicated answers. Every process it started is stopped at the end. The "
        "last line printed is JSON.",
    )
    demo.add_argument(
        "--requests-per-step", type=int, default=400, help="requests sent at each step"
    )
    demo.add_argument("--users", type=int, default=200, help="distinct routing keys")
    demo.add_argument("--json", action="store_true", help="print only the final JSON line")
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.topic_prefix is None:
        # A fresh prefix per run: an earlier demo's rollout state does not get in the way.
        settings = settings.with_overrides(topic_prefix=f"demo{int(time.time())}")
    options = DemoOptions(
        requests_per_step=args.requests_per_step, users=args.users, json=args.json
    )
    summary = run_demo(settings, options)
    print(json.dumps(summary))
    return 0 if summary["lost"] == 0 and summary["duplicates"] == 0 else 1
