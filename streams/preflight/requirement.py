"""A plan's pre-flight requirement, ``preflight: {since: 6h, min_requests: 5000}``, and which
recorded pre-flight satisfies it.

``canary rollout start`` with such a plan starts the rollout only on a **passing** pre-flight of
the same model, baseline and candidate that compared at least ``min_requests`` replayed
requests and finished no longer than ``since`` ago; when there is none it runs one, replaying
the traffic recorded over the last ``since``.

>>> req = parse_requirement({"since": "6h", "min_requests": 5000})
>>> req.since_s, req.min_requests
(21600.0, 5000)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from model_canary.streams.errors import ConfigError
from model_canary.streams.messages import Preflight

DEFAULT_SINCE_S = 6 * 3600.0
DEFAULT_MIN_REQUESTS = 5000


class RequirementError(ConfigError):
    """A plan's ``preflight`` field is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class PreflightRequirement:
    """How recent (``since_s``) and how large (``min_requests``) a passing pre-flight must be."""

    since_s: float = DEFAULT_SINCE_S
    min_requests: int = DEFAULT_MIN_REQUESTS

    def to_doc(self) -> dict[str, Any]:
        """The plan-file form (``since`` in seconds)."""
        return {"since": self.since_s, "min_requests": self.min_requests}


def parse_requirement(value: Any) -> PreflightRequirement | None:
    """The ``preflight`` field of a plan document: a mapping with ``since`` (a duration:
    ``90m``, ``6h``, or seconds) and ``min_requests``; ``true`` for the defaults; absent,
    ``null`` or ``false`` for none. :class:`RequirementError` otherwise.

    >>> parse_requirement(True) == PreflightRequirement(), parse_requirement(None)
    (True, None)
    """
    # Imported here: the plan parser reads its ``preflight`` field through this function.
    from model_canary.streams.plan import PlanError, duration

    if value is None or value is False:
        return None
    if value is True:
        return PreflightRequirement()
    if not isinstance(value, dict):
        raise RequirementError(
            "preflight: must be a mapping like {since: 6h, min_requests: 5000} (or true)"
        )
    unknown = sorted(map(str, set(value) - {"since", "min_requests"}))
    if unknown:
        raise RequirementError(f"preflight: unknown field(s) {unknown}; it has since, min_requests")
    try:
        since = duration(value.get("since", DEFAULT_SINCE_S), "preflight.since")
    except PlanError as exc:
        raise RequirementError(str(exc)) from None
    if since <= 0:
        raise RequirementError("preflight.since: must be longer than 0")
    minimum = value.get("min_requests", DEFAULT_MIN_REQUESTS)
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 1:
        raise RequirementError(
            f"preflight.min_requests: must be a whole number >= 1, got {minimum!r}"
        )
    return PreflightRequirement(since, minimum)


def choose(
    records: Iterable[Preflight],
    *,
    model: str,
    baseline: str,
    candidate: str,
    requirement: PreflightRequirement,
    now: datetime,
) -> tuple[Preflight | None, list[str]]:
    """The newest pre-flight that satisfies ``requirement`` for this rollout, or ``None`` with
    why each pre-flight of the candidate does not (newest first).

    >>> choose([], model="iris", baseline="v1", candidate="v2",
    ...        requirement=PreflightRequirement(), now=datetime.now())
    (None, [])
    """
    mine = sorted(
        (r for r in records if r.model == model and r.candidate_version == candidate),
        key=lambda r: r.updated_at,
        reverse=True,
    )
    oldest = now - timedelta(seconds=requirement.since_s)
    reasons: list[str] = []
    for r in mine:
        why = _unfit(r, baseline, requirement, oldest)
        if why is None:
            return r, reasons
        reasons.append(f"{r.preflight_id}: {why}")
    return None, reasons


def _unfit(
    r: Preflight, baseline: str, requirement: PreflightRequirement, oldest: datetime
) -> str | None:
    if r.baseline_version != baseline:
        return f"compared with {r.baseline_version}, not {baseline}"
    if not r.finished:
        return f"not finished ({r.status.value})"
    if not r.passed:
        return f"{r.status.value}: {r.reason}"
    if r.answered < requirement.min_requests:
        return f"compared {r.answered} requests, fewer than {requirement.min_requests}"
    if r.updated_at < oldest:
        return f"finished {r.updated_at.isoformat()}, longer ago than {requirement.since_s:g}s"
    return None
