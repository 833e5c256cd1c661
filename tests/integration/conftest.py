"""Fixtures for tests against a real Apache Kafka broker.

The broker is session-scoped: ``CANARY_TEST_BOOTSTRAP`` names a running one (``scripts/test``
starts it); otherwise the session starts a local broker on port 19092 under ``.canary-test/``
and stops it at the end (only without pytest-xdist: its processes would each start one).
Each test gets its own topic prefix and consumer groups, so tests on several processes share
the broker.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer

from model_canary.agents.broker import LocalBroker
from model_canary.agents.client.control import ControlClient
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.kafka.config import consumer_config, producer_config
from model_canary.agents.process import AgentProcess, canary_command
from model_canary.streams import headers as h
from model_canary.streams.messages import RolloutState
from model_canary.streams.plan import parse_plan
from model_canary.streams.route_header import RouteHeader, decode_route
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

ROOT = Path(__file__).resolve().parents[2]
TEST_PORT = int(os.environ.get("CANARY_TEST_PORT", "19092"))


@pytest.fixture(scope="session")
def broker_settings() -> Iterator[Settings]:
    bootstrap = os.environ.get("CANARY_TEST_BOOTSTRAP")
    if bootstrap:
        yield Settings.from_env(bootstrap=bootstrap)
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.fail(
            "tests on several processes (-n) share one broker: start one and name it in "
            "CANARY_TEST_BOOTSTRAP (scripts/test does both)",
            pytrace=False,
        )
    local = Settings.from_env(broker_port=TEST_PORT, state_dir=ROOT / ".canary-test")
    broker = LocalBroker(local)
    started = broker.pid() is None
    broker.start()
    try:
        yield local.with_overrides(bootstrap=broker.bootstrap)
    finally:
        if started:
            broker.stop()


@pytest.fixture
def unique() -> str:
    """A short id unique to this test, for topic prefixes and consumer groups."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(broker_settings: Settings, unique: str) -> Settings:
    """Settings with a topic prefix of this test's own."""
    return broker_settings.with_overrides(topic_prefix=f"t{unique}", partitions=3)


@pytest.fixture
def catalogue(settings: Settings) -> TopicCatalogue:
    return TopicCatalogue(settings.topic_prefix, settings.partitions)


@pytest.fixture
def admin(settings: Settings) -> Admin:
    return Admin(settings)


@pytest.fixture
def make_topic(admin: Admin, settings: Settings, unique: str) -> Callable[..., str]:
    """Factory: create a topic named after this test and return its name."""
    counter = iter(range(1_000_000))

    def make(name: str | None = None, partitions: int = 1, **config: str) -> str:
        from model_canary.streams.topics import TopicSpec

        topic = name or f"{settings.topic_prefix}.topic{next(counter)}"
        admin.ensure_topics([TopicSpec(topic, partitions, config)])
        return topic

    return make


@pytest.fixture
def make_producer(settings: Settings) -> Iterator[Callable[..., Producer]]:
    """Factory: a confluent-kafka producer on the test broker (flushed at teardown)."""
    made: list[Producer] = []

    def make(**config: Any) -> Producer:
        producer = Producer(producer_config(settings, "test-producer", **config))
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.flush(10)


@pytest.fixture
def make_consumer(settings: Settings, unique: str) -> Iterator[Callable[..., Consumer]]:
    """Factory: a consumer in a consumer group unique to this test (closed at teardown)."""
    made: list[Consumer] = []

    def make(*topics: str, group: str | None = None, **config: Any) -> Consumer:
        consumer = Consumer(
            consumer_config(settings, "test-consumer", group or f"g-{unique}-{len(made)}", **config)
        )
        if topics:
            consumer.subscribe(list(topics))
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close()


def consume_n(consumer: Consumer, n: int, timeout: float = 20.0) -> list[Message]:
    """Read until ``n`` messages arrived or ``timeout`` passed; returns what arrived."""
    import time

    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=min(500, n - len(out)), timeout=0.5):
            if msg.error() is None:
                out.append(msg)
    return out


#: How long an agent may take to start and join its group (a loaded machine: tens of seconds).
START_S = 120.0


