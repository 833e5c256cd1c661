"""Typed state to bytes and back: dataclasses of ints, floats, strings, bools, ``None``,
lists, tuples, sets, dicts (any hashable keys of those kinds) and numpy arrays, written as a
JSON document plus one binary blob, zlib-compressed.

Arrays are stored raw (little-endian, with dtype and shape), so restoring is a ``frombuffer``
per array; zeros compress to almost nothing. An integer array is stored in the narrowest of
``uint8``, ``uint16``, ``uint32`` and ``int32`` that holds its values and read back in its own
dtype: the evaluator's counts are small, so its checkpoints are half the bytes, compressed in
half the time (format :data:`MAGIC` ``CSN2``; ``CSN1`` snapshots, arrays stored as they are,
still read; evaluators older than ``CSN2`` refuse it). Only the dataclasses named in ``types`` are
rebuilt, so a snapshot cannot make the reader build arbitrary objects.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Row:
...     version: int = 1
...     counts: dict[tuple[int, str], int] = field(default_factory=dict)
>>> data = dump(Row(counts={(100, "canary"): 3}))
>>> load(data, [Row])
Row(version=1, counts={(100, 'canary'): 3})
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from model_canary.streams.errors import EvidenceError

MAGIC = b"CSN2"
#: Snapshots this code reads: arrays as stored (1) or narrowed (2).
_MAGICS = frozenset({b"CSN1", MAGIC})
_DTYPES = frozenset({"<i8", "<f8", "<u2", "<u4", "<i4", "|b1", "|u1"})
#: The dtypes an integer array may be stored in, narrowest first (all in :data:`_DTYPES`).
_NARROW = (
    (np.dtype("|u1"), 0, 2**8 - 1),
    (np.dtype("<u2"), 0, 2**16 - 1),
    (np.dtype("<u4"), 0, 2**32 - 1),
    (np.dtype("<i4"), -(2**31), 2**31 - 1),
)


class SnapshotError(EvidenceError):
    """Bytes that are not a snapshot this code can read (or a value that cannot be one)."""


def dump(obj: Any) -> bytes:
    """``obj`` as compressed bytes (see the module docstring)."""
    writer = _Writer()
    doc = json.dumps(writer.enc(obj), separators=(",", ":"), allow_nan=True).encode()
    body = struct.pack("<I", len(doc)) + doc + b"".join(writer.parts)
    return MAGIC + zlib.compress(body, 1)


class _Writer:
    """One :func:`dump`: the JSON tree of a value and the raw parts its references point into.

    A class, not nested functions: a recursive closure refers to itself through its cell,
    and that reference cycle kept every part (the whole state's raw bytes) alive after
    :func:`dump` returned, until the cycle collector next ran (in the evaluator, checkpoints
    every 2 s piled 30-40 MB up between two collections; issue #11)."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def put(self, raw: bytes) -> list[int]:
        ref = [self.size, len(raw)]
        self.parts.append(raw)
        self.size += len(raw)
        return ref

    def enc(self, v: Any) -> Any:
        if v is None or isinstance(v, bool | int | float | str):
            return v
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.floating):
            return float(v)
        if isinstance(v, np.ndarray):
            arr = np.ascontiguousarray(v)
            dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
            stored = _narrowest(arr, dtype)
            ref = [dtype.str, list(arr.shape), *self.put(arr.astype(stored).tobytes())]
            return {"a": ref if stored == dtype else [*ref, stored.str]}
        if isinstance(v, bytes):
            return {"b": self.put(v)}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            fields = {f.name: self.enc(getattr(v, f.name)) for f in dataclasses.fields(v)}
            return {"d": type(v).__name__, "f": fields}
        if isinstance(v, dict):
            # Sorted: equal states give equal bytes, whatever order their keys arrived in.
            items = sorted(v.items(), key=lambda kv: repr(kv[0]))
            return {"m": [[self.enc(k), self.enc(x)] for k, x in items]}
        if isinstance(v, tuple):
            return {"t": [self.enc(x) for x in v]}
        if isinstance(v, set | frozenset):
            return {"s": [self.enc(x) for x in sorted(v, key=repr)]}
        if isinstance(v, list):
            return [self.enc(x) for x in v]
        raise SnapshotError(f"cannot snapshot a {type(v).__name__}")


def load(data: bytes, types: Iterable[type]) -> Any:
    """The object :func:`dump` wrote, rebuilding only dataclasses of ``types``;
    :class:`SnapshotError` for anything else."""
    known = {t.__name__: t for t in types}
    if data[:4] not in _MAGICS:
        raise SnapshotError("not a snapshot (bad magic)")
    try:
        body = zlib.decompress(data[4:])
        (size,) = struct.unpack_from("<I", body)
        doc = json.loads(body[4 : 4 + size])
    except (zlib.error, struct.error, ValueError) as exc:
        raise SnapshotError(f"corrupt snapshot: {exc}") from None
    return _Reader(memoryview(body)[4 + size :], known).dec(doc)


class _Reader:
    """One :func:`load`: rebuilds the JSON tree, reading arrays and bytes from the blob (a
    class for the reason :class:`_Writer` is one: a recursive closure would keep the whole
    decompressed snapshot alive until the cycle collector ran)."""

    __slots__ = ("blob", "known")

    def __init__(self, blob: memoryview, known: dict[str, type]) -> None:
        self.blob = blob
        self.known = known

    def raw(self, ref: list[int]) -> bytes:
        start, n = int(ref[0]), int(ref[1])
        if start < 0 or n < 0 or start + n > len(self.blob):
            raise SnapshotError("snapshot blob reference out of range")
        return bytes(self.blob[start : start + n])

    def dec(self, v: Any) -> Any:
        if v is None or isinstance(v, bool | int | float | str):
            return v
        if isinstance(v, list):
            return [self.dec(x) for x in v]
        if not isinstance(v, dict) or len(v) not in (1, 2):
            raise SnapshotError(f"unexpected snapshot node {str(v)[:60]}")
        if "a" in v:
            dtype, shape, *ref = v["a"]
            stored = ref.pop() if len(ref) == 3 else dtype  # narrowed: the dtype stored in
            if dtype not in _DTYPES or stored not in _DTYPES:
                raise SnapshotError(f"array dtype {dtype} ({stored}) not allowed")
            arr = np.frombuffer(self.raw(ref), dtype=np.dtype(stored))
            try:
                return arr.reshape(shape).astype(np.dtype(dtype))  # a copy, writable
            except ValueError as exc:
                raise SnapshotError(f"array shape: {exc}") from None
        if "b" in v:
            return self.raw(v["b"])
        if "d" in v:
            cls = self.known.get(v["d"])
            if cls is None:
                raise SnapshotError(f"unknown type {v['d']!r} in snapshot")
            try:
                return cls(**{k: self.dec(x) for k, x in v["f"].items()})
            except TypeError as exc:
                raise SnapshotError(f"{v['d']}: {exc}") from None
        if "m" in v:
            return {self.dec(k): self.dec(x) for k, x in v["m"]}
        if "t" in v:
            return tuple(self.dec(x) for x in v["t"])
        if "s" in v:
            return {self.dec(x) for x in v["s"]}
        raise SnapshotError(f"unexpected snapshot node {str(v)[:60]}")


def _narrowest(arr: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The narrowest dtype of :data:`_NARROW` that holds integer ``arr``'s values and is
    narrower than ``dtype``; ``dtype`` itself for anything else."""
    if dtype.kind not in "iu" or arr.size == 0:
        return dtype
    lo, hi = int(arr.min()), int(arr.max())
    for narrow, least, most in _NARROW:
        if narrow.itemsize >= dtype.itemsize:
            break
        if least <= lo and hi <= most:
            return narrow
    return dtype
