"""The evaluator's logic between faust and the evidence state, with a stand-in for the rollout
view and the decision sink (no broker)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from model_canary.agents.evaluator.brain import Applied, Evaluator, NeedsRollout
from model_canary.agents.evaluator.decisions import DecisionSink
from model_canary.agents.evaluator.store import Checkpoint
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.enums import Action
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
from model_canary.streams.evidence.wire import encode_evidence
from model_canary.streams.messages import (
    Evidence,
    OffsetRange,
    Phase,
    RolloutState,
    epoch_ms,
    utc_now,
)
from model_canary.streams.plan import parse_plan
from model_canary.streams.settings import Settings
from model_canary.streams.stats.thresholds import THRESHOLD_ITEMS
from model_canary.streams.stats.verdicts import REPEAT_S

NOW = utc_now()
T0 = epoch_ms(NOW) // 1000 - 30


class View:
    def __init__(self, *states: RolloutState) -> None:
        self.states = {s.model: s for s in states}

    def get(self, model: str) -> RolloutState | None:
        return self.states.get(model)


def state(metrics: dict[str, Any] | None = None, **fields: Any) -> RolloutState:
    plan = parse_plan(
        {
            "model": "iris",
            "baseline": "v1",
            "canary": "v2",
            "steps": [50, 100],
            "step": {"min_duration": "1h", "warmup": 0},
            "metrics": metrics or {"errors": {}},
            "control": False,
        }
    )
    base: dict[str, Any] = dict(
        model="iris",
        rollout_id="ro1",
        stable_version="v1",
        baseline_version="v1",
        canary_version="v2",
        phase=Phase.PROGRESSING,
        steps_bp=(5000, 10000),
        weight_bp=5000,
        revision=4,
        step_started_at=NOW - timedelta(minutes=1),
        updated_at=NOW,
        plan_json=plan.to_json(),
    )
    base.update(fields)
    return RolloutState(**base)


def brain(*states: RolloutState) -> Evaluator:
    ev = Evaluator("t", View(*states), DecisionSink(Settings(topic_prefix="t")))  # type: ignore[arg-type]
    ev.install(0, Checkpoint())
    return ev


def records(
    n: int, *, first: int = 0, arm: str = "baseline", second: int = T0, rollout: str = "ro1"
) -> list[Evidence]:
    bucket = 1 if arm == "canary" else 9001  # at 50%: buckets below 5000 are the canary's
    routed = EvidenceBuilder("routed", source="r")
    routed.add_routed(Cell("iris", rollout, "", arm, True, 5000, second), [bucket] * n)
    served = EvidenceBuilder("served", source="w")
    cell = Cell("iris", rollout, "v1", arm, True, 5000, second)
    served.add_batch(
        [cell] * n,
        buckets=[bucket] * n,
        errors=[False] * n,
        latencies_ms=[4.0] * n,
        batch_latency_ms=4.0,
    )
    span = (OffsetRange(topic="in", partition=0, first=first, last=first + n - 1),)
    return routed.build(span) + served.build(span)


def messages(n: int, **kw: Any) -> list[bytes]:
    """:func:`records` written one message each (the ``records`` evidence format)."""
    return [codec_for(Evidence).encode(ev) for ev in records(n, **kw)]


def test_records_count_once_and_the_checkpoint_covers_exactly_what_was_handled() -> None:
    ev = brain(state())
    data = messages(10)
    results = [ev.on_evidence(v, ("t.evidence", 0, i)) for i, v in enumerate(data)]
    assert all(isinstance(r, Applied) for r in results)
    again = [ev.on_evidence(v, ("t.evidence", 0, 5 + i)) for i, v in enumerate(data)]
    assert again == [None, None], "read again further on: duplicates"
    cp = ev.checkpoint(0)
    assert cp is not None and cp.position == 7 and set(cp.snapshots) == {"iris"}
    ev.checkpointed(cp)
    assert ev.checkpoint(0) is None, "nothing changed since"
    # A restart from that checkpoint skips what it covers and counts nothing twice.
    again_brain = brain(state())
    again_brain.install(0, Checkpoint(cp.position, cp.snapshots))
    assert again_brain.on_evidence(data[0], ("t.evidence", 0, 3)) is None
    assert again_brain.states["iris"].totals()["baseline"]["answered"] == 10


def test_a_rollout_the_view_has_not_shown_waits_and_an_unreadable_record_is_dead_lettered() -> None:
    ev = brain()
    data = messages(3)
    need = ev.on_evidence(data[0], ("t.evidence", 0, 0))
    assert isinstance(need, NeedsRollout) and need.rollout_id == "ro1"
    left_out = frozenset({("iris", "ro1")})  # the view never showed it: left out
    assert ev.on_evidence(data[0], ("t.evidence", 0, 0), left_out=left_out) is None
    assert ev.on_evidence(b"junk", ("t.evidence", 0, 1), b"iris", []) is None
    cp = ev.checkpoint(0)
    assert cp is not None and cp.position == 2 and len(cp.dead) == 1
    assert dict(cp.dead[0].headers)["canary-dlq-reason"] == b"undecodable"


def test_a_verdict_is_published_once_a_minute_and_thresholds_fixed_first() -> None:
    s = state({"errors": {}, "latency_p95": {}})
    ev = brain(s)
    for i, v in enumerate(messages(THRESHOLD_ITEMS)):
        ev.on_evidence(v, ("t.evidence", 0, i))
    out = ev.decide(NOW)
    assert [e.command.action for _m, _r, e in out if e.command] == [Action.SET_THRESHOLDS]
    model, revision, emitted = out[0]
    assert emitted.command is not None and emitted.command.expected_revision == s.revision
    assert emitted.command.latency_thresholds_ms is not None
    ev.published(model, revision, emitted)
    assert ev.decide(NOW) == [], "waiting for the command to apply"
    fixed = dataclasses.replace(s, revision=5, latency_thresholds_ms={"p95": 5.0, "p99": 9.0})
    ev.view = View(fixed)  # type: ignore[assignment]
    out = ev.decide(NOW)
    assert len(out) == 1 and out[0][2].decision is not None and out[0][2].command is None
    assert out[0][2].decision.offsets[0].topic == "t.evidence"
    ev.published(*out[0])
    assert ev.decide(NOW) == [], "the same HOLD is not published again at once"
    again = ev.decide(NOW + timedelta(seconds=REPEAT_S))
    assert len(again) == 1, "but again a minute later, with its newest evidence"


def test_no_decision_sees_half_of_a_joiner_transaction() -> None:
    """A joiner transaction writes one labelled record per arm. Applied one at a time, a
    decision between the two saw labels for the canary only: a sample-ratio HOLD."""
    codec = codec_for(Evidence)
    ev = brain(state({"accuracy": {}}))
    at = 0
    for arm in ("canary", "baseline"):
        for value in messages(2000, first=at, arm=arm):
            ev.on_evidence(value, ("t.evidence", 0, at))
            at += 1
    for published in ev.decide(NOW):  # the evaluator decides every second
        ev.published(*published)
    joined = EvidenceBuilder("labelled", source="joiner-1")
    for arm, bucket in (("canary", 1), ("baseline", 9001)):
        for _ in range(1500):
            joined.add_label(Cell("iris", "ro1", "v", arm, True, 5000, T0), bucket, True)
    canary, baseline = joined.build((OffsetRange(topic="fb", partition=0, first=0, last=2999),))
    held = ev.on_evidence(codec.encode(canary), ("t.evidence", 0, at))
    # (A verdict is published when it changes: a sample-ratio HOLD would be.)
    reasons = [e.decision.reason for _m, _r, e in ev.decide(NOW) if e.decision is not None]
    assert not any("sample-ratio" in r for r in reasons), reasons
    assert held is None and ev.states["iris"].totals()["canary"]["labelled"] == 0
    cp = ev.checkpoint(0)
    assert cp is not None and cp.position == at, "a restart reads the held record again"
    applied = ev.on_evidence(codec.encode(baseline), ("t.evidence", 0, at + 1))
    assert isinstance(applied, Applied)
    totals = ev.states["iris"].totals()
    assert (totals["canary"]["labelled"], totals["baseline"]["labelled"]) == (1500, 1500)
    # Restarted from the checkpoint taken while the record was held: counted once.
    again = brain(state({"accuracy": {}}))
    again.install(0, Checkpoint(cp.position, cp.snapshots))
    again.on_evidence(codec.encode(canary), ("t.evidence", 0, at))
    again.on_evidence(codec.encode(baseline), ("t.evidence", 0, at + 1))
    totals = again.states["iris"].totals()
    assert (totals["canary"]["labelled"], totals["baseline"]["labelled"]) == (1500, 1500)


def test_a_set_counts_as_its_records_written_alone_and_once() -> None:
    """An EvidenceSet (``CANARY_EVIDENCE_FORMAT=sets``) counts what its records written one
    message each count; read again, nothing counts twice; old and new messages mix."""
    alone, together = brain(state()), brain(state())
    for i, v in enumerate(messages(10) + messages(4, first=10, arm="canary")):
        alone.on_evidence(v, ("t.evidence", 0, i))
    sets = [value for _k, value in encode_evidence(records(10), sets=True)]
    sets += messages(4, first=10, arm="canary")  # an older producer's records, alone
    for i, v in enumerate(sets):
        assert isinstance(together.on_evidence(v, ("t.evidence", 0, i)), Applied)
    assert len(sets) == 3
    assert together.states["iris"].totals() == alone.states["iris"].totals()
    assert together.states["iris"].totals()["baseline"] == {
        "routed": 10,
        "answered": 10,
        "errors": 0,
        "labelled": 0,
    }
    assert together.on_evidence(sets[0], ("t.evidence", 0, 7)) is None, "read again: a duplicate"
    assert together.states["iris"].totals() == alone.states["iris"].totals()


def test_a_set_with_an_unknown_rollout_counts_the_rest() -> None:
    """A set whose records include a rollout the view never showed waits for it and, left
    out, counts the records of the known rollout."""
    ev = brain(state())
    mixed = records(3, rollout="gone") + records(5)
    [(_key, value)] = encode_evidence(mixed, sets=True)
    need = ev.on_evidence(value, ("t.evidence", 0, 0))
    assert isinstance(need, NeedsRollout) and need.rollout_id == "gone"
    assert "iris" not in ev.states, "nothing applied before every rollout is known"
    left_out = frozenset({("iris", "gone")})
    assert isinstance(ev.on_evidence(value, ("t.evidence", 0, 0), left_out=left_out), Applied)
    assert ev.states["iris"].totals()["baseline"]["answered"] == 5
