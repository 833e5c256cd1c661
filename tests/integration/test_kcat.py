"""Acceptance with kcat only (Debian's, installed by scripts/setup): the JSON examples of
docs/json.md run as written, in order, against agents on a real broker. Reading blocks are
run again until what they should show has arrived."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from model_canary.agents.client import CanaryClient, ControlClient, InferenceError
from model_canary.streams.settings import Settings
from model_canary.streams.signing_keys import KeyRing
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import ROOT, Agent, read_topic

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed"),
]

PAGE = ROOT / "docs" / "json.md"
SAME = "python:tests.integration.models:same"


def sh_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", PAGE.read_text(), re.S | re.M)


def run(block: str, settings: Settings, tmp_path: Path) -> str:
    env = {
        "KAFKA": settings.bootstrap_servers,
        "P": settings.topic_prefix,
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",  # kcat, and canary
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        errors="replace",  # Avro records (the Python client's commands) print as bytes
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{block}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def read_until(block: str, settings: Settings, tmp_path: Path, shown: Callable[[str], bool]) -> str:
    deadline = time.monotonic() + 60
    while True:
        out = run(block, settings, tmp_path)
        if shown(out) or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def records(out: str) -> list[dict[str, object]]:
    """The JSON objects kcat printed (after the key, where the format puts one first)."""
    found = []
    for line in out.splitlines():
        if "{" in line:
            try:
                found.append(json.loads(line[line.index("{") :]))
            except ValueError:
                continue  # an Avro record, printed as bytes
    return found


@pytest.fixture
def serving(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    router = spawn("router", "--instance", "r1")
    start_worker("v1", adapter=SAME)
    start_worker("v2", adapter=SAME)
    spawn("evaluator")
    router.ready()
    control = ControlClient(settings)
    control.send("iris", "register", baseline_version="v1")
    state = control.send("iris", "start", canary_version="v2", steps_bp=(100, 5000, 10000))
    # The router reads rollout states on its own: wait until it routes by this one, or the
    # docs' first request may reach it first and be refused as unknown-model.
    router.wait_for_log(f"routing iris by rollout state revision {state.event.revision}:")


def test_json_requests_labels_and_commands_with_kcat(
    settings: Settings, serving: None, tmp_path: Path
) -> None:
    blocks = sh_blocks()
    setup, request, bare, answers, unknown, refusal, label, command, events, state = blocks[:10]
    (routed_copies,) = blocks[10:]
    assert setup.startswith("KAFKA=")
    run(request, settings, tmp_path)
    run(bare, settings, tmp_path)

    out = read_until(answers, settings, tmp_path, lambda o: o.count("canary-served=true") >= 2)
    lines = out.splitlines()
    heads = {line.split(" ", 1)[0]: line for line in lines if "canary-request-id=" in line}
    assert set(heads) == {"r1", "r2"}, out
    for rid, head in heads.items():
        assert "content-type=application/json" in head and f"canary-request-id={rid}" in head
        assert re.search(r"canary-version=v[12]", head) and "canary-model=iris" in head
    by_id = {r["request_id"]: r for r in records(out)}
    assert by_id["r2"]["outputs"] == {"text": "win a prize"}
    assert by_id["r2"]["routing_key"] == "user-8" and by_id["r1"]["routing_key"] == "user-7"
    assert by_id["r1"]["outputs"]["inputs"][0]["data"] == [1.5, 2.5]  # type: ignore[index]
    assert all(r["served"] is True and r["error"] is None for r in by_id.values())

    # The routed copies carry the request's headers and the router's one canary-route.
    out = read_until(routed_copies, settings, tmp_path, lambda o: o.count("canary-route=") >= 2)
    for line in out.splitlines():
        key, names = line.split(" ", 1)[0], re.findall(r"(?:^|,)([\w-]+)=", line.split(" ", 1)[1])
        assert names == ["content-type", "canary-model", "canary-request-id", "canary-route"], line
        route = re.search(r"canary-route=1;(\w+);(v[12]);(\d+);(\d+);;(\w+)$", line)
        assert route is not None and route.group(3) in ("0", "100", "10000"), line
        assert (route.group(1), route.group(2)) in (
            ("baseline", "v1"),
            ("control", "v1"),
            ("canary", "v2"),
        ), line
        assert key in ("user-7", "user-8")

    run(unknown, settings, tmp_path)
    out = read_until(refusal, settings, tmp_path, lambda o: "r3 " in o)
    (answer,) = [r for r in records(out) if r["request_id"] == "r3"]
    assert answer["error_type"] == "unknown-model" and "'nope'" in str(answer["error"])

    # A label, and a malformed one after it on the same partition: the evaluator dead-letters
    # the second, so it has read the first, which it took (no dead letter for it).
    run(label, settings, tmp_path)
    bad = 'echo \'{"request_id": "r1", "model": "iris"}\' | ' + label.split("| ", 1)[1]
    run(bad, settings, tmp_path)
    catalogue = TopicCatalogue(settings.topic_prefix)
    dead = read_topic(settings, catalogue.dead_letters, 2, timeout=90, settle=1)
    from_feedback = [
        m
        for m in dead
        if dict(m.headers() or []).get("canary-dlq-topic") == catalogue.feedback.encode()
    ]
    assert len(from_feedback) == 1, [m.headers() for m in dead]
    assert dict(from_feedback[0].headers() or [])["canary-dlq-reason"] == b"invalid-record"

    run(command, settings, tmp_path)
    out = read_until(events, settings, tmp_path, lambda o: '"set_weight"' in o)
    (event,) = [e for e in records(out) if e["action"] == "set_weight"]
    assert (event["outcome"], event["weight_bp"], event["reason"]) == ("applied", 2500, "")
    status, *tail = records(run(state, settings, tmp_path))
    assert (status["model"], status["weight_percent"], status["phase"]) == (
        "iris",
        25.0,
        "Progressing",
    )
    assert len(tail) >= 3 and {r["type"] for r in tail} == {"RolloutState"}
    assert [r["weight_bp"] for r in tail][:3] == [0, 100, 2500]  # register, start, set-weight


def test_an_unsigned_json_command_is_refused_with_an_event_when_commands_are_signed(
    settings: Settings, topics: TopicCatalogue, spawn: Callable[..., Agent], tmp_path: Path
) -> None:
    key = "ops:0123456789abcdef0123456789abcdef"
    spawn("router", "--instance", "r-signed", extra_env={"CANARY_CONTROL_KEY": key}).ready()
    signer = ControlClient(settings.with_overrides(control_keys=KeyRing.parse(key)))
    signer.send("iris", "register", baseline_version="v1")  # a signed command is applied
    command = sh_blocks()[7]
    run(command, settings, tmp_path)
    events = sh_blocks()[8]
    out = read_until(events, settings, tmp_path, lambda o: '"set_weight"' in o)
    (event,) = [e for e in records(out) if e["action"] == "set_weight"]
    assert (event["outcome"], event["reason"]) == ("rejected", "unsigned")


def test_a_request_for_an_unknown_model_fails_at_once_in_the_client(
    settings: Settings, topics: TopicCatalogue, spawn: Callable[..., Agent]
) -> None:
    spawn("router", "--instance", "r-fast")
    with CanaryClient(settings) as client:
        # The router's first answer (topics, metadata) may take a moment: it is up after it.
        with pytest.raises(InferenceError):
            client.infer({"x": [[1.0]]}, model="nope", timeout=60)
        # Refused and answered, so the client fails with the reason well within 2 s instead
        # of waiting out its timeout.
        with pytest.raises(InferenceError, match="unknown-model") as info:
            client.infer({"x": [[1.0]]}, model="nope-either", timeout=2.0)
    assert info.value.result.error_type == "unknown-model"
