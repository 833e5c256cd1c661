"""Packed evidence columns: every packing round-trips, malformed bytes are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_canary.streams.evidence.columns import (
    BINS,
    MAX_BIN,
    UNIT_COLUMNS,
    bin_of,
    bin_upper_ms,
    bins_of,
    check_histogram,
    histogram,
    pack_dense_units,
    pack_histogram,
    pack_units,
    unpack_histogram,
    unpack_units,
)

LATENCIES = st.lists(st.floats(min_value=-10, max_value=1e9) | st.floats(), max_size=200)


@given(LATENCIES)
def test_histogram_round_trips_and_counts_every_latency(latencies: list[float]) -> None:
    dense = histogram(latencies)
    assert dense.shape == (BINS,) and int(dense.sum()) == len(latencies)
    assert np.array_equal(unpack_histogram(pack_histogram(dense)), dense)
    assert len(pack_histogram(dense)) == 6 * int(np.count_nonzero(dense))


@given(st.floats(min_value=0.0101, max_value=1e8))
def test_a_latency_lies_in_its_bin(ms: float) -> None:
    b = bin_of(ms)
    assert 0 <= b <= MAX_BIN
    assert bin_upper_ms(b - 1) <= ms * (1 + 1e-9)
    assert ms < bin_upper_ms(b) * (1 + 1e-9)
    assert int(bins_of([ms])[0]) == b


def test_unusable_latencies_land_at_the_edges() -> None:
    assert bin_of(math.nan) == MAX_BIN and bin_of(math.inf) == MAX_BIN
    assert bin_of(-1.0) == 0 and bin_of(0.0) == 0
    assert bins_of([math.nan, -1.0, math.inf]).tolist() == [MAX_BIN, 0, MAX_BIN]


def test_malformed_histograms_are_refused() -> None:
    bad_bin = np.zeros(2, dtype=[("bin", "<u2"), ("count", "<u4")])
    bad_bin["bin"] = [3, MAX_BIN + 1]
    # check_histogram refuses what unpack_histogram refuses, for the same reason.
    for read in (unpack_histogram, check_histogram):
        with pytest.raises(ValueError, match="whole number"):
            read(b"\x00\x00\x01")
        with pytest.raises(ValueError, match="above"):
            read(bad_bin.tobytes())
    check_histogram(bad_bin[:1].tobytes())
    check_histogram(b"")
    with pytest.raises(ValueError, match="bins"):
        pack_histogram(np.zeros(3, dtype=np.int64))


ITEMS = st.lists(
    st.tuples(st.integers(0, 9999), st.integers(0, 5), st.integers(0, 5)), max_size=300
)


@pytest.mark.parametrize("kind", sorted(UNIT_COLUMNS))
@given(items=ITEMS)
def test_unit_rows_round_trip_as_sums_per_bucket(kind: str, items: list[tuple[int, ...]]) -> None:
    cols = UNIT_COLUMNS[kind]
    buckets = [b for b, *_ in items]
    values = {c: [item[1 + (i % 2)] for item in items] for i, c in enumerate(cols)}
    rows = unpack_units(kind, pack_units(kind, buckets, **values))
    assert rows["bucket"].tolist() == sorted(set(buckets))
    for c in cols:
        expected = np.zeros(10_000, dtype=np.int64)
        np.add.at(expected, np.asarray(buckets, dtype=np.intp), np.asarray(values[c], np.int64))
        got = np.zeros(10_000, dtype=np.int64)
        got[rows["bucket"].astype(np.intp)] = rows[c]
        assert np.array_equal(got, expected)
        # The dense packing of the same sums gives the same rows wherever a count is non-zero.
    dense = (
        {
            c: np.bincount(buckets, weights=values[c], minlength=10_000).astype(np.int64)
            for c in cols
        }
        if buckets
        else {c: np.zeros(10_000, np.int64) for c in cols}
    )
    again = unpack_units(kind, pack_dense_units(kind, dense))
    nonzero = [int(b) for b in rows["bucket"] if any(dense[c][b] for c in cols)]
    assert again["bucket"].tolist() == nonzero


def test_malformed_unit_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown evidence kind"):
        pack_units("nope", [1])
    with pytest.raises(ValueError, match="no column"):
        pack_units("routed", [1], errors=[1])
    with pytest.raises(ValueError, match="buckets must be"):
        pack_units("routed", [10_000], n=[1])
    with pytest.raises(ValueError, match="values for"):
        pack_units("routed", [1, 2], n=[1])
    with pytest.raises(ValueError, match="whole number"):
        unpack_units("served", b"\x01\x02\x03")
    row = np.zeros(1, dtype=[("bucket", "<u2"), ("n", "<u4")])
    row["bucket"] = 10_000
    with pytest.raises(ValueError, match="above"):
        unpack_units("routed", row.tobytes())
