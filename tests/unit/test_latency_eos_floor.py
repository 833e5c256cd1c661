"""``canary bench latency``'s exactly-once floor: the bare EOS chain's figures and where the
targets lie against it (pure parts; the relays themselves run in the latency smoke test)."""

from __future__ import annotations

import json
import math

from model_canary.agents.bench.hop_floor import HopFloor
from model_canary.agents.bench.latency_bench import (
    AT_LEAST_ONCE,
    _against_target,
    _eos_chain_figures,
    _Run,
    _Times,
)
from model_canary.agents.bench.relay import PHASES_TAG, Phases, phases_of
from model_canary.streams.percentiles import target_vs_interval


def _run(mode: str, e2e_ms: list[float], eos_ms: list[float] | None) -> _Run:
    run = _Run(mode)
    for i, ms in enumerate(e2e_ms):
        run.times[f"r{i}"] = _Times(sent_ns=i * 1_000_000, answer_ns=i * 1_000_000 + int(ms * 1e6))
    run.chain = HopFloor(ms=[5.0] * len(e2e_ms), lost=0)
    if eos_ms is not None:
        run.eos_chain = HopFloor(ms=eos_ms, lost=0)
    return run


def test_targets_below_the_eos_floor_are_said_to_be_below() -> None:
    # Every minimal transactional relay's sample is 40-60 ms: a p50 of 30 and a p99 of 100
    # lie below and above its intervals.
    eos = [40.0 + (i % 21) for i in range(2_000)]
    out = _against_target([_run("balanced", [45.0] * 2_000, eos)])
    assert out["e2e_p50_target_ms"] == 30.0
    assert out["e2e_p50_target_vs_bare_eos_chain"] == "below"
    assert out["e2e_p99_target_vs_bare_eos_chain"] == "above"
    interval = out["bare_eos_chain_p50_ms_ci95"]
    assert isinstance(interval, list)
    assert 40.0 <= interval[0] <= 50.0 <= interval[1] <= 60.0


def test_at_least_once_has_no_eos_floor() -> None:
    run = _run(AT_LEAST_ONCE, [5.0] * 100, None)
    assert _eos_chain_figures(run) == {}
    assert not any("eos" in key for key in _against_target([run]))


def test_the_relays_phases_are_averaged_over_the_two_relays() -> None:
    run = _run("balanced", [45.0] * 10, [40.0] * 10)
    first, second = Phases(), Phases()
    first.add({"produce": 0.1, "offsets": 6.0, "flush": 3.0, "end": 1.0}, 10)
    second.add({"produce": 0.1, "offsets": 4.0, "flush": 1.0, "end": 1.0}, 20)
    # What the bench reads back from each relay's log.
    logs = [f"started\n{PHASES_TAG}{_json(p)}\n" for p in (first, second)]
    run.eos_phases = [found for log in logs if (found := phases_of(log)) is not None]
    figures = _eos_chain_figures(run)
    assert figures["bare_eos_chain_commit_ms_mean"] == 8.0  # (10 + 6) / 2
    assert figures["bare_eos_chain_offsets_ms"] == 5.0
    assert figures["bare_eos_chain_messages_per_txn"] == 15.0
    assert math.isnan(float(figures["bare_eos_chain_commit_share"]))  # type: ignore[arg-type]


def test_a_target_against_an_interval() -> None:
    assert target_vs_interval(30.0, (31.0, 40.0)) == "below"
    assert target_vs_interval(30.0, (20.0, 30.0)) == "within"
    assert target_vs_interval(30.0, (20.0, 29.0)) == "above"


def _json(phases: Phases) -> str:
    return json.dumps(phases.summary())
