"""Kafka security end to end: a broker started by ``canary broker start --scram-users FILE
--tls`` takes SASL/SCRAM users only, over TLS (SASL_SSL, a CA and certificates made at test
time with openssl), and authorizes with ACLs; agents and the CLI are configured through
``CANARY_KAFKA_*`` alone; a principal without WRITE on the control topic cannot move traffic;
a client without the CA is refused; and no password or key shows up in logs, metrics or topics.

The broker is this module's own (port ``CANARY_TEST_SASL_PORT``, default 19192, and the next
one for its controller), not the session's shared PLAINTEXT broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

# The package re-exports these without declaring them; mypy --strict wants the defining modules.
from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

from model_canary.agents.broker import BrokerSecurity, LocalBroker
from model_canary.agents.broker.tls import make_tls
from model_canary.agents.client.tail import open_tail
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.kafka.config import admin_config
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.errors import DecodeError
from model_canary.streams.messages import Decision, InferenceResult
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import ROOT, Agent, read_topic, send_requests

pytestmark = pytest.mark.integration

SASL_PORT = int(os.environ.get("CANARY_TEST_SASL_PORT", "19192"))
USERS = ("admin", "router", "worker", "evaluator", "operator", "intruder")
MECHANISM = "SCRAM-SHA-512"

TOPIC, GROUP, TXN = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
LIT, PRE = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
READ, WRITE, CREATE = AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE
Grant = tuple[ResourceType, str, ResourcePatternType, AclOperation]


def acls(p: str) -> dict[str, list[Grant]]:
    """What each principal may do under topic prefix ``p`` (the README's table, as code).

    READ and WRITE imply DESCRIBE. Every agent creates missing topics under the prefix at
    start; the evaluator (faust) also owns topics, a group and transactional ids named
    ``{p}-evaluator...``.
    """
    c = TopicCatalogue(p)
    return {
        "router": [
            (TOPIC, f"{p}.", PRE, CREATE),
            *[(TOPIC, t, LIT, READ) for t in (c.requests, c.control, c.rollout_state)],
            (TOPIC, f"{c.requests}.", PRE, WRITE),
            *[
                (TOPIC, t, LIT, WRITE)
                for t in (c.events, c.rollout_state, c.dead_letters, c.evidence, c.results)
            ],
            (GROUP, f"{p}.router", LIT, READ),
            (GROUP, f"{p}.controller", LIT, READ),
            (TXN, f"{p}.router.", PRE, WRITE),
            (TXN, f"{p}.controller.", PRE, WRITE),
        ],
        "worker": [
            (TOPIC, f"{p}.", PRE, CREATE),
            (TOPIC, f"{c.requests}.", PRE, READ),
            (TOPIC, f"{p}.preflight.", PRE, READ),
            (TOPIC, c.rollout_state, LIT, READ),
            *[
                (TOPIC, t, LIT, WRITE)
                for t in (
                    c.results,
                    c.shadow_results,
                    c.evidence,
                    c.predictions,
                    c.metrics,
                    c.dead_letters,
                    c.preflight_results,
                )
            ],
            (GROUP, f"{p}.worker.", PRE, READ),
            (TXN, f"{p}.worker.", PRE, WRITE),
        ],
        "evaluator": [
            (TOPIC, f"{p}.", PRE, CREATE),
            *[
                (TOPIC, t, LIT, READ)
                for t in (
                    c.evidence,
                    c.predictions,
                    c.feedback,
                    c.feedback_rekeyed,
                    c.rollout_state,
                    c.evaluator_state,
                    c.joiner_state,
                )
            ],
            *[
                (TOPIC, t, LIT, WRITE)
                for t in (
                    c.control,
                    c.evidence,
                    c.feedback_rekeyed,
                    c.evaluator_state,
                    c.joiner_state,
                    c.dead_letters,
                )
            ],
            (GROUP, f"{p}.joiner", LIT, READ),
            (TXN, f"{p}.joiner.", PRE, WRITE),
            (TXN, f"{p}.evaluator-state.", PRE, WRITE),
            *[(TOPIC, f"{p}-evaluator", PRE, op) for op in (CREATE, READ, WRITE)],
            (GROUP, f"{p}-evaluator", PRE, READ),
            (TXN, f"{p}-evaluator", PRE, WRITE),
        ],
        "operator": [
            (TOPIC, c.control, LIT, WRITE),
            *[(TOPIC, t, LIT, READ) for t in (c.events, c.rollout_state)],
        ],
        # An application: sends requests and labels, reads everything, but may not steer.
        "intruder": [
            (TOPIC, f"{p}.", PRE, READ),
            *[(TOPIC, t, LIT, WRITE) for t in (c.requests, c.feedback)],
        ],
    }


@dataclass(frozen=True)
class Secured:
    broker: LocalBroker
    security: BrokerSecurity
    prefix: str
    logs: Path

    def settings(self, user: str) -> Settings:
        """Settings that connect as ``user`` under this module's topic prefix."""
        return self.broker.admin_settings().with_overrides(
            topic_prefix=self.prefix,
            partitions=2,
            extra_config=self.security.client_config(user),
        )

    def env(self, user: str, *, with_ca: bool = True) -> dict[str, str]:
        """A child's environment: the security settings pass through CANARY_KAFKA_* only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CANARY_")}
        env.update(
            CANARY_BOOTSTRAP=self.broker.bootstrap,
            CANARY_TOPIC_PREFIX=self.prefix,
            CANARY_PARTITIONS="2",
            CANARY_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
            CANARY_KAFKA_SASL_MECHANISM=MECHANISM,
            CANARY_KAFKA_SASL_USERNAME=user,
            CANARY_KAFKA_SASL_PASSWORD=self.security.users[user],
            PYTHONUNBUFFERED="1",
        )
        if with_ca:
            assert self.security.tls is not None
            env["CANARY_KAFKA_SSL_CA_LOCATION"] = str(self.security.tls.ca_cert)
        return env

    def secrets(self) -> list[str]:
        """Every password and key of this broker: none may show anywhere."""
        tls = self.security.tls
        assert tls is not None
        keys = [tls.keystore_password, (tls.folder / "ca.key").read_text()]
        # A PEM key's body lines, each long and random enough to be a leak if seen.
        body = [line for line in keys[1].splitlines() if line and not line.startswith("-")]
        return [*self.security.users.values(), tls.keystore_password, *body]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    # Random passwords: any occurrence of one in a log or a topic is a leak, not a coincidence.
    users = {u: f"{u}-pw-{secrets.token_hex(12)}" for u in USERS}
    state = tmp_path_factory.mktemp("sasl-broker")
    users_file = state / "users"
    users_file.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
    broker = LocalBroker(Settings.from_env({}, broker_port=SASL_PORT, state_dir=state))
    started = subprocess.run(
        [sys.executable, "-m", "model_canary.agents.cli.main", "broker", "start",
         "--broker-port", str(SASL_PORT), "--state-dir", str(state),
         "--scram-users", str(users_file), "--tls", "--timeout", "150"],
        env={k: v for k, v in os.environ.items() if not k.startswith("CANARY_")},
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "CANARY_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in started.stdout
        assert not [p for p in users.values() if p in started.stdout + started.stderr]
        security = BrokerSecurity(users, tls=make_tls(broker.home / "tls"))  # the files it made
        prefix = f"s{uuid.uuid4().hex[:8]}"
        sec = Secured(broker, security, prefix, tmp_path_factory.mktemp("sasl-logs"))
        admin = sec.settings("admin")
        catalogue = TopicCatalogue(prefix, admin.partitions)
        Admin(admin).ensure_topics(
            catalogue.core_specs() + catalogue.version_specs("iris", "v1", "v2")
        )
        bindings = [
            AclBinding(kind, name, pattern, f"User:{user}", "*", op, AclPermissionType.ALLOW)
            for user, grants in acls(prefix).items()
            for kind, name, pattern, op in grants
        ]
        client = AdminClient(admin_config(admin))
        for future in client.create_acls(bindings, request_timeout=30).values():
            future.result(30)
        yield sec
    finally:
        broker.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _canary(sec: Secured, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_canary.agents.cli.main", *args],
        env=sec.env(user),
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _weight(sec: Secured) -> float:
    status = _canary(sec, "operator", "status", "iris", "--json")
    assert status.returncode == 0, status.stderr
    return float(json.loads(status.stdout)["weight_percent"])


def _scan(sec: Secured, topic: str, done: Callable[[bytes], bool], timeout: float = 60.0) -> None:
    """Read ``topic`` from the beginning as admin until ``done(value)`` says enough."""
    consumer = open_tail(sec.settings("admin"), topic, "sec-scan", from_beginning=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(done(m.value() or b"") for m in consumer.consume(500, timeout=0.5)):
                return
    finally:
        consumer.close()


def _served(sec: Secured, request_ids: list[str]) -> set[str]:
    """Which of ``request_ids`` have a served result, waiting until all do (or a minute)."""
    codec = codec_for(InferenceResult)
    wanted, served = set(request_ids), set[str]()

    def count(value: bytes) -> bool:
        result = codec.decode(value)
        if result.served and result.request_id in wanted:
            served.add(result.request_id)
        return served == wanted

    _scan(sec, TopicCatalogue(sec.prefix).results, count)
    return served


def test_only_authorized_principals_steer_and_no_secret_leaks(
    secured: Secured, tmp_path: Path
) -> None:
    sec = secured
    ports = {name: _free_port() for name in ("router", "w1", "w2", "evaluator")}
    agents: list[Agent] = []

    def spawn(user: str, name: str, *args: str) -> Agent:
        agent = Agent(
            [*args, "-v", "--metrics-port", str(ports[name])],
            sec.env(user),
            sec.logs / f"{name}.log",
        )
        agents.append(agent)
        return agent

    try:
        spawn("router", "router", "router", "--instance", "r1")
        for name, version in (("w1", "v1"), ("w2", "v2")):
            spawn("worker", name, "worker", "--model", "iris", "--version", version,
                  "--adapter", "noop:", "--instance", f"w-{version}")  # fmt: skip
        spawn("evaluator", "evaluator", "evaluator")

        plan = tmp_path / "plan.yaml"
        # The evaluator runs but has no reason to move the weight during the test.
        plan.write_text(
            "model: iris\nbaseline: v1\ncanary: v2\nsteps: [10, 50, 100]\n"
            "step: {min_duration: 1h, min_canary_requests: 1000000, warmup: 0s}\n"
        )
        started = _canary(sec, "operator", "rollout", "start", "--plan", str(plan))
        assert started.returncode == 0, started.stderr
        moved = _canary(sec, "operator", "set-weight", "iris", "30", "--reason", "ops")
        assert moved.returncode == 0, moved.stderr
        assert _weight(sec) == 30

        before = send_requests(sec.settings("intruder"), "iris", [f"k{i}" for i in range(40)])
        assert _served(sec, before) == set(before)

        refused = _canary(sec, "intruder", "set-weight", "iris", "100", "--reason", "mine")
        assert refused.returncode != 0
        assert "TOPIC_AUTHORIZATION_FAILED" in refused.stderr, refused.stderr
        assert TopicCatalogue(sec.prefix).control in refused.stderr
        assert _weight(sec) == 30

        after = send_requests(
            sec.settings("intruder"), "iris", [f"k{i}" for i in range(40)], prefix="after"
        )
        assert _served(sec, after) == set(after)
        # The evaluator works under its grants: it read the evidence and the rollout state and
        # published a decision (a hold: the plan's step lasts an hour) to the control topic.
        decision = _first_decision(sec)
        assert (decision.model, decision.weight_bp) == ("iris", 3000)
        pages = {name: _metrics_page(port) for name, port in ports.items()}
        assert all(agent.alive for agent in agents), "an agent stopped"
    finally:
        for agent in agents:
            agent.stop()

    passwords = sec.secrets()
    broker_log = (sec.broker.logs_dir / "server.log").read_text(errors="replace")
    assert "SASL_SSL" in broker_log
    assert not [p for p in passwords if p in broker_log], "a password or key in the broker's log"
    cli_output = "".join(p.stdout + p.stderr for p in (started, moved, refused))
    assert not [p for p in passwords if p in cli_output], "a password in the CLI's output"
    for agent in agents:
        log = agent.log()
        assert log, f"{agent.args[0]} logged nothing"
        assert not [p for p in passwords if p in log], f"a password in {agent.log_path}"
    for name, page in pages.items():
        assert "# TYPE" in page, f"{name} served no metrics"
        assert not [p for p in passwords if p in page], f"a password on {name}'s /metrics"
    catalogue = TopicCatalogue(sec.prefix)
    topics = [catalogue.control, catalogue.events, catalogue.rollout_state]
    records = read_topic(sec.settings("admin"), topics, 3, settle=0.5)
    assert len(records) >= 3
    for msg in records:
        headers = [h[1] for h in msg.headers() or [] if isinstance(h[1], bytes)]
        blob = b"".join([msg.value() or b"", *headers])
        assert not [p for p in passwords if p.encode() in blob], f"a password on {msg.topic()}"


def test_a_client_without_the_ca_or_tls_is_refused_in_one_line(secured: Secured) -> None:
    no_ca = subprocess.run(
        [sys.executable, "-m", "model_canary.agents.cli.main", "status", "iris"],
        env=secured.env("operator", with_ca=False),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert no_ca.returncode == 2
    assert no_ca.stderr.count("\n") == 1 and "Traceback" not in no_ca.stderr, no_ca.stderr
    assert "refused this client" in no_ca.stderr and "certificate verify failed" in no_ca.stderr
    plain = {**secured.env("operator"), "CANARY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    plaintext = subprocess.run(
        [sys.executable, "-m", "model_canary.agents.cli.main", "status", "iris",
         "--connect-timeout", "4"],
        env=plain, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert plaintext.returncode == 2
    assert plaintext.stderr.count("\n") == 1, plaintext.stderr
    assert "security.protocol" in plaintext.stderr
    for output in (no_ca, plaintext):
        assert not [p for p in secured.secrets() if p in output.stdout + output.stderr]


def _first_decision(sec: Secured) -> Decision:
    """The evaluator's first decision on the control topic (which also carries commands)."""
    codec = codec_for(Decision)
    found: list[Decision] = []

    def pick(value: bytes) -> bool:
        with contextlib.suppress(DecodeError):
            found.append(codec.decode(value))
        return bool(found)

    _scan(sec, TopicCatalogue(sec.prefix).control, pick)
    assert found, "no decision on the control topic within a minute"
    return found[0]


def _metrics_page(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        return str(page.read().decode())
