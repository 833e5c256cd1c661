"""``canary plan check``: what a rollout plan will do at a model's traffic, before it runs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from confluent_kafka import TopicPartition

from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.kafka.clients import new_reader
from model_canary.agents.kafka.reachable import wait_for_kafka
from model_canary.streams.errors import ConfigError, DecodeError
from model_canary.streams.evidence.wire import decode_evidence
from model_canary.streams.plan import load_plan, parse_plan
from model_canary.streams.settings import Settings
from model_canary.streams.stats.planning import PlanCheck, Traffic, TrafficSample, check
from model_canary.streams.topics import TopicCatalogue


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    plan = sub.add_parser("plan", help="rollout plans: check one against a model's traffic")
    verbs = plan.add_subparsers(dest="verb", required=True, metavar="VERB")
    chk = verbs.add_parser(
        "check",
        parents=[common],
        help="predict a plan's step durations, detection times and time to promote",
        description="From the model's recent traffic on the evidence topic (what routers, "
        "workers and the label joiner publish while a rollout runs: requests routed per "
        "second, the baseline's errors and labels) or from --rate and the base rates given as "
        "flags, predict each step's duration and canary requests, the "
        "canary requests and minutes until a 1.5x and a 2x regression of each metric is rolled "
        "back, and the time to promote an identical canary; warn when the plan cannot reach "
        "its gates at this traffic. Typical (about median) values from the decision rule's own "
        "formulas; 'canary sim --scenario-file' simulates the spread.",
    )
    chk.add_argument("--model", required=True)
    chk.add_argument(
        "--plan", type=Path, help="plan file (YAML or JSON; default: the default plan)"
    )
    chk.add_argument("--rate", type=float, help="requests per minute (default: measured)")
    chk.add_argument("--error-rate", type=float, help="share of requests that fail")
    chk.add_argument("--accuracy", type=float, help="share of correct predictions")
    chk.add_argument(
        "--outcome-rate",
        action="append",
        default=[],
        metavar="NAME=SHARE",
        help="an outcome metric's share of bad feedback (repeatable; default 0.01)",
    )
    chk.add_argument(
        "--label-coverage",
        type=float,
        help="share of labelled requests (default: measured, else 0.5)",
    )
    chk.add_argument(
        "--design-effect",
        type=float,
        default=1.0,
        help="variance inflation from users whose requests are alike (1: independent)",
    )
    chk.add_argument(
        "--batch-size",
        type=float,
        help="answers per micro-batch that a worker times as one (1: each answer timed alone; "
        "default: measured from the baseline's evidence, else 1)",
    )
    chk.add_argument(
        "--window", type=float, default=600.0, help="seconds of evidence to read (default 600)"
    )
    chk.add_argument("--json", action="store_true", help="print one JSON object")
    chk.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    plan = (
        load_plan(args.plan)
        if args.plan
        else parse_plan({"model": args.model, "canary": "candidate"})
    )
    coverage = args.label_coverage
    if args.design_effect < 1 or not (coverage is None or 0 < coverage <= 1):
        raise ConfigError("--design-effect must be >= 1 and --label-coverage in (0, 1]")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if args.rate is not None:
        if args.rate <= 0:
            raise ConfigError("--rate must be positive")
        traffic = Traffic(
            rate_per_min=args.rate,
            label_coverage=0.5 if coverage is None else coverage,
            design_effect=args.design_effect,
        )
    else:
        settings = settings_from_args(args)
        # No broker: the same clear error as every other command that reads Kafka.
        wait_for_kafka(settings, timeout=settings.connect_timeout_s, say=lambda _line: None)
        sample = recent_evidence(settings, args.model, args.window)
        measured = sample.traffic(label_coverage=coverage, design_effect=args.design_effect)
        if measured is None:
            raise ConfigError(
                f"no evidence for {args.model!r} on the evidence topic in the last "
                f"{args.window:g} s (it is published while a rollout runs): give --rate"
            )
        traffic = measured
    rates = dict(traffic.base_rates)
    if args.error_rate is not None:
        rates["errors"] = args.error_rate
    if args.accuracy is not None:
        rates["accuracy"] = 1.0 - args.accuracy
    for given in args.outcome_rate:
        name, _, share = given.partition("=")
        try:
            rates[name] = float(share)
        except ValueError:
            raise ConfigError(f"--outcome-rate: NAME=SHARE, got {given!r}") from None
        if name not in plan.metrics or not 0 < rates[name] < 1:
            raise ConfigError(f"--outcome-rate {given}: a metric of the plan, a share in (0, 1)")
    traffic = dataclasses.replace(traffic, base_rates=rates)
    if args.batch_size is not None:
        traffic = dataclasses.replace(traffic, batch_size=args.batch_size, batch_clump=None)
    result = check(plan, traffic)
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "rate_per_min": traffic.rate_per_min,
                    "batch_size": round(traffic.batch_size, 2),
                    **result.to_json(),
                }
            )
        )
    else:
        print("\n".join(describe(result, traffic)))
    return 0


def recent_evidence(settings: Settings, model: str, window_s: float) -> TrafficSample:
    """The model's evidence records of the last ``window_s`` seconds (a thin Kafka reader:
    every partition from the window's start, records of other models skipped)."""
    topic = TopicCatalogue(settings.topic_prefix).evidence
    consumer = new_reader(settings, "canary-plan-check")
    since_ms = int((time.time() - window_s) * 1000)
    sample = TrafficSample()
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or not meta.partitions:
            return sample
        wanted = [TopicPartition(topic, p, since_ms) for p in meta.partitions]
        consumer.assign(consumer.offsets_for_times(wanted, timeout=10))
        idle = time.monotonic()
        while time.monotonic() - idle < 1.5:
            msgs = consumer.consume(1000, timeout=0.3)
            if msgs:
                idle = time.monotonic()
            for msg in msgs:
                if msg.error() is not None:
                    continue
                try:
                    records, _set = decode_evidence(msg.value() or b"")
                except DecodeError:
                    continue
                for ev in records:
                    if ev.model == model and ev.second * 1000 >= since_ms - 1000:
                        sample.add_record(ev)
    finally:
        consumer.close()
    return sample


