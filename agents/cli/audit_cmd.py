"""``canary audit``: were all requests answered exactly once?"""

from __future__ import annotations

import argparse
import json

from model_canary.agents.audit import AuditReport, audit
from model_canary.agents.cli.common import settings_from_args
from model_canary.streams.accounting import parse_since
from model_canary.streams.messages import utc_now

MAX_IDS = 20


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    cmd = sub.add_parser(
        "audit",
        parents=[common],
        help="end-to-end accounting: every request answered once, or dead-lettered",
        description="Read the requests, results and dead-letter topics (read_committed, up to "
        "their ends as of now) and count requests, served results, shadow results and dead "
        "letters; list the requests with no served result, with more than one, and the results "
        "with no request. Results written with at-least-once delivery (header canary-delivery: "
        "at-least-once) may repeat: their repeats are counted, not taken for duplicates. Exits "
        "1 if there is any such discrepancy.",
    )
    cmd.add_argument(
        "--since",
        metavar="T",
        help="only requests written since T: an ISO time (UTC if no offset) or a duration "
        "back from now (90s, 10m, 2h, 1d); default: everything the topics hold",
    )
    cmd.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for answers to requests still in flight (default 30)",
    )
    cmd.add_argument("--json", action="store_true", help="print the report as a JSON last line")
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    since = parse_since(args.since, utc_now()) if args.since else None
    report = audit(settings, since=since, timeout=args.timeout)
    print(format_report(report))
    if args.json:
        print(json.dumps(report.to_dict(MAX_IDS), sort_keys=True))
    return 0 if report.ok else 1


def format_report(report: AuditReport) -> str:
    """The human-readable report: counts, then the ids of each discrepancy (capped)."""
    a = report.accounting
    window = f"since {report.since.isoformat()}" if report.since else "all retained messages"
    lines = [
        f"audit of {window} ({report.seconds:.1f}s)",
        f"  requests                 {a.requests}",
        f"  served results           {a.served_results}",
        f"    of them errors         {sum(a.error_answers.values())}"
        + (f"  {dict(sorted(a.error_answers.items()))}" if a.error_answers else ""),
        f"  shadow results           {a.shadow_results}",
        f"  dead letters (requests)  {a.dead_letters}"
        + (f"  {dict(sorted(a.dead_letter_reasons.items()))}" if a.dead_letters else ""),
        f"  dead letters (other)     {report.other_dead_letters}",
    ]
    if a.unreadable_results:
        lines.append(f"  unreadable results       {a.unreadable_results}")
    if a.repeats:
        lines.append(f"  repeats (at-least-once)  {a.repeats}")
    for title, ids in (
        ("requests with no served result", a.missing),
        ("requests with more than one served result", a.duplicated),
        ("results with no request", a.orphans),
    ):
        lines.append(f"  {title:<42}{len(ids)}")
        if ids:
            more = f" ... and {len(ids) - MAX_IDS} more" if len(ids) > MAX_IDS else ""
            lines.append("    " + " ".join(ids[:MAX_IDS]) + more)
    if not report.ok:
        lines.append("DISCREPANCIES found")
    elif a.repeats:
        lines.append(
            "OK: every request answered, some more than once as at-least-once delivery allows"
        )
    else:
        lines.append("OK: every request answered exactly once")
    return "\n".join(lines)
