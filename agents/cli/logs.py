"""Logging set-up for long-running agents."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal


def setup_logging(verbose: bool = False) -> None:
    level = (
        logging.DEBUG
        if verbose
        else getattr(logging, os.environ.get("CANARY_LOG_LEVEL", "INFO").upper(), logging.INFO)
    )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # An agent that seems stuck can be asked where it is: kill -USR1 PID prints every
    # thread's stack to its log.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
