"""Prometheus (Debian's ``prometheus`` package, installed by scripts/setup) scraping a running
router and worker with the project's scrape jobs and alert rules, and the alert rules' own
unit tests (``promtool test rules``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from model_canary.agents.client.control import ControlClient
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import ROOT, Agent, read_topic, send_requests
from tests.integration.test_metrics import _free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
DEPLOY = ROOT / "deploy" / "prometheus"
REQUESTS = 40

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMETHEUS is None or PROMTOOL is None,
        reason="the prometheus and promtool binaries are absent "
        "(scripts/setup installs Debian's prometheus package when run as root)",
    ),
]


def promtool(*args: str, cwd: Path = DEPLOY) -> str:
    done = subprocess.run(
        [str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def local_config(targets: dict[str, int]) -> dict[str, Any]:
    """The project's prometheus.yml with each job scraping a local port, quickly."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(targets) <= set(jobs), f"no such jobs in prometheus.yml: {set(targets) - set(jobs)}"
    for name, port in targets.items():
        jobs[name]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    config["scrape_configs"] = [jobs[name] for name in targets]
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / rule) for rule in config["rule_files"]]
    return config


class PrometheusApi:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def value(self, query: str) -> float | None:
        result = self.get("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.5)
        raise AssertionError(f"Prometheus: {what} not seen within {timeout:g}s")


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], PrometheusApi]]:
    """Factory: check a config with promtool, then run Prometheus on it on a free port."""
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "prometheus.log"

    def start(config: dict[str, Any]) -> PrometheusApi:
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        promtool("check", "config", str(path))
        port = _free_port()
        with log.open("ab") as out:
            procs.append(
                subprocess.Popen(
                    [
                        str(PROMETHEUS),
                        f"--config.file={path}",
                        f"--storage.tsdb.path={tmp_path / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        return PrometheusApi(port)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if log.exists():
        print("----- prometheus -----")
        print(log.read_text(errors="replace")[-4000:])


def test_alert_rules_pass_promtool_checks_and_unit_tests() -> None:
    assert "SUCCESS: 8 rules found" in promtool("check", "rules", "alerts.yml")
    promtool("check", "config", "prometheus.yml")
    promtool("test", "rules", "alerts.test.yml")


def test_prometheus_scrapes_the_agents_and_evaluates_the_alerts(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
    make_producer: Callable[..., Producer],
    prometheus: Callable[[dict[str, Any]], PrometheusApi],
) -> None:
    router_port, worker_port = _free_port(), _free_port()
    router = spawn("router", "--instance", "r1", "--metrics-port", str(router_port))
    start_worker("v1", "--metrics-port", str(worker_port))
    api = prometheus(local_config({"canary-router": router_port, "canary-worker": worker_port}))

    router.ready()
    ControlClient(settings).send("iris", "register", baseline_version="v1")
    send_requests(settings, "iris", [f"u{i}" for i in range(REQUESTS)])
    assert len(read_topic(settings, topics.results, REQUESTS, settle=0)) == REQUESTS
    # A message without a value: the router dead-letters it, and the alert must fire.
    producer = make_producer()
    producer.produce(topics.requests, value=b"", key=b"broken")
    producer.flush(10)

    def targets_up() -> bool:
        active = api.get("targets")["activeTargets"]
        return len(active) == 2 and all(t["health"] == "up" for t in active)

    api.wait("both targets up", targets_up)
    routed = 'sum(canary_routed_requests_total{job="canary-router", model="iris"})'
    api.wait(f"{routed} == {REQUESTS}", lambda: api.value(routed) == REQUESTS)
    answered = 'sum(canary_inferences_total{job="canary-worker", outcome="ok", version="v1"})'
    api.wait(f"{answered} == {REQUESTS}", lambda: api.value(answered) == REQUESTS)

    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    expected = {r["alert"] for g in rules["groups"] for r in g["rules"]}

    def rules_evaluated() -> bool:
        loaded = [r for g in api.get("rules")["groups"] for r in g["rules"]]
        names = {r["name"] for r in loaded}
        return names == expected and all(r["health"] == "ok" for r in loaded)

    api.wait("every alert rule loaded and evaluated without error", rules_evaluated)

    def firing() -> set[tuple[str, str]]:
        alerts = api.get("alerts")["alerts"]
        return {
            (a["labels"]["alertname"], a["labels"].get("reason", ""))
            for a in alerts
            if a["state"] == "firing"
        }

    api.wait("DeadLettersRising firing", lambda: ("DeadLettersRising", "empty") in firing())
    assert {name for name, _ in firing()} == {"DeadLettersRising"}, "nothing else is wrong"
