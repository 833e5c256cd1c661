"""Snapshot arrays: integer arrays stored narrow and read back as they were; snapshots of the
first format (``CSN1``, arrays as they are) still read."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from model_canary.streams.evidence import snapshot


@dataclass
class Row:
    version: int = 1
    counts: Any = None
    big: Any = None


#: ``dump(Row(counts=int64 [[0, 3, 250], [7, 1, 2]], big=int64 [-1, 2**40]))`` as the code of
#: session 24 (76e659f) wrote it: format CSN1.
CSN1_ROW = bytes.fromhex(
    "43534e3178018b656060a8564a51b2520aca2f57d2514a53b2aa562a4b2d2acecccf53b232d4514ace2fcd2b"
    "290689262a59452bd9645a28e9441be918c7ea18e89858c4d6ea282565a6a34bc702a5740ccd626b6b6b81e6"
    "83013394fe05a5d9a13423946682d2ffa100cc054a02004628239d"
)


def test_a_snapshot_of_the_first_format_reads_as_written() -> None:
    row = snapshot.load(CSN1_ROW, [Row])
    assert row.counts.dtype == np.int64 and row.counts.tolist() == [[0, 3, 250], [7, 1, 2]]
    assert row.big.dtype == np.int64 and row.big.tolist() == [-1, 2**40]


def _stored_dtypes(data: bytes) -> list[str]:
    """The dtypes the arrays of a snapshot are stored in (its JSON document's array nodes)."""
    body = zlib.decompress(data[4:])
    (size,) = struct.unpack_from("<I", body)
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "a" in node:
                found.append(node["a"][4] if len(node["a"]) == 5 else node["a"][0])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(body[4 : 4 + size]))
    return found


def test_small_counts_are_stored_narrow() -> None:
    data = snapshot.dump(
        Row(counts=np.array([[0, 3, 250]], dtype=np.int64), big=np.array([-1, 2**40]))
    )
    assert data[:4] == b"CSN2"
    assert _stored_dtypes(data) == ["|u1", "<i8"]  # 2**40 fits no narrower dtype


@settings(max_examples=200, deadline=None)
@given(
    arr=st.one_of(
        hnp.arrays(
            st.sampled_from([np.int64, np.int32, np.uint16, np.uint8, np.uint32]),
            hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5),
        ),
        hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=4)),
        hnp.arrays(np.bool_, hnp.array_shapes(max_dims=2, max_side=4)),
    )
)
def test_any_array_reads_back_with_its_values_dtype_and_shape(arr: np.ndarray[Any, Any]) -> None:
    back = snapshot.load(snapshot.dump(Row(counts=arr)), [Row]).counts
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr, equal_nan=arr.dtype.kind == "f")
    back[...] = 0  # writable, not a view of the snapshot's bytes


def test_a_stored_dtype_outside_the_allowed_ones_is_refused() -> None:
    data = snapshot.dump(Row(counts=np.array([1, 2, 3], dtype=np.int64)))
    body = zlib.decompress(data[4:]).replace(b'"|u1"', b'"|O8"')
    with pytest.raises(snapshot.SnapshotError, match="not allowed"):
        snapshot.load(data[:4] + zlib.compress(body), [Row])
