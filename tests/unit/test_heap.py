"""heap.trim gives freed heap pages back to the system (issue 11: the evaluator's RSS ratcheted
after each checkpoint while its state stayed flat), and does nothing where it cannot."""

from __future__ import annotations

import platform

import pytest

from model_canary.agents import heap, metrics

GLIBC = platform.libc_ver()[0] == "glibc"
CHUNK = 4096  # below the mmap threshold: from the arena, as a checkpoint's buffers are
CHUNKS = 10_000  # 40 MB


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_trim_returns_freed_pages_below_a_live_allocation() -> None:
    # 40 MB of buffers, then a small one above them that stays: freeing the buffers leaves
    # a hole below the top of the heap, which free() alone keeps resident.
    buffers = [bytearray(CHUNK) for _ in range(CHUNKS)]
    for b in buffers:
        b[::1024] = b"\x01" * len(b[::1024])  # touch every page
    guard = bytearray(CHUNK)
    del buffers
    before = _rss_bytes()
    spent = metrics.HEAP_TRIM_CPU_SECONDS._value.get()
    assert heap.trim()
    assert before - _rss_bytes() >= CHUNK * CHUNKS // 2
    assert metrics.HEAP_TRIM_CPU_SECONDS._value.get() > spent
    assert len(guard) == CHUNK


def test_trim_does_nothing_without_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_MALLOC_TRIM", None)
    spent = metrics.HEAP_TRIM_CPU_SECONDS._value.get()
    assert not heap.trim()
    assert metrics.HEAP_TRIM_CPU_SECONDS._value.get() == spent
