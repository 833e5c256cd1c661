"""Logging set-up for long-running agents."""

from __future__ import annotations

import logging
import os


def setup_logging(verbose: bool = False) -> None:
    level = (
        logging.DEBUG
        if verbose
        else getattr(logging, os.environ.get("CANARY_LOG_LEVEL", "INFO").upper(), logging.INFO)
    )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
