"""The demo's A/A scenario: an identical candidate judged by the default plan (shortened), under
sticky Zipf-skewed keys. The runs themselves need a broker and minutes each: they are a command
(``canary demo --scenario aa --runs N``), not a test; here, what they are made of."""

from __future__ import annotations

from collections import Counter

import pytest

from model_canary.agents.cli.demo_cmd import runs_summary
from model_canary.agents.demo.load import Example, LoadGenerator, LoadOptions
from model_canary.agents.demo.plan import Scenario, aa_plan
from model_canary.streams.errors import ConfigError
from model_canary.streams.plan import parse_plan
from model_canary.streams.settings import Settings


def test_the_aa_plan_is_the_default_plan_with_shorter_steps() -> None:
    plan = parse_plan(aa_plan(speed=10.0))
    default = parse_plan({"model": "iris", "baseline": "v1", "canary": "v2"})
    assert plan.steps_bp == default.steps_bp
    assert plan.metrics == default.metrics and plan.alpha == default.alpha
    assert plan.control == default.control
    assert plan.min_canary_requests == default.min_canary_requests
    assert plan.min_step_seconds == default.min_step_seconds / 10
    assert plan.warmup_seconds == default.warmup_seconds / 10


def test_the_aa_candidate_is_the_baseline_model_and_must_be_finalized() -> None:
    aa = Scenario("aa")
    assert aa.canary_model() == "v1" and aa.canary_faults() == ()
    assert aa.expected_phase == "Succeeded"


def _keys(skew: float, n: int = 20_000) -> Counter[str]:
    gen = LoadGenerator(
        Settings(), LoadOptions(keys=1000, key_skew=skew), [Example(b'{"x": 1}', "1")]
    )
    return Counter(f"user-{gen._user()}" for _ in range(n))


def test_skewed_keys_follow_a_zipf_law_and_uniform_ones_do_not() -> None:
    skewed = _keys(1.0)
    # Zipf(1) over 1,000 users: the heaviest sends 1/H(1000) = 13.4% of requests, the
    # second half.
    top = skewed.most_common(2)
    assert top[0][0] == "user-0" and 0.11 < top[0][1] / 20_000 < 0.16
    assert top[1][0] == "user-1" and 0.4 < top[1][1] / top[0][1] < 0.6
    uniform = _keys(0.0)
    assert uniform.most_common(1)[0][1] / 20_000 < 0.005
    assert len(uniform) > 990
    with pytest.raises(ConfigError, match="key skew"):
        LoadOptions(key_skew=-1.0)


def test_runs_are_summarised_by_their_final_phase() -> None:
    outcomes = [
        {"final_phase": "Succeeded", "ok": True},
        {"final_phase": "Succeeded", "ok": True},
        {"final_phase": "RolledBack", "ok": False},
    ]
    assert runs_summary(outcomes) == {
        "runs": 3,
        "phases": {"RolledBack": 1, "Succeeded": 2},
        "rolled_back": 1,
        "ok": 2,
    }
