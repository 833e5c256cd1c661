"""Shared test configuration: hypothesis profiles, and the order the test files run in."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "fuzz", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# The longest test files, longest first (their durations on a loaded 2-core machine, 2026-12):
# scripts/test runs the files on two processes (pytest-xdist, one file per process at a time,
# handed out in collection order: it passes --no-loadscope-reorder, without which xdist hands
# out the files with the most tests first and the long one-test files came last), and the
# suite ends soonest when the long ones start first and the short ones fill in around them.
SLOW_FIRST = (
    "tests/integration/test_demo.py",
    "tests/integration/test_bench.py",
    "tests/integration/test_hostile_input.py",
    "tests/integration/test_cli_rollout.py",
    "tests/integration/test_docs_models.py",
    "tests/integration/test_security.py",
    "tests/integration/test_preflight.py",
    "tests/integration/test_evaluator.py",
    "tests/integration/test_label_join.py",
    "tests/integration/test_late_broker.py",
    "tests/integration/test_evaluator_restart.py",
    "tests/integration/test_exactly_once.py",
    "tests/integration/test_broker_lifecycle.py",
    "tests/integration/test_outcome_rollback.py",
    "tests/integration/test_latency.py",
    "tests/integration/test_frozen_worker.py",
    "tests/integration/test_signed_control.py",
    "tests/integration/test_kcat.py",
    "tests/unit/test_hostile_input.py",
    "tests/unit/test_codec.py",
    "tests/integration/test_chaos.py",
    "tests/install/test_wheel.py",
    "tests/integration/test_feedback_cli.py",
    "tests/unit/test_avro_compiled.py",
    "tests/integration/test_rollback_and_shadow.py",
    "tests/integration/test_code_failures.py",
    "tests/integration/test_audit.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Collect the files of :data:`SLOW_FIRST` first (in that order), the rest as found."""

    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(config.rootpath).as_posix()
        return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the order within a file, and of the others, is kept