class Agent(AgentProcess):
    """A model-canary agent running as its own process (so tests can SIGKILL it), started at
    once, in the repository's folder (``python:tests.integration.models:...`` adapters)."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        super().__init__(args[0], canary_command(*args), env, log_path, cwd=ROOT)
        self.args = args
        self.start()

    def wait_for_log(self, text: str, timeout: float = START_S) -> None:
        """Wait until the current run's log shows ``text``; fails at once if the agent exits."""
        deadline = time.monotonic() + timeout
        while text not in self.log(since_start=True):
            assert self.alive, f"{self.args[0]} exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"{self.args[0]} did not log {text!r}:\n" + (
                self.log_tail()
            )
            time.sleep(0.1)

    def ready(self, timeout: float = START_S) -> Agent:
        """Wait until the agent's group has given it its input: a router's controller its
        control topic (a command sent from then on is answered within the command's own wait,
        however long the process took to start), else the agent's own loop."""
        loop = self.args[0]
        if loop == "router" and "--no-controller" not in self.args:
            loop = "controller"
        self.wait_for_log(f"{loop} assigned", timeout)
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: a graceful stop commits the open transaction."""
        code = super().stop(timeout)
        assert code is not None
        return code


@pytest.fixture
def spawn(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """Factory: start ``canary ARGS...`` as a process on this test's broker and topic prefix.

    Every process is stopped at teardown; their logs are printed when a test fails.
    """
    agents: list[Agent] = []

    def start(*args: str, extra_env: dict[str, str] | None = None) -> Agent:
        log = tmp_path / f"agent{len(agents)}-{args[0]}.log"
        agent = Agent(list(args), settings.child_env(extra_env), log)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()
    for agent in agents:
        print(f"----- {' '.join(agent.args)} (exit {agent.returncode}) -----")
        print(agent.log()[-4000:])


@pytest.fixture
def start_worker(spawn: Callable[..., Agent]) -> Callable[..., Agent]:
    """Factory: a worker for model ``iris`` (by default the ``noop:`` adapter)."""

    def start(
        version: str = "v1", *extra: str, adapter: str = "noop:", model: str = "iris"
    ) -> Agent:
        return spawn(
            "worker",
            "--model",
            model,
            "--version",
            version,
            "--adapter",
            adapter,
            "--instance",
            f"w-{model}-{version}",
            *extra,
        )

    return start


@pytest.fixture
def start_rollout(settings: Settings, spawn: Callable[..., Agent]) -> Callable[..., RolloutState]:
    """Factory: start a router (its controller applies the commands) and a rollout of
    ``model`` from ``v1`` to ``v2`` at 50% whose steps last an hour, watching ``metrics``
    (``control``: the plan's equal-share control arm, when given); returns its state.

    >>> # state = start_rollout("iris", {"errors": {}}, control=False)
    """

    def start(model: str, metrics: dict[str, Any], *, control: bool | None = None) -> RolloutState:
        router = spawn("router", "--instance", "r1")
        doc: dict[str, Any] = {
            "model": model,
            "baseline": "v1",
            "canary": "v2",
            "steps": [50, 100],
            "step": {"min_duration": "1h", "warmup": 0},
            "metrics": metrics,
        }
        if control is not None:
            doc["control"] = control
        plan = parse_plan(doc)
        client = ControlClient(settings)
        router.ready()
        client.send(
            model,
            "start",
            baseline_version="v1",
            canary_version="v2",
            steps_bp=plan.steps_bp,
            plan_json=plan.to_json(),
        )
        state = client.state(model)
        assert state is not None
        return state

    return start


@pytest.fixture
def topics(admin: Admin, catalogue: TopicCatalogue) -> TopicCatalogue:
    """The core topics of this test's prefix, created."""
    admin.ensure_topics(catalogue.core_specs())
    return catalogue


def read_topic(
    settings: Settings,
    topic: str | list[str],
    expected: int,
    *,
    timeout: float = 60.0,
    settle: float = 1.0,
) -> list[Message]:
    """Every committed message of ``topic`` (or several topics) from the beginning: waits
    until ``expected`` arrived, then ``settle`` seconds more so duplicates would be seen."""
    import time

    from model_canary.agents.client.tail import open_tail

    consumer = open_tail(settings, topic, f"read-{uuid.uuid4().hex[:6]}", from_beginning=True)
    out: list[Message] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            out += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
        quiet_until = time.monotonic() + settle
        while time.monotonic() < quiet_until:
            out += [m for m in consumer.consume(1000, timeout=0.2) if m.error() is None]
    finally:
        consumer.close()
    return out


def answers(
    settings: Settings, topic: str, ids: list[str], *, timeout: float = 120.0, settle: float = 2.0
) -> Counter[str]:
    """How many messages keyed by each of ``ids`` ``topic`` holds: reads from the beginning
    until every id has one (other keys are skipped), then ``settle`` seconds more so
    duplicates would be seen."""
    import time

    from model_canary.agents.client.tail import open_tail

    wanted = set(ids)
    seen: Counter[str] = Counter()
    consumer = open_tail(settings, topic, f"answers-{uuid.uuid4().hex[:6]}", from_beginning=True)
    try:
        deadline = time.monotonic() + timeout
        quiet_until: float | None = None
        while time.monotonic() < (quiet_until or deadline):
            for m in consumer.consume(1000, timeout=0.2):
                key = (m.key() or b"").decode("utf-8", "replace")
                if m.error() is None and key in wanted:
                    seen[key] += 1
            if quiet_until is None and wanted <= set(seen):
                quiet_until = time.monotonic() + settle
    finally:
        consumer.close()
    return Counter({rid: seen[rid] for rid in ids})


def send_requests(
    settings: Settings, model: str, keys: list[str], *, prefix: str = "r", headers: Any = None
) -> list[str]:
    """Produce one Avro request per key (request ids ``{prefix}{i}``); returns the ids."""
    from model_canary.agents.client.inference import CanaryClient

    client = CanaryClient(settings)
    ids = []
    for i, key in enumerate(keys):
        ids.append(
            client.send(
                b'{"inputs":[]}',
                model=model,
                key=key,
                request_id=f"{prefix}{i}",
                headers=headers,
                flush=False,
            )
        )
    client.close()
    return ids


def header(msg: Message, name: str) -> str | None:
    for k, v in h.as_list(msg.headers()):
        if k == name:
            return v.decode() if isinstance(v, bytes) else v
    return None


def route_of(msg: Message) -> RouteHeader:
    """How the router routed a routed copy: its ``canary-route`` header."""
    return decode_route(header(msg, h.ROUTE) or "")
