"""Packed numpy columns of an evidence record: the latency histogram and the per-unit rows.

Everything is little-endian and fixed-width, so any language can read it:

* a **latency histogram** is a sparse list of ``(uint16 bin, uint32 count)`` pairs, bins in
  increasing order; bin ``b`` holds latencies in ``[0.01 * 1.02**b, 0.01 * 1.02**(b+1))`` ms
  (``b = floor(log(ms / 0.01) / log(1.02))``, clipped to ``0..1200``: 0.01 ms to ~3 days in
  steps of 2%);
* **unit rows** are one row per cohort bucket (``0..9999``, :mod:`model_canary.streams.cohort`)
  touched, ``uint16 bucket`` then ``uint32`` counts, buckets in increasing order; the columns
  depend on the evidence kind (:data:`UNIT_COLUMNS`).

>>> hist = histogram([0.5, 0.5, 12.0])
>>> int(unpack_histogram(pack_histogram(hist)).sum()), bin_of(12.0) == int(hist.nonzero()[0][-1])
(3, True)
>>> rows = pack_units("served", [3, 3, 7], n=[1, 1, 1], errors=[0, 1, 0])
>>> len(rows), unpack_units("served", rows)["errors"].tolist()
(36, [1, 0])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from model_canary.streams.cohort import BUCKETS
from model_canary.streams.errors import EvidenceError

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

#: Smallest latency with its own bin (ms), growth factor between bins, and the last bin.
BIN_BASE_MS = 0.01
BIN_GROWTH = 1.02
MAX_BIN = 1200
BINS = MAX_BIN + 1
_LOG_GROWTH = math.log(BIN_GROWTH)

HIST_DTYPE = np.dtype([("bin", "<u2"), ("count", "<u4")])

#: The count columns after ``bucket`` in a unit row, per evidence kind.
UNIT_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "served": ("n", "errors", "over_p95", "over_p99"),
    "labelled": ("labelled", "incorrect"),
    "routed": ("n",),
    #: an outcome metric's rows in a labelled record (:class:`~..messages.OutcomeUnits`)
    "outcome": ("counted", "bad"),
}
UNIT_DTYPES: Mapping[str, np.dtype] = {
    kind: np.dtype([("bucket", "<u2"), *((c, "<u4") for c in cols)])
    for kind, cols in UNIT_COLUMNS.items()
}
_UINT32_MAX = 2**32 - 1


def bin_of(latency_ms: float) -> int:
    """The histogram bin of one latency (a NaN or infinity counts as the slowest bin, a
    negative latency as the fastest).

    >>> bin_of(0.01), bin_of(0.0), bin_of(-5.0), bin_of(1000.0), bin_of(float("nan"))
    (0, 0, 0, 581, 1200)
    """
    if latency_ms != latency_ms or latency_ms == math.inf:
        return MAX_BIN  # NaN: an unusable measurement never looks fast
    if latency_ms <= BIN_BASE_MS:
        return 0
    return min(MAX_BIN, int(math.log(latency_ms / BIN_BASE_MS) / _LOG_GROWTH))


def bins_of(latencies_ms: Sequence[float] | Floats) -> Ints:
    """:func:`bin_of` for many latencies at once (numpy)."""
    ms = np.asarray(latencies_ms, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        raw = np.floor(np.log(np.maximum(ms, BIN_BASE_MS) / BIN_BASE_MS) / _LOG_GROWTH)
    raw = np.where(np.isnan(ms), MAX_BIN, raw)
    return np.asarray(np.clip(raw, 0, MAX_BIN), dtype=np.int64)


def bin_upper_ms(b: int) -> float:
    """The upper edge of bin ``b`` (ms): every latency in bins ``<= b`` is below it.

    >>> round(bin_upper_ms(0), 4), round(bin_upper_ms(581), 1)
    (0.0102, 1012.3)
    """
    return float(bin_upper_edges(b))


def bin_upper_edges(b: npt.ArrayLike) -> Floats:
    """:func:`bin_upper_ms` for many bins at once (numpy)."""
    return np.asarray(BIN_BASE_MS * BIN_GROWTH ** (np.asarray(b, dtype=np.float64) + 1.0))


def histogram(latencies_ms: Sequence[float] | Floats) -> Ints:
    """A dense histogram (``BINS`` counts) of latencies."""
    return np.bincount(bins_of(latencies_ms), minlength=BINS).astype(np.int64)


def pack_histogram(dense: Ints) -> bytes:
    """A dense histogram as sparse ``(bin, count)`` pairs (empty bins left out)."""
    counts = np.asarray(dense, dtype=np.int64)
    if counts.shape != (BINS,):
        raise EvidenceError(f"a histogram has {BINS} bins, got shape {counts.shape}")
    nz = np.flatnonzero(counts)
    if nz.size and (counts[nz].min() < 0 or counts[nz].max() > _UINT32_MAX):
        raise EvidenceError("histogram counts must be within 0..2**32-1")
    out = np.empty(nz.size, dtype=HIST_DTYPE)
    out["bin"] = nz
    out["count"] = counts[nz]
    return out.tobytes()


def unpack_histogram(data: bytes) -> Ints:
    """Sparse pairs back to a dense histogram; :class:`ValueError` for malformed bytes."""
    rows = _histogram_rows(data)
    dense = np.zeros(BINS, dtype=np.int64)
    if rows.size:
        np.add.at(dense, rows["bin"].astype(np.int64), rows["count"].astype(np.int64))
    return dense


def check_histogram(data: bytes) -> None:
    """Refuse what :func:`unpack_histogram` refuses, without building the histogram (for a
    record whose histogram is not counted: its answers were timed against thresholds).

    >>> check_histogram(pack_histogram(histogram([0.5])))
    >>> check_histogram(b"\\x00\\x00\\x01")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    model_canary.streams.errors.EvidenceError: latency histogram: 3 bytes is not a whole ...
    """
    _histogram_rows(data)


def _histogram_rows(data: bytes) -> npt.NDArray[np.void]:
    """The sparse ``(bin, count)`` rows of a packed histogram, each bin checked."""
    rows = _rows(data, HIST_DTYPE, "latency histogram")
    if rows.size and int(rows["bin"].max()) > MAX_BIN:
        raise EvidenceError(f"latency histogram bin {int(rows['bin'].max())} is above {MAX_BIN}")
    return rows


def bucket_array(buckets: Iterable[int] | Ints) -> Ints:
    """``buckets`` as an int64 array, each checked to be a cohort bucket (``0..BUCKETS-1``).

    >>> bucket_array([0, 3]).tolist()
    [0, 3]
    >>> bucket_array([BUCKETS])
    Traceback (most recent call last):
    ...
    model_canary.streams.errors.EvidenceError: buckets must be within 0..9999
    """
    b = np.asarray(list(buckets) if not isinstance(buckets, np.ndarray) else buckets)
    b = b.astype(np.int64, copy=False)
    if b.size and (b.min() < 0 or b.max() >= BUCKETS):
        raise EvidenceError(f"buckets must be within 0..{BUCKETS - 1}")
    return b


def pack_units(kind: str, buckets: Iterable[int] | Ints, **columns: Iterable[int] | Ints) -> bytes:
    """Per-item (or per-row) values summed per bucket and packed, one row per bucket touched.

    ``buckets`` and every column of ``kind`` (:data:`UNIT_COLUMNS`) are equally long; a
    column not given is zero.
    """
    dtype = _dtype(kind)
    unknown = set(columns) - set(UNIT_COLUMNS[kind])
    if unknown:
        raise EvidenceError(f"{kind} unit rows have no column(s) {sorted(unknown)}")
    b = bucket_array(buckets)
    touched = np.unique(b)
    out = np.zeros(touched.size, dtype=dtype)
    out["bucket"] = touched
    index = np.searchsorted(touched, b)
    for name in UNIT_COLUMNS[kind]:
        raw = columns.get(name)
        if raw is None:
            continue
        values = np.asarray(list(raw) if not isinstance(raw, np.ndarray) else raw, np.int64)
        if values.shape != b.shape:
            raise EvidenceError(f"column {name} has {values.size} values for {b.size} buckets")
        summed = np.bincount(index, weights=values, minlength=touched.size)
        out[name] = summed.astype(np.int64)
    return out.tobytes()


def pack_dense_units(kind: str, dense: Mapping[str, Ints]) -> bytes:
    """Dense per-bucket columns (``BUCKETS`` values each) packed as rows of the buckets where
    any column is non-zero."""
    dtype = _dtype(kind)
    cols = UNIT_COLUMNS[kind]
    touched = np.zeros(BUCKETS, dtype=bool)
    for name in cols:
        if name in dense:
            touched |= np.asarray(dense[name]) != 0
    idx = np.flatnonzero(touched)
    out = np.zeros(idx.size, dtype=dtype)
    out["bucket"] = idx
    for name in cols:
        if name in dense:
            out[name] = np.asarray(dense[name])[idx]
    return out.tobytes()


def unpack_units(kind: str, data: bytes) -> npt.NDArray[np.void]:
    """The rows of ``kind`` as a numpy structured array (``["bucket"]``, ``["n"]``...);
    :class:`ValueError` for malformed bytes or buckets out of range."""
    rows = _rows(data, _dtype(kind), f"{kind} unit rows")
    if rows.size and int(rows["bucket"].max()) >= BUCKETS:
        raise EvidenceError(f"unit bucket {int(rows['bucket'].max())} is above {BUCKETS - 1}")
    return rows


def _dtype(kind: str) -> np.dtype:
    try:
        return UNIT_DTYPES[kind]
    except KeyError:
        raise EvidenceError(f"unknown evidence kind {kind!r}") from None


def _rows(data: bytes, dtype: np.dtype, what: str) -> npt.NDArray[np.void]:
    if len(data) % dtype.itemsize:
        raise EvidenceError(f"{what}: {len(data)} bytes is not a whole number of rows")
    return np.frombuffer(data, dtype=dtype)


@dataclass
class BatchSums:
    """A served cell's micro-batch figures: batches with an item in it, their total and
    largest size, the batch-unit latency counts (batches with a timed item of the cell, and
    with one over the p95 / p99 threshold: all 0 when the cell carried none), and the second
    moments (m = a batch's items in the cell, e = its bad items in the cell).

    Version 2 added ``batches_timed`` and made ``batches_over_*`` the batch-unit counts."""

    version: int = 2
    batches: int = 0
    batch_items: int = 0
    max_batch: int = 0
    batches_timed: int = 0
    batches_over_p95: int = 0
    batches_over_p99: int = 0
    m2: int = 0
    e2_errors: int = 0
    em_errors: int = 0
    e2_over_p95: int = 0
    em_over_p95: int = 0
    e2_over_p99: int = 0
    em_over_p99: int = 0

    def merge(self, other: BatchSums) -> None:
        for f in fields(self):
            if f.name == "version":
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, max(mine, theirs) if f.name == "max_batch" else mine + theirs)
