"""Which partition a keyed message lands on: Kafka's murmur2 partitioner, as the Java clients
and librdkafka's ``murmur2_random`` partitioner (every producer here) compute it.

Results are keyed by request id, so a client knows before it sends a request which partition
of the results topic its answer will be written to, and can read only that one.

>>> murmur2(b"21"), murmur2(b"foobar"), murmur2(b"abc")
(-973932308, -790332482, 479470107)
>>> partition_of(b"foobar", 3)
0
"""

from __future__ import annotations

import struct

from model_canary.streams.errors import ConfigError

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 hash of ``data`` (``org.apache.kafka.common.utils.Utils.murmur2``),
    as a signed 32-bit integer like Java's.

    >>> murmur2(b"a-little-bit-long-string"), murmur2(b"")
    (-985981536, 275646681)
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length // 4
    for (k,) in struct.iter_unpack("<I", data[: whole * 4]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[whole * 4 :]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of ``partitions`` a message keyed ``key`` is written to (murmur2 of the
    key, made positive, modulo the partition count).

    >>> [partition_of(k, 6) for k in (b"r1", b"r2", b"r3")] == [
    ...     (murmur2(k) & 0x7FFFFFFF) % 6 for k in (b"r1", b"r2", b"r3")]
    True
    """
    if partitions < 1:
        raise ConfigError(f"a topic has at least one partition, not {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions
