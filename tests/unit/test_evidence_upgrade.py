"""An evaluator upgraded in the middle of a rollout goes on from the checkpoint the previous
release saved, and counts that release's evidence exactly as it would have.

``data/upgrade-snapshot-bf7afba.json`` was written by ``data/make_upgrade_snapshot.py`` run
from a checkout of ``bf7afba`` (the release before batch-counted latency, whose tally rows are
version 1 and whose evidence records are schema version 1): the evaluator's checkpoint of one
rollout after half of its evidence, the other half as that release wrote it on the wire, and
what that release counted at both points. A release that changes the snapshot or the evidence
format without reading the old one fails here: its evaluator would start the rollout's evidence
over (the checkpoint "cannot be read") or miscount the old records.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from model_canary.streams.codec.avro import codec_for
from model_canary.streams.evidence.state import RolloutEvidence
from model_canary.streams.messages import Evidence
from model_canary.streams.stats.layout import ARMS, FIELDS

DATA = Path(__file__).parent / "data" / "upgrade-snapshot-bf7afba.json"


def counts(state: RolloutEvidence) -> dict[str, Any]:
    """A state's counts by name (field positions may change between releases): the totals
    per arm, the records applied, the watermark and the tally's released counters per
    (weight, scope, arm)."""
    state.tally.refresh()
    t = state.tally
    released = {}
    for slot_index, (weight, scope) in enumerate(t.slots):
        for arm_index, arm in enumerate(ARMS):
            row = t.totals[0, slot_index, arm_index]
            released[f"{weight}|{scope}|{arm}"] = {
                name: int(v) for name, v in zip(FIELDS, row, strict=True)
            }
    return {
        "totals": state.totals(),
        "records": state.records,
        "watermark": state.watermark,
        "released": released,
    }


def load() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DATA.read_text())
    return doc


def test_the_previous_release_s_checkpoint_restores_with_its_counts() -> None:
    doc = load()
    state = RolloutEvidence.from_bytes(base64.b64decode(doc["snapshot"]))
    assert doc["written_by"] == "bf7afba"
    assert counts(state) == doc["expected_restored"]
    assert state.totals()["baseline"]["answered"] > 0  # the file holds a rollout under way


def test_the_previous_release_s_evidence_counts_on_from_its_checkpoint_as_it_would_have() -> None:
    doc = load()
    state = RolloutEvidence.from_bytes(base64.b64decode(doc["snapshot"]))
    codec = codec_for(Evidence)
    records = [codec.decode(base64.b64decode(r)) for r in doc["records"]]
    assert {ev.schema_version for ev in records} == {1}  # written before batches_timed
    for ev in records:
        state.apply(ev)
    state.settle(10**13)
    assert counts(state) == doc["expected_final"]
    # A restart re-reads some of those records: nothing counts twice.
    for ev in records[-5:]:
        state.apply(ev)
    state.settle(10**13)
    assert counts(state) == doc["expected_final"]
