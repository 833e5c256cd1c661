"""``canary bench latency``'s split of a request's time at the broker's append times."""

from __future__ import annotations

import math

from model_canary.agents.bench.latency_bench import SEGMENTS, _segments, _slowest_segments, _Times


def _request(sent_ms: float, stall_ms: float = 0.0) -> _Times:
    """A request sent at ``sent_ms`` whose router waited ``stall_ms`` more than usual."""
    return _Times(
        sent_ns=int(sent_ms * 1e6),
        request_append_ms=int(sent_ms) + 2,
        routed_at_ms=int(sent_ms) + 3 + int(stall_ms),
        routed_append_ms=int(sent_ms) + 5 + int(stall_ms),
        created_ms=sent_ms + 7.5 + stall_ms,
        model_ms=0.5,
        answer_append_ms=int(sent_ms) + 10 + int(stall_ms),
        answer_ns=int((sent_ms + 12 + stall_ms) * 1e6),
        routed_ns=int((sent_ms + 6 + stall_ms) * 1e6),
        client_ns=int((sent_ms + 12.5 + stall_ms) * 1e6),
    )


def test_segments_and_the_model_add_up_to_the_e2e() -> None:
    t = _request(1_000.0)
    seg = _segments(t)
    assert seg is not None and set(seg) == set(SEGMENTS)
    assert t.answer_ns is not None and t.model_ms is not None
    e2e = (t.answer_ns - t.sent_ns) / 1e6
    assert math.isclose(sum(seg.values()) + t.model_ms, e2e)
    assert seg["router_wait"] == 1 and seg["worker_wait"] == 2 and seg["read"] == 2


def test_a_request_not_seen_everywhere_has_no_segments() -> None:
    t = _request(1_000.0)
    t.routed_append_ms = None  # its topic did not keep the append time
    assert _segments(t) is None


def test_the_slowest_requests_show_where_their_time_went() -> None:
    times = [_request(float(i)) for i in range(990)]
    times += [_request(2_000.0 + i, stall_ms=100.0) for i in range(10)]
    slow = _slowest_segments(times)
    assert slow["router_wait"] > 100 and slow["worker_wait"] == 2
