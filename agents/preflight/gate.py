"""The gate before a rollout whose plan requires a pre-flight: find a passing one, or run one.

>>> # record = require_preflight(settings, plan, PreflightRequirement(6 * 3600, 5000))
"""

from __future__ import annotations

from datetime import timedelta

from model_canary.agents.preflight import store
from model_canary.agents.preflight.run import (
    PreflightError,
    PreflightOptions,
    Progress,
    run_preflight,
)
from model_canary.streams.messages import Preflight, utc_now
from model_canary.streams.plan import RolloutPlan
from model_canary.streams.preflight.requirement import PreflightRequirement, choose
from model_canary.streams.settings import Settings


class PreflightRequiredError(PreflightError):
    """The plan requires a passing pre-flight and there is none (the one run failed, or was
    inconclusive): the rollout is not started."""


def require_preflight(
    settings: Settings,
    plan: RolloutPlan,
    baseline: str,
    requirement: PreflightRequirement,
    *,
    run: bool = True,
    progress: Progress | None = None,
) -> Preflight:
    """The passing pre-flight the rollout of ``plan`` rests on: the newest recorded one that
    satisfies ``requirement``, else (with ``run``) one run now over the traffic recorded in
    the last ``requirement.since_s``. :class:`PreflightRequiredError`, saying why, when there
    is none."""
    say = progress or (lambda _line: None)
    found, reasons = choose(
        store.records(settings).values(),
        model=plan.model,
        baseline=baseline,
        candidate=plan.canary,
        requirement=requirement,
        now=utc_now(),
    )
    if found is not None:
        say(f"pre-flight {found.preflight_id} passed: {found.reason}")
        return found
    if not run:
        why = "; ".join(reasons) if reasons else "none was run"
        raise PreflightRequiredError(
            f"the plan requires a passing pre-flight of {plan.model} {plan.canary} against "
            f"{baseline} ({requirement.min_requests}+ requests, at most "
            f"{requirement.since_s:g}s old): {why}; run 'canary preflight --model {plan.model} "
            f"--candidate {plan.canary}'"
        )
    say(f"the plan requires a pre-flight of {plan.model} {plan.canary}; running one")
    outcome = run_preflight(
        settings,
        PreflightOptions(
            model=plan.model,
            candidate=plan.canary,
            baseline=baseline,
            since=utc_now() - timedelta(seconds=requirement.since_s),
            min_requests=requirement.min_requests,
            plan=plan,
        ),
        progress=say,
    )
    if not outcome.record.passed:
        raise PreflightRequiredError(
            f"the pre-flight the plan requires did not pass, the rollout is not started: "
            f"{outcome.record.status.value}: {outcome.record.reason} "
            f"(pre-flight {outcome.record.preflight_id})"
        )
    return outcome.record
