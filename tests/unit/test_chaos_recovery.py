"""Recovery time of a fault, from send and answer times."""

from __future__ import annotations

from model_canary.agents.chaos.recovery import recovery_seconds


def _steady(start: float, n: int, latency: float) -> tuple[dict[str, float], dict[str, float]]:
    sent = {f"r{start + i}": start + i * 0.1 for i in range(n)}
    return sent, {rid: t + latency for rid, t in sent.items()}


def test_no_late_request_means_no_recovery_time() -> None:
    sent, served = _steady(0, 100, 0.05)
    assert recovery_seconds(sent, served, fault_at=5.0) == 0.0


def test_recovery_ends_when_the_last_delayed_request_is_answered() -> None:
    sent, served = _steady(0, 100, 0.05)  # sent at 0.0 .. 9.9
    for i in range(50, 70):  # sent at 5.0 .. 6.9, all answered at 12.0
        served[f"r{i}"] = 12.0
    assert recovery_seconds(sent, served, fault_at=5.0) == 7.0


def test_requests_in_flight_at_the_fault_count_too() -> None:
    sent, served = _steady(0, 100, 0.05)
    served["r49"] = 9.0  # sent at 4.9, before the fault at 5.0
    assert recovery_seconds(sent, served, fault_at=5.0) == 4.0


def test_an_unanswered_request_means_not_recovered() -> None:
    sent, served = _steady(0, 100, 0.05)
    del served["r80"]
    assert recovery_seconds(sent, served, fault_at=5.0) is None


def test_slow_steady_latency_raises_the_bar_for_late() -> None:
    sent, served = _steady(0, 100, 2.0)  # 2 s is the steady state: not late
    assert recovery_seconds(sent, served, fault_at=5.0) == 0.0
    served["r60"] = sent["r60"] + 7.0  # over three times the steady median
    assert recovery_seconds(sent, served, fault_at=5.0) == round(sent["r60"] + 7.0 - 5.0, 2)


def test_a_slow_tail_before_the_fault_does_not_hide_it() -> None:
    sent, served = _steady(0, 100, 0.05)
    for i in (0, 10):  # a few requests answered before the fault took 3 s
        served[f"r{i}"] = sent[f"r{i}"] + 3.0
    served["r60"] = sent["r60"] + 2.0  # the fault: late by the median, not by the tail
    assert recovery_seconds(sent, served, fault_at=5.0) == round(sent["r60"] + 2.0 - 5.0, 2)
