"""``canary evaluator``: the agent that promotes or rolls back rollouts on its own."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading

from model_canary.agents import metrics
from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.cli.logs import setup_logging
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.kafka.reachable import wait_for_kafka_or_signal
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    ev = sub.add_parser(
        "evaluator",
        parents=[common],
        help="run the evaluator: automatic, statistically sound promote and rollback",
        description="Sum the evidence the routers, workers and label joiners publish per "
        "transaction (a faust-streaming app; each record counted exactly once, checkpointed "
        "to a compacted topic so a restart takes seconds) and decide on the clock: ADVANCE, "
        "HOLD (with the reason), ROLLBACK as soon as a metric shows harm beyond its tolerance, "
        "FINALIZE at the end. Decisions with the evidence offsets they rest on and the "
        "resulting commands go to the control topic; an operator's command always wins. Run "
        "several for more models: they share the evidence partitions through their consumer "
        "group.",
    )
    ev.add_argument(
        "--interval", type=float, default=1.0, help="seconds between decisions (default 1)"
    )
    ev.add_argument(
        "--checkpoint-interval",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds between checkpoints of the evidence state (default 2): a restart "
        "re-reads at most this much evidence",
    )
    ev.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (CANARY_METRICS_PORT)",
    )
    ev.add_argument(
        "--instance",
        default=socket.gethostname(),
        help="this evaluator's instance name, unique among running evaluators; it names its "
        "static consumer-group membership (a restart takes its partitions back at once) and "
        "the label joiner's Kafka transactional id (default: the host name)",
    )
    ev.add_argument(
        "--no-joiner",
        action="store_true",
        help="do not join ground-truth labels with predictions in this process (another "
        "evaluator instance does)",
    )
    ev.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ev.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    settings = settings_from_args(args)
    if not wait_for_kafka_or_signal(settings):
        return 0
    Admin(settings).ensure_topics(
        TopicCatalogue(settings.topic_prefix, settings.partitions).core_specs()
    )
    metrics.serve(args.metrics_port or settings.metrics_port)
    from faust import Worker

    from model_canary.agents.evaluator.app import EvaluatorOptions, build_app

    stop = threading.Event()
    failed = threading.Event()
    joiner_thread: threading.Thread | None = None
    if not args.no_joiner:
        from model_canary.agents.evaluator.joiner import LabelJoiner

        joiner = LabelJoiner(settings, args.instance)

        def run_joiner() -> None:
            try:
                joiner.run(stop)
            except Exception:
                # The joiner cannot go on: stop the whole evaluator, so a supervisor
                # restarts it (the faust worker handles the signal as an operator's stop).
                log.exception("the label joiner stopped")
                failed.set()
                os.kill(os.getpid(), signal.SIGTERM)

        joiner_thread = threading.Thread(target=run_joiner, name="label-joiner", daemon=True)
        joiner_thread.start()

    def stop_joiner() -> None:
        stop.set()
        if joiner_thread is not None:
            joiner_thread.join(30)

    options = EvaluatorOptions(interval_s=args.interval, checkpoint_s=args.checkpoint_interval)
    app = build_app(settings, options, instance=args.instance, on_shutdown=stop_joiner)
    level = "debug" if args.verbose else "warn"
    logging.getLogger("faust").setLevel(logging.WARNING)
    try:
        Worker(app, loglevel=level).execute_from_commandline()
    finally:
        stop_joiner()
    return 1 if failed.is_set() else 0
