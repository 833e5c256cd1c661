"""A benchmark session: a fresh topic prefix on the cluster, the environment its child
processes run with, the contenders, and clean-up.

>>> # with BenchSession(Settings.from_env(), "bench") as session:
>>> #     session.create_topics(...); child = session.child("router", [...])
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaException

from model_canary.agents.bench import BenchError
from model_canary.agents.bench.procs import Child
from model_canary.agents.client.control import ControlClient
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.process import CLI_MODULE
from model_canary.agents.router.controller import Controller
from model_canary.streams.errors import ConfigError, KafkaOperationError
from model_canary.streams.plan import RolloutPlan, parse_plan
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue, TopicSpec

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Contender:
    """A process under test and how it is observed: its consumer group, the topic(s) it
    drains and the topics it writes its copies to."""

    child: Child
    group: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class BenchSession:
    """Everything of one benchmark run lives under ``{base prefix}-{kind}-{random}``."""

    def __init__(
        self,
        settings: Settings,
        kind: str,
        *,
        keep_topics: bool = False,
        progress: Progress = lambda _m: None,
    ) -> None:
        prefix = f"{settings.topic_prefix}-{kind}-{uuid.uuid4().hex[:8]}"
        self.settings = settings.with_overrides(topic_prefix=prefix)
        self.catalogue = TopicCatalogue(prefix, self.settings.partitions)
        self.admin = Admin(self.settings)
        self.keep_topics = keep_topics
        self.progress = progress
        self.children: list[Child] = []
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"canary-bench-{kind}-"))
        self.groups: list[str] = []

    # -- children ------------------------------------------------------------------------
    def env(self, settings: Settings | None = None) -> dict[str, str]:
        """What a child needs to reach the same cluster under the same prefix (with
        ``settings``, which must keep the session's prefix, instead of the session's)."""
        return (settings or self.settings).child_env()

    def child(self, name: str, args: Sequence[str], settings: Settings | None = None) -> Child:
        """A ``python ARGS...`` child process (not started)."""
        env = self.env(settings)
        made = Child(name, [sys.executable, "-P", *args], env, self.log_dir / f"{name}.log")
        self.children.append(made)
        return made

    def agent(
        self,
        name: str,
        group: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        *args: str,
        settings: Settings | None = None,
    ) -> Contender:
        """``canary ARGS...`` as a contender (run with ``settings``, default the session's)."""
        self.groups.append(group)
        child = self.child(name, ["-m", CLI_MODULE, *args], settings)
        return Contender(child, group, tuple(inputs), tuple(outputs))

    def passthrough(
        self,
        input_topic: str,
        outputs: Sequence[str],
        *,
        name: str = "passthrough",
        extra: Sequence[str] = (),
        instance: str = "bench",
    ) -> Contender:
        """The reference loop (:mod:`model_canary.agents.bench.passthrough`) as a contender
        (``extra``: more of its arguments, such as the router's output shape; ``instance``:
        several of one group need transactional ids of their own)."""
        group = f"{self.settings.topic_prefix}.{name}"
        self.groups.append(group)
        args = [
            "-m",
            "model_canary.agents.bench.passthrough",
            "--input",
            input_topic,
            "--group",
            group,
        ]
        args += ["--transactional-id", f"{group}.{instance}"]
        args += [a for topic in outputs for a in ("--output", topic)]
        args += extra
        child = self.child(name if instance == "bench" else f"{name}-{instance}", args)
        return Contender(child, group, (input_topic,), tuple(outputs))

    # -- topics and rollouts -------------------------------------------------------------
    def create_topics(self, extra: Sequence[TopicSpec] = ()) -> None:
        self.admin.ensure_topics([*self.catalogue.core_specs(), *extra])

    def spec(self, suffix: str) -> TopicSpec:
        """A plain data topic ``{prefix}.{suffix}``."""
        return TopicSpec(f"{self.settings.topic_prefix}.{suffix}", self.settings.partitions)

    def apply_commands(self, commands: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Apply control commands ``(model, action, fields)`` through a controller run in a
        thread of this process, stopped once all are applied."""
        controller = Controller(self.settings, "bench")
        self.groups.append(f"{self.settings.topic_prefix}.controller")
        stop = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                controller.loop.run(stop)
            except BaseException as exc:  # reported below
                failure.append(exc)

        thread = threading.Thread(target=run, name="bench-controller", daemon=True)
        thread.start()
        try:
            control = ControlClient(self.settings, issued_by="canary-bench")
            for model, action, fields in commands:
                control.send(model, action, wait=60, **fields)
        finally:
            stop.set()
            thread.join(30)
            controller.view.close()
        if failure:
            raise BenchError(f"the controller failed: {failure[0]}")

    def start_rollout(
        self,
        model: str,
        weight_pct: float,
        metrics: dict[str, object],
        extra_topics: Sequence[TopicSpec] = (),
    ) -> RolloutPlan:
        """Create the session's topics (and ``extra_topics``), register ``model`` with
        baseline ``v1`` and start its rollout to ``v2`` at ``weight_pct`` with a plan watching
        ``metrics`` (see :func:`bench_metrics`) whose steps last a day, so that nothing
        interrupts a benchmark; returns the plan."""
        plan = parse_plan(
            {
                "model": model,
                "baseline": "v1",
                "canary": "v2",
                "steps": [weight_pct, 100],
                "step": {"min_duration": "24h", "max_duration": "48h", "warmup": 0},
                "metrics": metrics,
            }
        )
        self.progress(
            f"topics under {self.settings.topic_prefix}.*: creating, "
            f"starting a rollout at {weight_pct:g}%"
        )
        self.create_topics(extra_topics)
        self.apply_commands(
            [
                (model, "register", {"baseline_version": "v1"}),
                (
                    model,
                    "start",
                    {
                        "canary_version": "v2",
                        "steps_bp": plan.steps_bp,
                        "plan_json": plan.to_json(),
                    },
                ),
            ]
        )
        return plan

    # -- clean-up ------------------------------------------------------------------------
    def close(self, failed: bool = False) -> None:
        """Stop the children; delete the topics (unless kept) and the children's logs
        (unless kept or ``failed``)."""
        for child in self.children:
            child.stop()
        if self.keep_topics or failed:
            self.progress(f"logs of the agents in {self.log_dir}")
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        if self.keep_topics:
            self.progress(f"kept topics {self.settings.topic_prefix}.*")
            return
        prefix = self.settings.topic_prefix + "."
        # The evaluator (faust) also keeps a topic of its own, {prefix}-evaluator-...
        faust_prefix = self.settings.topic_prefix + "-evaluator-"
        try:
            names = [n for n in self.admin.list_topics() if n.startswith((prefix, faust_prefix))]
            self.admin.delete_topics(names)
            # Best effort: groups with static members stay non-empty until their session
            # times out, and are then removed by the broker's offset retention.
            if self.groups:
                for future in self.admin.client.delete_consumer_groups(
                    sorted(set(self.groups)), request_timeout=10
                ).values():
                    with contextlib.suppress(KafkaException):
                        future.result(15)
        except (KafkaException, KafkaOperationError) as exc:
            self.progress(f"could not delete the benchmark topics: {exc}")
            return
        self.progress(f"deleted topics {prefix}*")

    def __enter__(self) -> BenchSession:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close(failed=exc is not None)


def bench_metrics(*, labels: bool, latency: bool) -> dict[str, object]:
    """A benchmark plan's metrics: errors, latency (p95, p99) when ``latency``, accuracy when
    ``labels``, each rolling back only past an 11-fold harm so that chance differences
    between the arms never interrupt a measurement.

    >>> sorted(bench_metrics(labels=True, latency=False))
    ['accuracy', 'errors']
    """
    tolerance = {"rollback_tolerance": 10}
    doc: dict[str, object] = {"errors": dict(tolerance)}
    if latency:
        doc["latency_p95"] = dict(tolerance)
        doc["latency_p99"] = dict(tolerance)
    if labels:
        doc["accuracy"] = {**tolerance, "min_label_coverage": 0.1}
    return doc


def require_at_least_one(options: object, *names: str) -> None:
    """Raise a CLI-worded :class:`ConfigError` when any of ``names`` is below 1."""
    for name in names:
        if getattr(options, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
