"""``canary router`` and ``canary worker``: the data-plane agents."""

from __future__ import annotations

import argparse
import logging
import socket
import threading
from pathlib import Path

from model_canary.agents import metrics
from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.cli.logs import setup_logging
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.kafka.eos import stop_on_signals
from model_canary.agents.kafka.reachable import wait_for_kafka
from model_canary.agents.router.agent import Router, RouterOptions
from model_canary.agents.router.controller import Controller
from model_canary.agents.worker.adapters import (
    FaultInjector,
    ModelAdapter,
    load_adapter,
    parse_latency,
)
from model_canary.agents.worker.agent import Worker, WorkerOptions
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)


def _instance_option(parser: argparse.ArgumentParser, role: str) -> None:
    parser.add_argument(
        "--instance",
        default=socket.gethostname(),
        help=f"this {role}'s instance name, unique among running {role}s; it names the "
        "Kafka transactional id, so a restarted instance aborts what its predecessor left "
        "open (default: the host name)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (CANARY_METRICS_PORT)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    router = sub.add_parser(
        "router",
        parents=[common],
        help="run the router agent (and the controller that applies control commands)",
        description="Consume the requests topic and republish each request, payload untouched, "
        "to the baseline or canary version's topic following the model's rollout state, "
        "exactly once. Run several for more throughput: they share the work through their "
        "consumer group.",
    )
    _instance_option(router, "router")
    router.add_argument("--max-batch", type=int, default=1000, help="messages per batch")
    router.add_argument(
        "--commit-interval-ms",
        type=int,
        help="commit transactions every MS milliseconds instead of as --latency says "
        "(at-least-once: the consumed offsets, instead of every second) "
        "(CANARY_COMMIT_INTERVAL_MS; for tests and experiments)",
    )
    router.add_argument(
        "--no-controller",
        action="store_true",
        help="do not apply control commands in this process",
    )
    router.set_defaults(handler=run_router)

    worker = sub.add_parser(
        "worker",
        parents=[common],
        help="run a model worker for one model version",
        description="Consume one model version's request topic, run the model in micro-batches "
        "and publish one result per request, exactly once; in a rollout, the evidence the "
        "evaluator needs (per transaction, not per request) and, when the rollout's plan "
        "compares ground truth, each answer's prediction for the label joiner. Adapters: "
        "python:MODULE:FUNCTION, sklearn:PATH, oip:URL, openai:URL?model=NAME, noop:.",
    )
    worker.add_argument("--model", required=True, help="model name")
    worker.add_argument("--version", required=True, help="version name this worker serves")
    worker.add_argument("--adapter", required=True, metavar="SPEC", help="how to run the model")
    worker.add_argument(
        "--path",
        type=Path,
        action="append",
        metavar="DIR",
        help="a folder to import a python: model's module from (repeatable; default: the "
        "working directory)",
    )
    _instance_option(worker, "worker")
    worker.add_argument("--max-batch", type=int, default=64, help="requests per micro-batch")
    worker.add_argument(
        "--timeout", type=float, default=10.0, help="seconds a batch may take (default 10)"
    )
    worker.add_argument(
        "--commit-interval-ms",
        type=int,
        help="commit transactions every MS milliseconds instead of as --latency says "
        "(at-least-once: the consumed offsets, instead of every second) "
        "(CANARY_COMMIT_INTERVAL_MS; for tests and experiments)",
    )
    worker.add_argument(
        "--inject-latency",
        metavar="DIST",
        help="add latency per request: fixed:MS, uniform:A,B, lognormal:MEDIAN,SIGMA, normal:MU,SD",
    )
    worker.add_argument(
        "--inject-error-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="fail this share of requests (0..1), for demos and tests",
    )
    worker.add_argument("--seed", type=int, help="seed of the fault injection")
    worker.add_argument(
        "--metric-events",
        action="store_true",
        help="also publish one metric event per request to the metrics topic (for your own "
        "dashboards; the evaluator reads the evidence, not these)",
    )
    worker.add_argument(
        "--inject-marked-faults",
        action="store_true",
        help="obey fault markers in requests (a 'canary_fault' field in the model input: "
        "bad-output, huge-output, large-output), as canary chaos sends them; for tests only: "
        "anyone who can send a request can then break this worker's outputs",
    )
    worker.set_defaults(handler=run_worker)


def run_router(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    settings = settings_from_args(args).with_overrides(commit_interval_ms=args.commit_interval_ms)
    stop = stop_on_signals()
    if not wait_for_kafka(settings, stop=stop):
        return 0
    Admin(settings).ensure_topics(
        TopicCatalogue(settings.topic_prefix, settings.partitions).core_specs()
    )
    metrics.serve(args.metrics_port or settings.metrics_port)
    threads: list[threading.Thread] = []
    if not args.no_controller:
        controller = Controller(settings, args.instance)
        thread = threading.Thread(
            target=_guard, args=(controller.loop.run, stop), name="controller", daemon=True
        )
        thread.start()
        threads.append(thread)
    router = Router(settings, RouterOptions(instance=args.instance, max_batch=args.max_batch))
    log.info("router %s routing %s", args.instance, router.catalogue.requests)
    try:
        router.run(stop)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    return 0


def run_worker(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    settings = settings_from_args(args).with_overrides(commit_interval_ms=args.commit_interval_ms)
    adapter: ModelAdapter = load_adapter(
        args.adapter, timeout_s=args.timeout, search_path=args.path
    )
    if args.inject_latency or args.inject_error_rate or args.inject_marked_faults:
        latency = parse_latency(args.inject_latency) if args.inject_latency else None
        adapter = FaultInjector(
            adapter, latency, args.inject_error_rate, args.seed, marked=args.inject_marked_faults
        )
    options = WorkerOptions(
        model=args.model,
        version=args.version,
        instance=args.instance,
        max_batch=args.max_batch,
        timeout_s=args.timeout,
        metric_events=args.metric_events,
    )
    stop = stop_on_signals()
    if not wait_for_kafka(settings, stop=stop):
        return 0
    catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
    Admin(settings).ensure_topics(
        catalogue.core_specs() + catalogue.version_specs(args.model, args.version)
    )
    metrics.serve(args.metrics_port or settings.metrics_port)
    worker = Worker(settings, options, adapter)
    log.info("worker %s serving %s with %s", args.instance, worker.topic, adapter.name)
    worker.run(stop)
    return 0


def _guard(target: object, stop: threading.Event) -> None:
    """Run a loop in a thread; if it dies, stop the whole process (a supervisor restarts it)."""
    try:
        target(stop)  # type: ignore[operator]
    except Exception:
        log.exception("controller stopped")
        stop.set()
