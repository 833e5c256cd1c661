"""The evidence builder: what a transaction's records say does not depend on how the
requests were added (in one call or many, counted per bucket on the way or summed at the end)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams.cohort import BUCKETS
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
from model_canary.streams.evidence.columns import unpack_units
from model_canary.streams.messages import Evidence, OffsetRange

OFFSETS = (OffsetRange(topic="t", partition=0, first=0, last=9),)
CELLS = [
    Cell("iris", "ro1", "", "canary", True, 2000, 1_700_000_000),
    Cell("iris", "ro1", "", "control", True, 2000, 1_700_000_000),
    Cell("iris", "ro1", "", "canary", True, 2000, 1_700_000_001),
]

bucket = st.integers(0, BUCKETS - 1)
# A transaction: batches, each a list of (cell, bucket) as the router adds them per batch.
batches = st.lists(
    st.lists(st.tuples(st.sampled_from(range(len(CELLS))), bucket), max_size=60), max_size=12
)


def built(txn: list[list[tuple[int, int]]], fold: int) -> list[Evidence]:
    builder = EvidenceBuilder("routed", source="r1", fold_routed=fold)
    for batch in txn:
        for i, cell in enumerate(CELLS):
            buckets = [b for c, b in batch if c == i]
            builder.add_routed(cell, buckets)
    return list(builder.build(OFFSETS))


@settings(max_examples=300)
@given(txn=batches, fold=st.integers(1, 200))
def test_folded_routed_counts_give_the_records_of_the_plain_sum(
    txn: list[list[tuple[int, int]]], fold: int
) -> None:
    plain = built(txn, fold=10**9)  # never folded: the buckets summed once, at build
    assert built(txn, fold=fold) == plain


@given(txn=batches)
def test_routed_records_count_every_request_in_its_bucket(
    txn: list[list[tuple[int, int]]],
) -> None:
    for ev in built(txn, fold=7):
        i = CELLS.index(
            Cell(ev.model, ev.rollout_id, "", ev.arm.value, ev.served, ev.weight_bp, ev.second)
        )
        want: dict[int, int] = {}
        for batch in txn:
            for c, b in batch:
                if c == i:
                    want[b] = want.get(b, 0) + 1
        rows = unpack_units("routed", ev.units)
        assert {int(r["bucket"]): int(r["n"]) for r in rows} == want
        assert ev.requests == sum(want.values())
        assert ev.offsets == OFFSETS


def test_a_builder_folds_and_starts_over_after_build() -> None:
    builder = EvidenceBuilder("routed", source="r1", fold_routed=2)
    builder.add_routed(CELLS[0], [5, 5, 9])
    [ev] = builder.build(OFFSETS)
    assert ev.requests == 3
    assert builder.build(OFFSETS) == []
    builder.add_routed(CELLS[0], [1])
    [ev] = builder.build(OFFSETS)
    assert ev.requests == 1
