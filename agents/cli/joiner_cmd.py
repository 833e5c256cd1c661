"""``canary joiner``: the label joiner (ground truth meets predictions, labelled evidence out).

``canary evaluator`` starts one as a child process unless told ``--no-joiner``; run more
(each with its own ``--instance``) to join more labels: they share the predictions and
feedback partitions through their consumer group.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import threading

from model_canary.agents import metrics
from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.cli.logs import setup_logging
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.kafka.eos import stop_on_signals
from model_canary.agents.kafka.reachable import wait_for_kafka
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    joiner = sub.add_parser(
        "joiner",
        parents=[common],
        help="run a label joiner: ground-truth feedback meets the predictions it labels",
        description="Join ground-truth labels (the feedback topic, keyed by request id) with "
        "the predictions workers publish in rollouts that compare ground truth, exactly once, "
        "and publish the labelled evidence the evaluator reads. Predictions wait for their "
        "label for the plan's label window (default 24 h); a label that comes first waits "
        "5 minutes; whatever joins or expires is forgotten at once. Feedback keyed by "
        "something else than its request id is re-keyed first. 'canary evaluator' starts one "
        "(a child process) unless given --no-joiner; run more with their own --instance for "
        "more labels per second (they share the partitions).",
    )
    joiner.add_argument(
        "--instance",
        default=socket.gethostname(),
        help="this joiner's instance name, unique among running joiners; it names its Kafka "
        "transactional id (default: the host name)",
    )
    joiner.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (CANARY_METRICS_PORT)",
    )
    joiner.add_argument(
        "--parent-pid",
        type=int,
        help=argparse.SUPPRESS,  # set by the evaluator that started it: stop when it is gone
    )
    joiner.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    joiner.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    settings = settings_from_args(args)
    stop = stop_on_signals()
    if args.parent_pid:
        _stop_with_parent(args.parent_pid, stop)
    if not wait_for_kafka(settings, stop=stop):
        return 0
    Admin(settings).ensure_topics(
        TopicCatalogue(settings.topic_prefix, settings.partitions).core_specs()
    )
    metrics.serve(args.metrics_port or settings.metrics_port)
    from model_canary.agents.evaluator.joiner import LabelJoiner

    LabelJoiner(settings, args.instance).run(stop)
    return 0


def _stop_with_parent(parent: int, stop: threading.Event) -> None:
    """Stop when the process that started this one is gone (even killed with SIGKILL): on
    Linux the kernel sends SIGTERM at once (``PR_SET_PDEATHSIG``); elsewhere, and as a
    fallback, a thread notices within a second."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # gone before the kernel was told
        stop.set()

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                log.warning("the evaluator that started this joiner is gone: stopping")
                stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
