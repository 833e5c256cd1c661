"""Pre-flight replays on a real broker with real workers: a candidate failing 5% of requests is
stopped (exit 1, with the evidence), an identical one passes (exit 0), no replayed answer
reaches the results topic, and live traffic is answered while a replay runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from model_canary.agents.client.control import ControlClient
from model_canary.agents.preflight import store
from model_canary.streams import headers as h
from model_canary.streams.codec.results import decode_result
from model_canary.streams.enums import PreflightStatus
from model_canary.streams.messages import epoch_ms
from model_canary.streams.plan import RolloutPlan
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, answers, header, read_topic, send_requests

pytestmark = pytest.mark.integration

#: Per-request latencies (the injector's lognormal, independent per item) on every version.
LATENCY = ("--inject-latency", "lognormal:4,0.4")


def canary_args(settings: Settings, *args: str) -> list[str]:
    conn = ["--bootstrap", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix]
    return [sys.executable, "-m", "model_canary.agents.cli.main", *args, *conn]


def test_preflight_stops_a_failing_candidate_and_passes_an_identical_one(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
    tmp_path: Path,
) -> None:
    spawn("router", "--instance", "r1").ready()
    ControlClient(settings).send("iris", "register", baseline_version="v1")
    start_worker("v1", *LATENCY, "--seed", "1")
    start_worker("v2", *LATENCY, "--seed", "2")  # the same model: an identical candidate
    start_worker("v3", *LATENCY, "--seed", "3", "--inject-error-rate", "0.05")
    keys = [f"user-{i % 400}" for i in range(2000)]
    recorded = send_requests(settings, "iris", keys, prefix="rec")
    assert set(answers(settings, topics.results, recorded).values()) == {1}
    plan = tmp_path / "plan.yaml"
    plan.write_text("model: iris\ncanary: v2\nalpha: 0.01\n")
    common = ["--since", "30m", "--min-requests", "1000", "--plan", str(plan), "--json"]

    # A candidate failing 5% of requests: stopped before any user sees it.
    bad = subprocess.run(
        canary_args(settings, "preflight", "--model", "iris", "--candidate", "v3",
                    "--rate", "0", "--report", str(tmp_path / "bad.html"), *common),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED: iris v3 against v1: would be rolled back: errors: canary " in bad.stdout
    record = json.loads(bad.stdout.splitlines()[-1])
    assert record["status"] == "failed" and record["answered"] == 2000
    errors = next(e for e in record["evidence"] if e["metric"] == "errors")
    assert errors["alarmed"] and 50 < errors["canary_bad"] < 160 and errors["baseline_bad"] == 0
    assert "<svg" in (tmp_path / "bad.html").read_text()
    # The same verdict against the answers v1 served (recorded): no load on v1, no latency.
    recorded_baseline = subprocess.run(
        canary_args(settings, "preflight", "--model", "iris", "--candidate", "v3", "--rate", "0",
                    "--baseline-answers", "recorded", "--report", str(tmp_path / "rec.html"),
                    *common),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert recorded_baseline.returncode == 1, recorded_baseline.stdout + recorded_baseline.stderr
    record = json.loads(recorded_baseline.stdout.splitlines()[-1])
    assert record["baseline_mode"] == "recorded" and record["answered"] == 2000
    assert [e["metric"] for e in record["evidence"]] == ["errors"]

    # An identical candidate, replayed slowly while live traffic goes on: it passes.
    good = subprocess.Popen(
        canary_args(settings, "preflight", "--model", "iris", "--candidate", "v2",
                    "--rate", "150", "--report", str(tmp_path / "good.html"), *common),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert good.stderr is not None
    for line in good.stderr:  # progress lines; wait until the replay is under way
        if line.startswith("replayed ") and not line.startswith("replayed 0,"):
            break
    live = send_requests(settings, "iris", [f"user-{i}" for i in range(300)], prefix="live")
    assert set(answers(settings, topics.results, live).values()) == {1}
    out, err = good.communicate(timeout=300)
    assert good.returncode == 0, out + err
    assert "PASSED: iris v2 against v1: would pass: no harm detected on 2000 replayed" in out
    assert json.loads(out.splitlines()[-1])["status"] == "passed"

    # No replayed answer reached a client: the results topic holds one v1 answer per request.
    served = read_topic(settings, topics.results, len(recorded) + len(live), settle=2)
    per_request = Counter((m.key() or b"").decode() for m in served)
    assert set(per_request) == set(recorded) | set(live) and set(per_request.values()) == {1}
    assert {header(m, h.VERSION) for m in served} == {"v1"}
    assert read_topic(settings, topics.shadow_results, 0, timeout=0, settle=0.5) == []
    # Nor any live evidence: no rollout is in progress, and a replayed copy (which carries its
    # pre-flight's id as its rollout id) is never counted for one.
    assert read_topic(settings, topics.evidence, 0, timeout=0, settle=0.5) == []
    # The replayed answers are on the pre-flight results topic, marked with their pre-flight.
    replayed = read_topic(settings, topics.preflight_results, 4 * 2000 + 2000, settle=2)
    versions = Counter(header(m, h.VERSION) for m in replayed)
    assert versions == Counter({"v1": 4000, "v2": 2000, "v3": 4000})
    assert all(header(m, h.PREFLIGHT) for m in replayed)
    # Live requests were answered while the slow replay was still running.
    v2_times = [epoch_ms(decode_result(m.value(), m.headers()).created_at)
                for m in replayed if header(m, h.VERSION) == "v2"]  # fmt: skip
    live_times = [epoch_ms(decode_result(m.value(), m.headers()).created_at)
                  for m in served if (m.key() or b"").decode() in set(live)]  # fmt: skip
    assert min(v2_times) < min(live_times) and max(live_times) < max(v2_times)

    verdicts = sorted(store.records(settings).values(), key=lambda r: r.started_at)
    assert [(r.candidate_version, r.status) for r in verdicts] == [
        ("v3", PreflightStatus.FAILED),
        ("v3", PreflightStatus.FAILED),
        ("v2", PreflightStatus.PASSED),
    ]
    assert verdicts[-1].replayed == 2000

    # A plan that requires a pre-flight: v3's failed, so its rollout is not started...
    control = ControlClient(settings)
    gated = tmp_path / "gated.yaml"
    gated.write_text("model: iris\ncanary: v3\npreflight: {since: 30m, min_requests: 1000}\n")
    start = ["rollout", "start", "--plan", str(gated), "--no-preflight-run"]
    blocked = subprocess.run(
        canary_args(settings, *start), capture_output=True, text=True, timeout=120, check=False
    )
    assert blocked.returncode == 2, blocked.stdout + blocked.stderr
    assert "requires a passing pre-flight of iris v3 against v1" in blocked.stderr
    assert f"{verdicts[0].preflight_id}: failed: would be rolled back" in blocked.stderr
    state = control.state("iris")
    assert state is not None and state.canary_version is None
    # ... v2's passed: its rollout starts, and the rollout's plan names that pre-flight.
    gated.write_text(gated.read_text().replace("canary: v3", "canary: v2"))
    started = subprocess.run(
        canary_args(settings, *start), capture_output=True, text=True, timeout=120, check=False
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"pre-flight {verdicts[-1].preflight_id} passed" in started.stderr
    state = control.state("iris")
    assert state is not None and state.canary_version == "v2" and state.plan_json
    assert RolloutPlan.from_json(state.plan_json).preflight_id == verdicts[-1].preflight_id
    status = subprocess.run(
        canary_args(settings, "status", "iris", "--json"),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(status.stdout)["preflight_id"] == verdicts[-1].preflight_id
