"""``canary load``: a keyed request load (iris rows, or any model's examples from a file) with
ground-truth labels sent after a delay."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.demo.load import LoadGenerator, LoadOptions, read_examples


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    load = sub.add_parser(
        "load",
        parents=[common],
        help="send a keyed request load with delayed labels (runs until interrupted)",
        description="Send example inputs to MODEL at RATE requests per second, each with a "
        "routing key drawn from KEYS users, and each request's true label (when known) to the "
        "feedback topic LABEL_DELAY seconds later; a share of requests is malformed, as from a "
        "broken client. The examples are the lines of --inputs FILE (JSON Lines: each line a "
        'model input, or {"inputs": INPUT, "label": "TEXT"}), cycled; without it, held-out '
        "iris rows (the sklearn extra). Runs until interrupted unless --duration is given.",
    )
    load.add_argument(
        "--inputs",
        type=Path,
        metavar="FILE",
        help="JSON Lines of example inputs (default: iris rows, 3%% of them missing a feature)",
    )
    load.add_argument("--model", required=True, help="the model to send requests to")
    load.add_argument("--rate", type=float, default=50.0, help="requests per second (50)")
    load.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    load.add_argument(
        "--label-delay", type=float, default=2.0, help="seconds until the label is sent (2)"
    )
    load.add_argument("--keys", type=int, default=10_000, help="distinct routing keys (10000)")
    load.add_argument(
        "--bad-input",
        type=float,
        help="share of malformed requests: an iris row missing a feature, or an input cut "
        "short (default 0.03 for iris, 0 with --inputs)",
    )
    load.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    examples = read_examples(args.inputs) if args.inputs else None
    bad_input = args.bad_input if args.bad_input is not None else (0.0 if examples else 0.03)
    options = LoadOptions(
        model=args.model,
        rate=args.rate,
        duration=args.duration,
        label_delay=args.label_delay,
        keys=args.keys,
        bad_input=bad_input,
        id_prefix=f"load-{int(time.time())}",
    )
    generator = LoadGenerator(settings_from_args(args), options, examples)
    stop = threading.Event()
    began = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)  # `docker stop`: flush what was sent, then exit
    try:
        generator.run(stop)
    except KeyboardInterrupt:
        stop.set()
    took = time.monotonic() - began
    print(
        f"sent {len(generator.sent)} requests and {generator.labels_sent} labels in {took:.0f}s",
        file=sys.stderr,
    )
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt
