"""The short CI version of ``canary chaos``: two faults at a low rate, each followed by the
audit (0 lost, 0 duplicated) and a check of the rollout state. The full run is
``canary chaos --json``."""

from __future__ import annotations

import pytest

from model_canary.agents.chaos.run import ChaosOptions, run_chaos, summary
from model_canary.streams.settings import Settings

pytestmark = pytest.mark.integration


def test_router_kill_and_canary_kill_during_rollback_lose_and_duplicate_nothing(
    settings: Settings,
) -> None:
    options = ChaosOptions(
        scenarios=("router-kill", "canary-kill-during-rollback"), rate=200, seconds=9
    )
    outcomes = run_chaos(settings, options)
    assert [o.scenario for o in outcomes] == list(options.scenarios)
    for outcome in outcomes:
        assert outcome.requests >= 200 * 9 * 0.9, outcome
        assert (outcome.lost, outcome.duplicated, outcome.orphans) == (0, 0, 0), outcome
        assert outcome.state_ok, outcome
        assert outcome.exited == (), outcome
    assert summary(outcomes, options)["ok"]
