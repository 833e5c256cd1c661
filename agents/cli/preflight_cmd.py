"""``canary preflight``: replay recorded traffic through a candidate, judge it as a rollout
would, before any user sees it. Exit 0 would pass, 1 would be rolled back, 3 inconclusive."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.preflight.run import (
    DEFAULT_MAX_REQUESTS,
    DEFAULT_RATE,
    PreflightOptions,
    PreflightOutcome,
    run_preflight,
)
from model_canary.streams.accounting import parse_since
from model_canary.streams.codec.json_records import to_json_doc
from model_canary.streams.enums import BaselineMode
from model_canary.streams.errors import ConfigError
from model_canary.streams.messages import utc_now
from model_canary.streams.plan import load_plan
from model_canary.streams.preflight.replay import parse_offsets
from model_canary.streams.topics import validate_name


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    cmd = sub.add_parser(
        "preflight",
        parents=[common],
        help="judge a candidate on recorded traffic before any user sees it (exit 0: would "
        "pass, 1: would be rolled back, 3: inconclusive)",
        description="Replay the model's recorded requests (the requests topic, read_committed: "
        "the same routing keys and payloads) through the candidate's workers on a pre-flight "
        "topic of its own, never served and never on the results topic, and through the "
        "baseline's too (same load and batching), at a limited rate so live traffic keeps its "
        "workers; join both arms' answers with the feedback recorded for those requests and "
        "judge them with the rollout plan's statistics (errors, latency, and accuracy when "
        "labels were recorded). Prints the verdict with its evidence, records it on the "
        "preflights topic, writes an HTML report. A pre-flight stopped "
        "half-way resumes with --id. Exit 0: would pass; 1: would be rolled back; 3: "
        "inconclusive (too few requests); 2: error.",
    )
    cmd.add_argument("--model", required=True, help="the model")
    cmd.add_argument("--candidate", required=True, metavar="V", help="the version on trial")
    cmd.add_argument(
        "--baseline", metavar="V", help="the version to compare with (default: the stable one)"
    )
    window = cmd.add_mutually_exclusive_group()
    window.add_argument(
        "--since",
        metavar="T",
        help="replay the requests recorded since T: a duration back from now (90s, 30m, 6h) or "
        "an ISO time; default 6h",
    )
    window.add_argument(
        "--from-offsets",
        metavar="P:O,...",
        help="replay from these offsets of the requests topic's partitions (others: their "
        "start), up to their ends now",
    )
    cmd.add_argument(
        "--sample",
        type=float,
        default=100.0,
        metavar="PCT",
        help="replay this percentage of the recorded requests (chosen by request id; default 100)",
    )
    cmd.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        metavar="R",
        help=f"replay at most R requests a second (default {DEFAULT_RATE:g}; 0: no limit)",
    )
    cmd.add_argument(
        "--max-requests",
        type=int,
        default=DEFAULT_MAX_REQUESTS,
        metavar="N",
        help=f"replay at most N requests (default {DEFAULT_MAX_REQUESTS}; 0: no limit)",
    )
    cmd.add_argument(
        "--baseline-answers",
        choices=[m.value for m in BaselineMode],
        default=BaselineMode.REPLAY.value,
        help="replay: the baseline answers the same replay (default; latency compares); "
        "recorded: use the answers it served (no latency comparison, no load on it)",
    )
    cmd.add_argument(
        "--plan",
        type=Path,
        metavar="FILE",
        help="the rollout plan to judge by (default: the default plan)",
    )
    cmd.add_argument(
        "--min-requests",
        type=int,
        default=200,
        metavar="N",
        help="fewer requests answered by both arms is inconclusive (default 200)",
    )
    cmd.add_argument("--id", metavar="ID", help="resume the pre-flight ID, or name a new one")
    cmd.add_argument(
        "--report",
        type=Path,
        default=Path("canary-preflight-report.html"),
        metavar="PATH",
        help="the HTML report (default canary-preflight-report.html)",
    )
    cmd.add_argument(
        "--answer-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="stop waiting for answers after S seconds without one (default 60)",
    )
    cmd.add_argument("--json", action="store_true", help="print the record as a JSON last line")
    cmd.set_defaults(handler=run)


def options_from_args(args: argparse.Namespace) -> PreflightOptions:
    validate_name("model", args.model)
    validate_name("version", args.candidate)
    if not 0 < args.sample <= 100:
        raise ConfigError(f"--sample must be a percentage in (0, 100], got {args.sample:g}")
    if args.max_requests < 0 or args.min_requests < 0:
        raise ConfigError("--max-requests and --min-requests must be >= 0")
    plan = load_plan(args.plan) if args.plan else None
    if plan is not None and plan.model != args.model:
        raise ConfigError(f"--plan is for model {plan.model!r}, not {args.model!r}")
    return PreflightOptions(
        model=args.model,
        candidate=args.candidate,
        baseline=validate_name("version", args.baseline) if args.baseline else None,
        since=parse_since(args.since, utc_now()) if args.since else None,
        from_offsets=parse_offsets(args.from_offsets) if args.from_offsets else None,
        sample_bp=round(args.sample * 100),
        rate=args.rate,
        max_requests=args.max_requests,
        baseline_mode=BaselineMode(args.baseline_answers),
        min_requests=args.min_requests,
        plan=plan,
        preflight_id=args.id,
        report=args.report,
        answer_timeout_s=args.answer_timeout,
    )


def run(args: argparse.Namespace) -> int:
    outcome = run_preflight(
        settings_from_args(args),
        options_from_args(args),
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(format_outcome(outcome))
    if args.json:
        print(json.dumps(to_json_doc(outcome.record), sort_keys=True))
    return outcome.verdict.exit_code


def format_outcome(outcome: PreflightOutcome) -> str:
    """The verdict and its evidence, for a terminal."""
    v, r = outcome.verdict, outcome.record
    lines = [
        f"{v.status.value.upper()}: {r.model} {r.candidate_version} against "
        f"{r.baseline_version}: {v.reason}",
        f"  replayed {r.replayed}, answered by both arms {v.answered}, with feedback "
        f"{v.labelled}"
        + ("" if v.agreement is None else f", agreement with the baseline {v.agreement:.1%}"),
        f"  {'metric':<16}{'baseline bad/n':>18}{'candidate bad/n':>18}  ratio bounds",
    ]
    for e in v.evidence:
        lower = "?" if e.lower is None else f"{e.lower:.3g}"
        upper = "inf" if e.upper is None else f"{e.upper:.3g}"
        flag = "  ALARM" if e.alarmed else ""
        lines.append(
            f"  {e.metric:<16}{f'{e.baseline_bad}/{e.baseline_n}':>18}"
            f"{f'{e.canary_bad}/{e.canary_n}':>18}  {lower} .. {upper}{flag}"
        )
    lines.append(
        f"pre-flight {r.preflight_id}" + (f", report: {outcome.report}" if outcome.report else "")
    )
    return "\n".join(lines)
