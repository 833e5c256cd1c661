"""Giving the heap's free memory back to the system after a large transient allocation.

A long-running agent's live objects can stay flat while its resident memory creeps up: glibc's
allocator keeps the pages of freed chunks mapped, and the large short-lived buffers of a
checkpoint (a tally's arrays copied, joined, compressed; the producer's copies of the
records) land at new places in the fragmented arenas each time, so the high-water mark of
touched pages ratchets. ``malloc_trim(0)`` hands every whole free page of every arena back
(``madvise(MADV_DONTNEED)``), not only the top of the main heap: called after each
checkpoint, the evaluator's RSS falls back to what it holds instead of staying at the highest
it has been (issue #11). It costs about 0.6 ms of CPU on a 200 MB heap, once per checkpoint
(every 2 s at most); the CPU seconds spent are counted in
``canary_heap_trim_cpu_seconds_total``.

Other C libraries (musl, macOS) have no ``malloc_trim``: :func:`trim` does nothing there and
says so.

>>> trim() in (True, False)
True
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable

from model_canary.agents import metrics


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        # The symbols the process already has (its C library's among them): no lookup of a
        # library file, which would run ldconfig at import.
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_MALLOC_TRIM = _load_malloc_trim()


def trim() -> bool:
    """Give the free pages of every malloc arena back to the system; False where the C
    library cannot (nothing done). Call it from any thread, after a large transient
    allocation has been freed."""
    if _MALLOC_TRIM is None:
        return False
    began = time.thread_time()
    _MALLOC_TRIM(0)
    metrics.HEAP_TRIM_CPU_SECONDS.inc(time.thread_time() - began)
    return True
