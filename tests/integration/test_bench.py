"""Smoke runs of ``canary bench router | worker | evaluator`` on a real broker: the JSON line
has every key with sane values and nothing is lost. Nothing here asserts a speed."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from model_canary.agents.bench.latency_bench import SEGMENTS
from model_canary.agents.cli import bench_cmd
from model_canary.agents.cli.common import add_connection_options
from model_canary.agents.kafka.admin import Admin
from model_canary.streams.settings import Settings

pytestmark = pytest.mark.integration

ROUTER_KEYS = {
    "router_msgs_per_s",
    "passthrough_msgs_per_s",
    "ratio",
    "router_added_latency_p50_ms",
    "router_added_latency_p99_ms",
    "router_rss_mb",
    "router_rss_start_mb",
    "router_rss_end_mb",
    "router_cpu_us_per_msg",
    "passthrough_cpu_us_per_msg",
    "cpu_ratio",
    "requests",
    "lost",
    "duplicated",
}
WORKER_KEYS = {
    "worker_msgs_per_s",
    "passthrough_msgs_per_s",
    "ratio",
    "worker_rss_mb",
    "worker_cpu_us_per_msg",
    "passthrough_cpu_us_per_msg",
    "cpu_ratio",
    "requests",
    "lost",
    "duplicated",
}


def _bench(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    unique: str,
    keys: set[str],
    *args: str,
) -> dict[str, object]:
    """Run ``canary bench ARGS`` in-process under a prefix of its own; returns the JSON of
    stdout's last line once it has every one of ``keys`` and the run's topics are deleted."""
    prefix = f"b{unique}"
    common = argparse.ArgumentParser(add_help=False)
    add_connection_options(common)
    parser = argparse.ArgumentParser(prog="canary")
    bench_cmd.register(parser.add_subparsers(dest="command", required=True), common)
    parsed = parser.parse_args(
        ["bench", *args, "--bootstrap", settings.bootstrap_servers, "--topic-prefix", prefix]
    )
    assert parsed.handler(parsed) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures: dict[str, object] = json.loads(lines[-1])
    assert figures.keys() >= keys, keys - figures.keys()
    left = [n for n in Admin(settings).list_topics() if n.startswith(prefix + "-")]
    assert left == [], f"benchmark topics not deleted: {left}"
    return figures


def _positive(figures: dict[str, object], *keys: str) -> None:
    for key in keys:
        value = figures[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value)


def test_bench_router_smoke(
    capsys: pytest.CaptureFixture[str], broker_settings: Settings, unique: str
) -> None:
    figures = _bench(
        capsys,
        broker_settings,
        unique,
        ROUTER_KEYS,
        "router",
        "--requests",
        "3000",
        "--latency-rate",
        "200",
        "--latency-seconds",
        "1",
        "--rounds",
        "1",
        "--shaped-reference",
        "--split-reference",
    )
    _positive(
        figures,
        "router_msgs_per_s",
        "passthrough_msgs_per_s",
        "ratio",
        "router_rss_mb",
        "router_rss_start_mb",
        "router_rss_end_mb",
        "shaped_msgs_per_s",
        "shaped_ratio",
        "shaped_vs_passthrough",
    )
    # The shaped reference wrote every drained request once, split over its two topics.
    assert figures["shaped_lost"] == 0 and figures["shaped_duplicated"] == 0
    # So did the split reference; one round gives no interval, hence no verdict on the target.
    assert figures["split_lost"] == 0 and figures["split_duplicated"] == 0
    assert figures["split_vs_passthrough_rounds"] == [figures["split_vs_passthrough"]]
    assert figures["ratio_target_vs_split"] == "-"
    shaped_threads = figures["shaped_thread_cpu_us_per_msg"]
    assert isinstance(shaped_threads, dict) and "main" in shaped_threads
    # CPU time is counted in ticks of 10 ms: a drain of 3,000 requests may take none, and
    # is then reported as not measured (None), never as free.
    for key in ("router_cpu_us_per_msg", "passthrough_cpu_us_per_msg"):
        value = figures[key]
        assert value is None or (isinstance(value, int | float) and value > 0), (key, value)
    for key in ("router_thread_cpu_us_per_msg", "passthrough_thread_cpu_us_per_msg"):
        threads = figures[key]
        assert isinstance(threads, dict) and "main" in threads, key
        assert any(name.startswith("rdk:") for name in threads), key
        assert all(math.isfinite(v) and v >= 0 for v in threads.values()), key
    for key in ("router_added_latency_p50_ms", "router_added_latency_p99_ms"):
        value = figures[key]
        assert isinstance(value, int | float) and math.isfinite(value), key
    assert figures["requests"] == 3000
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["dead_letters"] == 0
    assert figures["latency_samples"] == 200
    assert figures["router_rss_mb"] >= figures["router_rss_start_mb"]  # type: ignore[operator]


def test_bench_worker_smoke(
    capsys: pytest.CaptureFixture[str], broker_settings: Settings, unique: str
) -> None:
    figures = _bench(
        capsys, broker_settings, unique, WORKER_KEYS, "worker", "--requests", "10000", "--json-only"
    )
    _positive(figures, "worker_msgs_per_s", "passthrough_msgs_per_s", "ratio", "worker_rss_mb")
    _positive(figures, "worker_cpu_us_per_msg")
    # The passthrough drains 10,000 requests in a few clock ticks of CPU (10 ms each): one
    # that took none is reported as not measured (None), never as free.
    for key in ("passthrough_cpu_us_per_msg", "cpu_ratio"):
        value = figures[key]
        assert value is None or (isinstance(value, int | float) and value > 0), (key, value)
    assert figures["requests"] == 10000
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["passthrough_lost"] == 0 and figures["passthrough_duplicated"] == 0
    assert figures["evidence_exact"] is True, "the served evidence counts every request once"


EVALUATOR_KEYS = {
    "evaluator_requests_per_s",
    "evaluator_cpu_ms_per_record",
    "decision_delay_p50_ms",
    "decision_delay_p99_ms",
    "evaluator_rss_start_mb",
    "evaluator_rss_end_mb",
}


def test_bench_evaluator_smoke(
    capsys: pytest.CaptureFixture[str], broker_settings: Settings, unique: str
) -> None:
    """With labels and ``--rss-labelled`` at small marks: the RSS of the evaluator and the
    joiner at the start and at each mark, and the flatness summary (its figures are not
    judged here)."""
    figures = _bench(
        capsys,
        broker_settings,
        unique,
        EVALUATOR_KEYS | {"rss_by_labelled_mb", "rss_flat_met", "rss_mb_per_million_labelled"},
        "evaluator",
        # A backlog the evaluator drains over several of the bench's 100 ms progress checks
        # (10 s of it, 20,000 requests, once drained between two: no rate to report).
        *("--rate", "2000", "--seconds", "3", "--backlog-seconds", "60"),
        *("--labels", "--label-backlog", "20000"),
        *("--rss-labelled", "3000", "--rss-every", "1000", "--json-only"),
    )
    assert figures["backlog_requests"] == 120_000
    for key in EVALUATOR_KEYS:
        value = figures[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, key
    assert figures["delay_samples"] == 30, "every paced transaction was counted by a decision"
    _positive(figures, "labels_per_s")
    marks = figures["rss_by_labelled_mb"]
    assert isinstance(marks, dict) and list(marks) == ["0", "1000", "2000", "3000"]
    for mark, taken in marks.items():
        assert set(taken) == {
            "evaluator",
            "joiners",
            "pending",
            "evaluator_low_high",
            "evaluator_window_low_high",
            "joiners_window_low_high",
        }, mark
        assert taken["pending"] >= 0, mark
        low, high = taken["evaluator_low_high"]
        assert 0 < low <= high, mark
        low, high = taken["evaluator_window_low_high"]
        assert 0 < low <= high, mark
        assert len(taken["joiners_window_low_high"]) == 1, mark
        assert taken["evaluator"] > 0 and len(taken["joiners"]) == 1, mark
        assert all(mb > 0 for mb in taken["joiners"]), mark
    assert figures["rss_every"] == 1000
    _positive(figures, "evaluator_rss_growth_from_1m", "joiner_rss_growth_from_1m")
    assert isinstance(figures["rss_flat_met"], bool)
    assert figures["rss_flat_on"] == "window"
    _positive(figures, "evaluator_rss_low_growth_from_1m", "evaluator_rss_high_growth_from_1m")
    assert figures["restart_counts_equal"] is True


LATENCY_KEYS = {
    "e2e_p50_ms",
    "e2e_p99_ms",
    "client_p50_ms",
    "client_p99_ms",
    "requests_per_s",
    "hops_p50_ms",
    "hops_p99_ms",
    "txn_floor_p50_ms",
    "bare_hop_p50_ms",
    "bare_hop_p99_ms",
    "bare_hop_lost",
    "requests",
    "lost",
}


def test_bench_latency_smoke(
    capsys: pytest.CaptureFixture[str], broker_settings: Settings, unique: str
) -> None:
    figures = _bench(
        capsys,
        broker_settings,
        unique,
        LATENCY_KEYS | {"modes", "duplicated"},
        "latency",
        *("--rate", "100", "--seconds", "2", "--rounds", "1", "--drain", "500"),
        *("--mode", "balanced", "--mode", "at-least-once", "--json-only"),
    )
    modes = figures["modes"]
    assert isinstance(modes, dict) and set(modes) == {"balanced", "at-least-once"}
    for mode, each in modes.items():
        assert each.keys() >= LATENCY_KEYS - {"txn_floor_p50_ms"}, mode
        _positive(
            each, "e2e_p50_ms", "e2e_p99_ms", "client_p50_ms", "requests_per_s", "bare_hop_p99_ms"
        )
        assert each["bare_hop_p99_ms"] >= each["bare_hop_p50_ms"]
        assert each["e2e_p99_ms"] >= each["e2e_p50_ms"]
        assert set(each["hops_p50_ms"]) == {
            "router_queue",
            "router_commit",
            "worker_queue",
            "model",
            "worker_commit",
            "result_fetch",
        }
        assert each["requests"] == 200 + 500 and each["lost"] == 0, mode
        assert each["bare_hop_lost"] == 0, mode
        assert each["client_repeats"] == 0
        # The same-run reference for the target: two plain relays in series, with 95%
        # intervals for its p99 and the e2e p99, and where the target lies against it.
        _positive(each, "bare_chain_p50_ms", "bare_chain_p99_ms")
        assert each["bare_chain_p99_ms"] >= each["bare_chain_p50_ms"]
        assert each["bare_chain_lost"] == 0, mode
        for key in ("e2e_p99_ms_ci95", "bare_chain_p99_ms_ci95"):
            low, high = each[key]
            assert 0 < low <= high, (mode, key)
        assert each["e2e_p99_target_ms"] == (20.0 if mode == "at-least-once" else 100.0)
        assert each["e2e_p99_target_vs_bare_chain"] in {"below", "within", "above"}
        # The split at the broker's append times (the benchmark's topics keep LogAppendTime):
        # every request seen everywhere has it.
        for key in ("segments_p50_ms", "segments_p99_ms", "slowest_segments_ms"):
            assert set(each[key]) == set(SEGMENTS), key
            assert all(math.isfinite(v) for v in each[key].values()), (mode, key)
    assert modes["balanced"]["duplicated"] == 0
    # Exactly-once's floor in the same run: two minimal transactional relays in series, with
    # intervals for its p50 and p99 and where the targets lie against them (exactly-once
    # modes only).
    eos = modes["balanced"]
    _positive(
        eos,
        "bare_eos_chain_p50_ms",
        "bare_eos_chain_p99_ms",
        "bare_eos_chain_commit_ms_mean",
        "bare_eos_chain_offsets_ms",
        "bare_eos_chain_flush_ms",
        "bare_eos_chain_end_ms",
        "bare_eos_chain_messages_per_txn",
    )
    assert eos["bare_eos_chain_p99_ms"] >= eos["bare_eos_chain_p50_ms"]
    assert eos["bare_eos_chain_lost"] == 0
    for key in ("e2e_p50_ms_ci95", "bare_eos_chain_p50_ms_ci95", "bare_eos_chain_p99_ms_ci95"):
        low, high = eos[key]
        assert 0 < low <= high, key
    assert eos["e2e_p50_target_ms"] == 30.0
    for key in ("e2e_p50_target_vs_bare_eos_chain", "e2e_p99_target_vs_bare_eos_chain"):
        assert eos[key] in {"below", "within", "above"}, key
    assert not any(k.startswith("bare_eos_chain") for k in modes["at-least-once"])
    # Where an exactly-once agent's time goes: its commits, the parts spent adding offsets and
    # flushing, and the share of the phase it spent committing.
    for agent in ("router", "worker"):
        _positive(
            modes["balanced"],
            f"{agent}_commit_ms",
            f"{agent}_offsets_ms",
            f"{agent}_flush_ms",
            f"{agent}_commit_share",
        )
    assert modes["at-least-once"]["repeats"] == 0  # nothing failed, so nothing repeated
