"""``canary evaluator``: the agent that promotes or rolls back rollouts on its own."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

from model_canary.agents import metrics
from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.cli.logs import setup_logging
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.kafka.reachable import wait_for_kafka_or_signal
from model_canary.agents.process import AgentProcess
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
        help="do not start a label joiner ('canary joiner', a child process that joins "
        "ground-truth labels with predictions); run your own joiners instead",
    )
    ev.add_argument(
        "--joiner-metrics-port",
        type=int,
        metavar="PORT",
        help="the joiner child's Prometheus /metrics port",
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
    from model_canary.agents.evaluator.app import EvaluatorOptions, build_app

    def make_joiner() -> AgentProcess:
        # A process of its own: joining tens of thousands of labels a second must not take
        # the evaluator's event loop's time (one interpreter lock per process).
        joiner_args = ["joiner", "--instance", args.instance, "--parent-pid", str(os.getpid())]
        if args.joiner_metrics_port:
            joiner_args += ["--metrics-port", str(args.joiner_metrics_port)]
        if args.verbose:
            joiner_args.append("-v")
        # (Not the evaluator's metrics port: the joiner serves its own, if given one.)
        child = dataclasses.replace(settings, metrics_port=None)
        return AgentProcess.canary("joiner", joiner_args, child, None)

    joiner = JoinerChild(None if args.no_joiner else make_joiner)

    options = EvaluatorOptions(interval_s=args.interval, checkpoint_s=args.checkpoint_interval)
    app = build_app(
        settings,
        options,
        instance=args.instance,
        # Started once faust runs (its signal handlers installed): a stop then always reaches
        # joiner.stop.
        on_start=joiner.start,
        on_shutdown=joiner.stop,
    )
    logging.getLogger("faust").setLevel(logging.WARNING)
    return serve(faust_worker(app, verbose=args.verbose), joiner)


def serve(worker: Any, joiner: JoinerChild) -> int:
    """Run faust's ``worker`` until it stops, then stop ``joiner``; the exit code: 1 when the
    joiner failed (faust's worker exits 0 after the SIGTERM the joiner's watcher sends), else
    the worker's."""
    code: object = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:  # faust's worker always ends so
        code = exc.code
    finally:
        joiner.stop()
    if joiner.failed.is_set():
        return 1
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)  # as sys.exit prints a message
    return 1


def faust_worker(app: Any, *, verbose: bool) -> Any:
    """The faust worker that runs ``app``, logging at debug level if ``verbose``, else warn.

    Without its start-up spinner: the spinner turns at every log record, so at level warn
    and above faust sets the root logger to DEBUG, and every library's debug record (aiokafka
    logs each fetch) was built and then dropped by the handler, a few percent of the
    evaluator's CPU under load. Without it the root logger keeps the level and the same lines
    are printed."""
    from faust import Worker

    worker = Worker(app, loglevel="debug" if verbose else "warn")
    worker.spinner = None
    return worker


class _Child(Protocol):
    """What :class:`JoinerChild` needs of its process (an :class:`AgentProcess`)."""

    def start(self) -> object: ...

    def stop(self, timeout: float = 30.0) -> int | None: ...

    def wait(self, timeout: float | None) -> int | None: ...


def _stop_this_process() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class JoinerChild:
    """The evaluator's label joiner, a child process: started once, stopped at shutdown, and
    watched by a thread of its own. If it ends on its own with a non-zero code, the evaluator
    logs an error, sets :attr:`failed` and stops too (``stop_evaluator``; a supervisor
    restarts both). An end that :meth:`stop` asked for is not a failure, whatever its code:
    a joiner still starting when the SIGTERM comes dies of it (-15) before it can exit 0.

    ``make`` builds the child's process (``None``: no joiner, ``--no-joiner``).
    """

    def __init__(
        self,
        make: Callable[[], _Child] | None,
        *,
        stop_evaluator: Callable[[], None] = _stop_this_process,
    ) -> None:
        self._make = make
        self._stop_evaluator = stop_evaluator
        self._lock = threading.Lock()
        self._stopping = False
        self.process: _Child | None = None
        #: The joiner ended on its own with a non-zero code.
        self.failed = threading.Event()
        #: The thread that waits for the process to end (None until started).
        self.watcher: threading.Thread | None = None

    def start(self) -> None:
        """Start the joiner and its watcher, unless already started or stopping."""
        with self._lock:
            if self._make is None or self.process is not None or self._stopping:
                return
            self.process = process = self._make()
            process.start()
            self.watcher = threading.Thread(
                target=self._watch, args=(process,), name="joiner-watch", daemon=True
            )
            self.watcher.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the joiner (SIGTERM, SIGKILL after ``timeout``); its end is then expected.
        Idempotent; no joiner starts after it."""
        with self._lock:
            self._stopping = True
            process = self.process
        if process is not None:
            process.stop(timeout=timeout)

    def _watch(self, process: _Child) -> None:
        code = process.wait(None)
        with self._lock:
            stopping = self._stopping
        if stopping:
            log.info("the label joiner stopped (exit code %s)", code)
        elif code != 0 and not self.failed.is_set():
            log.error("the label joiner exited with code %s: stopping", code)
            self.failed.set()
            self._stop_evaluator()
