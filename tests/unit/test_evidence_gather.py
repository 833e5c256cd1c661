"""A transaction's evidence records gathered and handed over together; records numbered
``part`` of ``parts``; records written before the numbering (``schemas/history/evidence.v2.avsc``)
still read, unnumbered."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_canary.schemas import schema_dir
from model_canary.streams.codec.avro import codec_for, fingerprint
from model_canary.streams.errors import RecordValidationError
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
from model_canary.streams.evidence.gather import HOLD_MS, Gathering
from model_canary.streams.messages import Evidence, OffsetRange
from tests.unit.record_strategies import avro_message


def txn(
    first: int,
    arms: tuple[str, ...] = ("canary", "baseline"),
    *,
    source: str = "joiner-1",
    models: tuple[str, ...] = ("iris",),
) -> list[Evidence]:
    """One joiner transaction's labelled records (one per model and arm)."""
    b = EvidenceBuilder("labelled", source=source)
    for model in models:
        for arm in arms:
            b.add_label(Cell(model, "ro1", "v", arm, True, 5000, 1000), 7, True)
    return b.build((OffsetRange(topic="feedback", partition=0, first=first, last=first + 9),))


def test_the_builder_numbers_each_model_and_rollouts_records_and_leaves_stable_out() -> None:
    records = txn(0, ("canary", "baseline", "control", "stable"), models=("iris", "wine"))
    got = [(ev.model, ev.arm.value, ev.part, ev.parts) for ev in records]
    assert got == [
        ("iris", "canary", 1, 3),
        ("iris", "baseline", 2, 3),
        ("iris", "control", 3, 3),
        ("iris", "stable", 0, 0),
        ("wine", "canary", 1, 3),
        ("wine", "baseline", 2, 3),
        ("wine", "control", 3, 3),
        ("wine", "stable", 0, 0),
    ]


def test_a_transaction_is_handed_over_once_all_its_records_arrived() -> None:
    canary, baseline = txn(0)
    g = Gathering()
    assert g.offer(canary, offset=5, now_ms=0) == []
    assert (len(g), g.oldest()) == (1, 5)
    assert g.offer(baseline, offset=8, now_ms=0) == [(canary, 5), (baseline, 8)]
    assert (len(g), g.oldest()) == (0, None)


def test_records_that_are_not_numbered_pass_at_once() -> None:
    old = dataclasses.replace(txn(0)[0], part=0, parts=0)
    assert Gathering().offer(old, offset=3, now_ms=0) == [(old, 3)]


def test_transactions_of_other_sources_and_models_are_gathered_side_by_side() -> None:
    a1, a2 = txn(0, source="joiner-1")
    b1, b2 = txn(0, source="joiner-2")
    i1, i2, w1, w2 = txn(10, source="joiner-3", models=("iris", "wine"))
    g = Gathering()
    out = [g.offer(ev, offset=i, now_ms=0) for i, ev in enumerate((a1, b1, i1, w1, a2, w2))]
    assert out[:4] == [[], [], [], []]
    assert out[4] == [(a1, 0), (a2, 4)]
    assert out[5] == [(w1, 3), (w2, 5)]
    assert g.oldest() == 1
    assert g.offer(i2, offset=6, now_ms=0) == [(i1, 2), (i2, 6)]
    assert g.offer(b2, offset=7, now_ms=0) == [(b1, 1), (b2, 7)]
    assert len(g) == 0


def test_an_unfinished_transaction_goes_first_when_its_source_moves_on() -> None:
    first, _lost = txn(0)  # an at-least-once producer stopped after the first record
    again1, again2 = txn(5)
    g = Gathering()
    assert g.offer(first, offset=1, now_ms=0) == []
    assert g.offer(again1, offset=2, now_ms=0) == [(first, 1)]
    assert g.offer(again2, offset=3, now_ms=0) == [(again1, 2), (again2, 3)]
    # An unnumbered record of the same source moves on too.
    first, _lost = txn(20)
    plain = dataclasses.replace(txn(30)[0], part=0, parts=0)
    assert g.offer(first, offset=4, now_ms=0) == []
    assert g.offer(plain, offset=5, now_ms=0) == [(first, 4), (plain, 5)]


def test_a_transaction_held_too_long_is_released_as_it_is() -> None:
    canary, _ = txn(0)
    g = Gathering()
    g.offer(canary, offset=9, now_ms=1000)
    assert g.overdue(1000 + HOLD_MS - 1) == []
    assert g.overdue(1000 + HOLD_MS) == [(canary, 9)]
    assert (len(g), g.oldest()) == (0, None)


@given(st.permutations(range(6)), st.integers(1, 3))
def test_whatever_the_order_every_record_is_handed_over_once(order: list[int], k: int) -> None:
    records = [ev for i in range(3) for ev in txn(10 * i, source=f"j{i % k}")]
    g = Gathering()
    out = []
    for at, i in enumerate(order):
        out += g.offer(records[i], offset=at, now_ms=0)
    out += g.overdue(HOLD_MS)
    assert sorted(at for _ev, at in out) == list(range(6))


def test_part_must_be_within_parts() -> None:
    ev = txn(0)[0]
    for part, parts in ((0, 2), (3, 2), (1, 0), (-1, 0)):
        with pytest.raises(RecordValidationError):
            dataclasses.replace(ev, part=part, parts=parts)


def test_evidence_written_before_records_were_numbered_reads_unnumbered() -> None:
    v2 = json.loads((schema_dir() / "history" / "evidence.v2.avsc").read_text(encoding="utf-8"))
    assert "parts" not in [f["name"] for f in v2["fields"]]
    assert fingerprint(v2) != codec_for(Evidence).fingerprint
    datum = {
        "kind": "labelled", "model": "iris", "rollout_id": "ro1", "version": "v2",
        "arm": "canary", "second": 5, "source": "j", "offsets": [], "labelled": 2,
    }  # fmt: skip
    for f in v2["fields"]:
        datum.setdefault(f["name"], b"" if f["type"] == "bytes" else f.get("default"))
    old = codec_for(Evidence).decode(avro_message(v2, datum))
    assert (old.part, old.parts, old.labelled) == (0, 0, 2)
    new = txn(0)[1]
    assert codec_for(Evidence).decode(codec_for(Evidence).encode(new)) == new
