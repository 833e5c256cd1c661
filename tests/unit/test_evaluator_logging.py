"""The evaluator's faust worker keeps the log level it is given (no debug records built)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faust
import pytest

from model_canary.agents.cli.evaluator_cmd import faust_worker


@pytest.fixture
def root_logging() -> Iterator[None]:
    """faust's logging set-up changes the root logger: put it back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _app() -> faust.App:
    # Nothing connects: the worker is built and its logging set up, never started.
    return faust.App("canary-logging-test", broker="kafka://127.0.0.1:1", web_enabled=False)


def test_warn_level_builds_no_debug_records(root_logging: None) -> None:
    # faust's start-up spinner used to set the root logger to DEBUG at level warn, so every
    # aiokafka debug call built a record (failed before the fix: 10 is DEBUG).
    worker = faust_worker(_app(), verbose=False)
    worker._setup_logging()
    assert logging.getLogger().level == logging.WARNING
    assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("aiokafka").isEnabledFor(logging.INFO)


def test_verbose_still_logs_debug(root_logging: None) -> None:
    worker = faust_worker(_app(), verbose=True)
    worker._setup_logging()
    assert logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG)
