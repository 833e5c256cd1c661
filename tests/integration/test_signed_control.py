"""Signed control commands on a real broker: a router with a key ring applies signed commands
from the operator and the evaluator, and refuses unsigned, forged, stale and replayed ones
(also after a restart) without changing the rollout; the secrets appear nowhere."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from model_canary.agents.client.control import ControlClient
from model_canary.agents.client.tail import open_tail
from model_canary.agents.evaluator.decisions import DecisionSink
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.enums import Outcome
from model_canary.streams.messages import ControlCommand, ControlEvent, utc_now
from model_canary.streams.settings import Settings
from model_canary.streams.signing import sign
from model_canary.streams.signing_keys import KeyRing
from model_canary.streams.stats import Verdict
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, read_topic
from tests.integration.test_metrics import _free_port, _scrape

pytestmark = pytest.mark.integration


def _secret(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


def _refused(client: ControlClient, command: ControlCommand) -> str:
    outcome = client.submit(command, check=False)
    assert outcome.event.outcome == "rejected", outcome.event
    return outcome.event.reason


def _event_for(settings: Settings, command_id: str, timeout: float = 30.0) -> ControlEvent:
    """The controller's event for a command published by someone else (the evaluator)."""
    catalogue = TopicCatalogue(settings.topic_prefix)
    codec = codec_for(ControlEvent)
    events = open_tail(settings, catalogue.events, "test-events", from_beginning=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in events.consume(100, timeout=0.2):
                if msg.error() is None:
                    event = codec.decode(msg.value() or b"")
                    if event.command_id == command_id:
                        return event
    finally:
        events.close()
    raise AssertionError(f"no event for command {command_id}")


def test_only_signed_fresh_unseen_commands_move_traffic(
    settings: Settings, topics: TopicCatalogue, spawn: Callable[..., Agent], tmp_path: Path
) -> None:
    ops_secret, evaluator_secret = _secret("ops"), _secret("evaluator")
    ring_file = tmp_path / "router.keys"
    ring_file.write_text(f"ops:{ops_secret}\nevaluator:{evaluator_secret}\n")
    metrics_port = _free_port()
    router_env = {"CANARY_CONTROL_KEY_FILE": str(ring_file)}
    router_args = ("router", "--instance", "r1", "--metrics-port", str(metrics_port))
    router = spawn(*router_args, extra_env=router_env)

    def canary(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        conn = ["--bootstrap", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix]
        return subprocess.run(
            [sys.executable, "-m", "model_canary.agents.cli.main", *args, *conn],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    ops_ring = KeyRing.parse(f"ops:{ops_secret}")
    ops_key = ops_ring.keys[0]
    router.ready()
    ops = ControlClient(settings.with_overrides(control_keys=ops_ring))
    assert ops.send("iris", "register", baseline_version="v1").command.key_id == "ops"
    ops.send("iris", "start", baseline_version="v1", canary_version="v2", steps_bp=(100, 10_000))
    before = ops.state("iris")
    assert before is not None and before.weight_bp == 100

    unsigned = ControlClient(settings)
    assert _refused(unsigned, unsigned.command("iris", "set_weight", weight_bp=5000)) == "unsigned"
    impostor = ControlClient(settings.with_overrides(control_keys=KeyRing.parse("ops:" + "x" * 32)))
    move = impostor.command("iris", "set_weight", weight_bp=5000)
    assert _refused(impostor, move) == "bad-signature"
    stranger = ControlClient(settings.with_overrides(control_keys=KeyRing.parse("me:" + "y" * 32)))
    assert _refused(stranger, stranger.command("iris", "rollback")) == "unknown-key-id"
    tampered = dataclasses.replace(
        sign(ops.command("iris", "set_weight", weight_bp=200), ops_key), weight_bp=10_000
    )
    assert _refused(ops, tampered) == "bad-signature"
    old = dataclasses.replace(
        ops.command("iris", "rollback"), issued_at=utc_now() - timedelta(hours=1)
    )
    assert _refused(ops, old) == "stale"
    assert ops.state("iris") == before  # nothing refused changed anything

    pause = sign(ops.command("iris", "pause", reason="look at p99"), ops_key)
    assert ops.submit(pause).applied
    assert _refused(ops, pause) == "replayed"
    assert ops.send("iris", "resume").applied
    resumed = ops.state("iris")

    # A restarted controller has forgotten everything in memory: it re-reads recent commands,
    # so the old pause (which the state machine would accept now) is still a replay.
    router.kill()
    router = spawn(*router_args, extra_env=router_env)
    assert _refused(ops, pause) == "replayed"
    assert ops.state("iris") == resumed

    # The evaluator signs with its own key id, which the router's ring holds.
    evaluator = DecisionSink(
        settings.with_overrides(control_keys=KeyRing.parse(f"evaluator:{evaluator_secret}"))
    )
    state = ops.state("iris")
    assert state is not None
    verdict = Verdict(Outcome.ADVANCE, "within-tolerance", "no metric alarmed")
    emitted = evaluator.emit(state, verdict, {})
    assert emitted.command is not None and emitted.command.key_id == "evaluator"
    event = _event_for(settings, emitted.command.command_id)
    assert (event.outcome, event.issued_by, event.weight_bp) == ("applied", "evaluator", 10_000)
    rogue = DecisionSink(settings.with_overrides(control_keys=KeyRing.parse("ev2:" + "z" * 32)))
    rogue_command = rogue.emit(state, verdict, {}).command
    assert rogue_command is not None
    assert _event_for(settings, rogue_command.command_id).reason == "unknown-key-id"

    # Its decision record is signed with the same key; the controller flags one that is not.
    assert emitted.decision is not None
    assert emitted.decision.key_id == "evaluator" and emitted.decision.signature
    forged = DecisionSink(settings).emit(state, verdict, {}).decision  # unsigned
    assert forged is not None and forged.signature is None
    flagged = _event_for(settings, forged.decision_id)
    assert (flagged.action, flagged.outcome, flagged.reason) == ("decision", "rejected", "unsigned")

    # A key signs only for its principals: the operator's key cannot speak for the evaluator.
    ops_settings = settings.with_overrides(control_keys=ops_ring)
    impostor_ops = ControlClient(ops_settings, issued_by="evaluator")
    assert _refused(impostor_ops, impostor_ops.command("iris", "pause")) == "wrong-issuer"
    assert ops.send("iris", "pause", reason="ops speaks as ops").event.issued_by == "ops"
    assert ops.send("iris", "resume").applied

    # The CLI signs with --key-file or CANARY_CONTROL_KEY, and says why an unsigned one failed.
    key_file = tmp_path / "ops.key"
    key_file.write_text(f"ops:{ops_secret}\n")
    assert canary("pause", "iris", "--key-file", str(key_file)).returncode == 0
    refused = canary("resume", "iris")
    assert refused.returncode == 2 and "rejected (unsigned)" in refused.stderr
    signed = canary("resume", "iris", env={"CANARY_CONTROL_KEY": f"ops:{ops_secret}"})
    assert signed.returncode == 0 and "applied" in signed.stdout

    # History checks the decision records' signatures with the ring it is given.
    history = canary("history", "iris", "--json", "--key-file", str(ring_file))
    assert history.returncode == 0, history.stderr
    checks = {
        row["decision_id"]: row["signature_check"]
        for row in map(json.loads, history.stdout.splitlines())
        if "decision_id" in row
    }
    assert checks[emitted.decision.decision_id] == "valid"
    assert checks[forged.decision_id] == "unsigned"
    shown = canary("history", "iris", "--key-file", str(ring_file)).stdout
    assert "NOT AUTHENTIC: unsigned" in shown and "[signed: key evaluator]" in shown

    # The secrets are nowhere: not on any topic, not in the router's log, not in /metrics.
    page = _scrape(metrics_port, ['outcome="rejected"'])
    log = spawn_logs(tmp_path)
    messages = read_topic(
        settings, [topics.events, topics.control, topics.dead_letters], expected=20, timeout=10
    )
    assert len(messages) >= 20
    assert "control commands must be signed by one of the keys ('ops', 'evaluator')" in log
    for secret in (ops_secret, evaluator_secret):
        raw = secret.encode()
        assert secret not in page and secret not in log
        for msg in messages:
            assert raw not in (msg.value() or b"")
            assert secret not in repr(msg.headers())  # printable ASCII shows as itself


def spawn_logs(tmp_path: Path) -> str:
    """Every agent log of this test (the killed router's too)."""
    return "".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("agent*.log")))