def describe(result: PlanCheck, traffic: Traffic) -> list[str]:
    doc = result.to_json()
    lines = [f"traffic: {traffic.rate_per_min:,.0f} requests/min"]
    if traffic.batch_size > 1:
        clump = traffic.latency_design_effect() - traffic.design_effect + 1
        lines.append(
            f"latency timed per micro-batch: {traffic.batch_size:,.1f} answers per batch "
            f"({clump:,.1f} size-weighted)"
        )
    lines.append("step      minutes  canary requests  bound by")
    for s in doc["steps"]:
        lines.append(
            f"{s['weight_percent']:>5g}%  {s['minutes']:>8.1f}  {s['canary_requests']:>15,}  "
            f"{s['bound_by']}"
        )
    lines.append("detection (typical): metric, regression, canary requests, minutes")
    for d in doc["detection"]:
        req = "not before 100%" if d["canary_requests"] is None else f"{d['canary_requests']:,}"
        mins = "" if d["minutes"] is None else f"{d['minutes']:.1f}"
        lines.append(f"  {d['metric']:<12} {d['ratio']:g}x  {req:>16}  {mins:>7}")
    for metric, minutes in doc["minutes_to_promote"].items():
        shown = "never (within the step's maximum)" if minutes is None else f"{minutes:.1f} min"
        lines.append(f"promote (identical canary), {metric}: {shown} at the last step")
    lines.append(f"time to finalize an identical canary: {doc['hours_to_finalize']:.2f} h")
    lines += [f"warning: {w}" for w in doc["warnings"]]
    return lines
