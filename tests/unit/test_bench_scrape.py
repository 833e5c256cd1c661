"""The benchmarks' scrape: all samples, or only those named (the exporter's filter)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from model_canary.agents.bench.scrape import free_port, scrape, total


def test_scrape_all_or_only_the_named_samples() -> None:
    registry = CollectorRegistry()
    Counter("canary_x_things", "x", ["arm"], registry=registry).labels("a").inc(3)
    Gauge("canary_y", "y", registry=registry).set(7)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        everything = scrape(port)
        assert everything is not None
        assert total(everything, "canary_x_things_total") == 3.0
        assert total(everything, "canary_y") == 7.0
        only = scrape(port, names=["canary_y"])
        assert only == {"canary_y": 7.0}
    finally:
        server.shutdown()
        thread.join(5)


def test_scrape_of_nothing_is_none() -> None:
    assert scrape(free_port(), timeout=0.5) is None
