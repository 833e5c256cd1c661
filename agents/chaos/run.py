"""``run_chaos``: set up a rollout under a steady load, inject each fault in turn, and after
each one audit (0 lost, 0 duplicated), check the rollout state and measure the recovery; for
the faults that break code, also check that every faulty request was answered and
dead-lettered once with its reason."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model_canary.agents.audit import audit
from model_canary.agents.broker import LocalBroker
from model_canary.agents.broker.cluster import LocalCluster
from model_canary.agents.chaos import scenarios as sc
from model_canary.agents.chaos.cluster_faults import ClusterFaults
from model_canary.agents.chaos.code_faults import FaultWatch, Injector
from model_canary.agents.chaos.load import ResultWatch, SteadyLoad
from model_canary.agents.chaos.recovery import recovery_seconds
from model_canary.agents.chaos.supervisor import ChaosError, Supervisor
from model_canary.agents.client.control import ControlClient
from model_canary.agents.kafka.admin import Admin
from model_canary.streams.errors import ConfigError
from model_canary.streams.messages import RolloutState, utc_now
from model_canary.streams.plan import MetricPolicy, RolloutPlan
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

# Long steps and errors only (noop workers never fail): the evaluator holds the rollout
# where it is for the whole run, so any state change is the faults' doing.
PLAN = RolloutPlan(
    model=sc.MODEL,
    baseline="v1",
    canary="v2",
    steps_bp=(5000, 10000),
    min_step_seconds=7200.0,
    max_step_seconds=7200.0,
    metrics={"errors": MetricPolicy(0.2)},
)


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    scenarios: tuple[str, ...] = sc.BROKER_NAMES
    rate: float = 2000.0
    seconds: float = 30.0  # load per scenario; the fault comes after a third of it
    drain_timeout: float = 180.0
    cluster: int = 0  # > 0: run on a local cluster of this many nodes, started by the run


@dataclass(frozen=True, slots=True)
class ScenarioOutcome:
    scenario: str
    requests: int
    lost: int
    duplicated: int
    orphans: int
    recovery_s: float | None
    state_ok: bool
    rate: float
    # Agents that exited on their own; restarted at once, as a process supervisor would.
    exited: tuple[str, ...]
    detail: str = ""
    # Requests sent to break code, and how many of them were answered and dead-lettered once
    # with their reason, as expected.
    injected: int = 0
    refused: int = 0

    @property
    def ok(self) -> bool:
        return (
            not (self.lost or self.duplicated or self.orphans)
            and self.state_ok
            and self.refused == self.injected
            # Bad input never crashes an agent: a code fault must not make one exit.
            and not (self.injected and self.exited)
        )


def run_chaos(
    settings: Settings,
    options: ChaosOptions,
    say: Callable[[str], None] = print,
    cluster: LocalCluster | None = None,
) -> list[ScenarioOutcome]:
    """Run the chosen scenarios one after the other on a fresh set of agents.

    With ``options.cluster``, the run starts a local cluster of its own, or uses ``cluster``
    (running, and left running) when given.
    """
    unknown = sorted(set(options.scenarios) - set(sc.NAMES))
    if unknown:
        raise ConfigError(f"unknown scenario(s) {unknown}; choose from {list(sc.NAMES)}")
    # Topics of its own: no earlier rollout or traffic is touched or counted.
    settings = settings.with_overrides(
        topic_prefix=f"{settings.topic_prefix}.chaos-{uuid.uuid4().hex[:8]}"
    )
    own_cluster = cluster is None
    if cluster is None:
        cluster = _cluster(settings, options, say)
    broker = LocalBroker(settings)
    own_broker = cluster is None and settings.uses_local_broker and broker.pid() is None
    if own_broker:
        say(f"starting a local Kafka broker on {broker.bootstrap} ...")
        broker.start()
    if cluster is not None:
        settings = cluster.client_settings().with_overrides(topic_prefix=settings.topic_prefix)
    work = Path(tempfile.mkdtemp(prefix="canary-chaos-"))
    supervisor = Supervisor(settings, work / "agents")
    ctx = sc.Context(
        supervisor,
        ControlClient(settings),
        broker if own_broker else None,
        Injector(settings, sc.MODEL),
        ClusterFaults(cluster, settings, _topics(settings)) if cluster is not None else None,
    )
    say(f"agent logs in {supervisor.log_dir}, topics {settings.topic_prefix}.*")
    try:
        _set_up(settings, ctx)
        outcomes = []
        for scenario in sc.ALL:
            if scenario.name not in options.scenarios:
                continue
            if scenario.needs_own_broker and ctx.broker is None:
                say(f"{scenario.name}: skipped (the broker was not started by this run)")
                continue
            if scenario.needs_cluster and ctx.cluster is None:
                say(f"{scenario.name}: skipped (it needs a cluster: --cluster 3)")
                continue
            outcome = _run_one(settings, ctx, scenario, options)
            say(_format(outcome))
            outcomes.append(outcome)
        return outcomes
    finally:
        supervisor.stop_all()
        if own_broker:
            broker.stop()
        if cluster is not None and own_cluster:
            cluster.stop()


def _cluster(
    settings: Settings, options: ChaosOptions, say: Callable[[str], None]
) -> LocalCluster | None:
    """The run's own local cluster when ``options.cluster`` asks for one, started."""
    if not options.cluster:
        return None
    if not settings.uses_local_broker:
        raise ConfigError("--cluster starts a local cluster of its own: drop --bootstrap")
    cluster = LocalCluster(settings, options.cluster)
    if cluster.running():
        raise ConfigError(
            f"a local cluster already runs at {cluster.bootstrap}: the run needs its own "
            "(stop it, or choose another --broker-port)"
        )
    say(f"starting a local Kafka cluster of {options.cluster} nodes at {cluster.bootstrap} ...")
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _topics(settings: Settings) -> list[str]:
    """Every topic of the run: where the busiest partition is looked for."""
    catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
    specs = catalogue.core_specs() + catalogue.version_specs(sc.MODEL, "v1", "v2")
    return [spec.name for spec in specs]


def _set_up(settings: Settings, ctx: sc.Context) -> None:
    catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
    Admin(settings).ensure_topics(
        catalogue.core_specs() + catalogue.version_specs(sc.MODEL, "v1", "v2")
    )
    sup = ctx.supervisor
    sup.start(sc.ROUTER, "router", "--instance", "chaos-r1")
    for name, version, instance in (
        (sc.WORKER_V1, "v1", "chaos-v1a"),
        (sc.WORKER_V1B, "v1", "chaos-v1b"),
        (sc.WORKER_V2, "v2", "chaos-v2"),
    ):
        sup.start(name, *_worker_args(version, instance))
    sup.start(sc.EVALUATOR, "evaluator")
    ctx.control.send(
        sc.MODEL,
        "start",
        baseline_version="v1",
        canary_version="v2",
        steps_bp=PLAN.steps_bp,
        plan_json=PLAN.to_json(),
        reason="chaos run",
        wait=120,
    )
    # A short load first: every agent has joined its group and answers.
    _drive(settings, rate=50, seconds=2, id_prefix="warmup-", timeout=180)


def _worker_args(version: str, instance: str) -> tuple[str, ...]:
    # The fault adapter obeys the markers of the requests the code faults send.
    return ("worker", "--model", sc.MODEL, "--version", version, "--adapter", "noop:",
            "--instance", instance, "--inject-marked-faults")  # fmt: skip


def _drive(
    settings: Settings, *, rate: float, seconds: float, id_prefix: str, timeout: float
) -> None:
    watch = ResultWatch(settings)
    watch.start()
    load = SteadyLoad(settings, sc.MODEL, rate=rate, seconds=seconds, id_prefix=id_prefix)
    load.start()
    load.join()
    answered = watch.wait_for(load.sent, timeout)
    watch.stop()
    if not answered:
        raise ChaosError(f"the {id_prefix} load was not answered within {timeout:g}s")


def _quiet(settings: Settings) -> Settings:
    """Settings for this run's own clients: a broker down is expected, not worth a log line
    per connection attempt."""
    return settings.with_overrides(extra_config={**settings.extra_config, "log_level": "2"})


def _run_one(
    settings: Settings, ctx: sc.Context, scenario: sc.Scenario, options: ChaosOptions
) -> ScenarioOutcome:
    before = ctx.control.state(sc.MODEL)
    since = utc_now()
    scenario.prepare(ctx)
    settings = _quiet(settings)
    ctx.injector.reset()
    faults = FaultWatch(settings)
    faults.start()
    watch = ResultWatch(settings)
    watch.start()
    load = SteadyLoad(
        settings,
        sc.MODEL,
        rate=options.rate,
        seconds=options.seconds,
        id_prefix=f"{scenario.name}-",
    )
    load.start()
    time.sleep(options.seconds / 3)
    fault_at = time.monotonic()
    scenario.fault(ctx)
    exited: set[str] = set()
    while load.is_alive():
        load.join(1.0)
        exited |= _restart_exited(ctx.supervisor)
    drain_until = time.monotonic() + options.drain_timeout
    while not watch.wait_for(load.sent, 1.0) and time.monotonic() < drain_until:
        exited |= _restart_exited(ctx.supervisor)
    watch.stop()
    expected = ctx.injector.expected
    problems = faults.wait_for(expected, max(10.0, drain_until - time.monotonic()))
    report = audit(settings, since=since, timeout=10)
    # Settled: no late second answer or dead letter may have arrived meanwhile.
    problems = faults.problems(expected)
    faults.stop()
    exited |= _restart_exited(ctx.supervisor)
    scenario.cleanup(ctx)
    after = ctx.control.state(sc.MODEL)
    state_ok, detail = _state_ok(before, after, scenario)
    if scenario.needs_cluster and ctx.cluster is not None:
        detail = "; ".join(d for d in (ctx.cluster.last, detail) if d)
    failed = {p.split(":", 1)[0] for p in problems}
    if problems:
        detail = "; ".join([detail, *problems[:5]]).strip("; ")
    return ScenarioOutcome(
        scenario=scenario.name,
        requests=report.accounting.requests,
        lost=report.lost,
        duplicated=report.duplicated,
        orphans=len(report.accounting.orphans),
        recovery_s=recovery_seconds(load.sent, watch.served, fault_at),
        state_ok=state_ok,
        rate=round(load.achieved_rate, 1),
        exited=tuple(sorted(exited)),
        detail=detail,
        injected=len(expected),
        refused=len(expected) - len(failed),
    )


def _restart_exited(sup: Supervisor) -> set[str]:
    """Restart the agents that exited on their own (as they do on a fatal Kafka error), as a
    process supervisor would; the outcome lists them."""
    exited = set(sup.exited())
    for name in exited:
        sup.restart(name)
    return exited


def _state_ok(
    before: RolloutState | None, after: RolloutState | None, scenario: sc.Scenario
) -> tuple[bool, str]:
    if before is None or after is None:
        return False, "no rollout state"
    if scenario.expected_phase is not None:
        ok = after.phase is scenario.expected_phase and after.rollout_id == before.rollout_id
        return ok, f"phase {after.phase.value}"
    same = all(
        getattr(before, f) == getattr(after, f)
        for f in ("rollout_id", "phase", "weight_bp", "step_index", "stable_version")
    )
    return same, "" if same else f"{before.phase.value}@{before.weight_bp} -> " \
        f"{after.phase.value}@{after.weight_bp}"  # fmt: skip


def summary(outcomes: Sequence[ScenarioOutcome], options: ChaosOptions) -> dict[str, Any]:
    """The JSON last line: per scenario, requests, lost, duplicated, recovery, state."""
    rows = [{**asdict(o), "exited": list(o.exited), "ok": o.ok} for o in outcomes]
    return {"rate_target": options.rate, "seconds": options.seconds, "scenarios": rows,
            "ok": all(o.ok for o in outcomes) and bool(outcomes)}  # fmt: skip


def _format(o: ScenarioOutcome) -> str:
    rec = "not recovered" if o.recovery_s is None else f"recovered in {o.recovery_s:.1f}s"
    exited = f", exited and restarted: {', '.join(o.exited)}" if o.exited else ""
    state = "state ok" if o.state_ok else f"STATE CHANGED ({o.detail})"
    verdict = "ok" if o.ok else "FAILED"
    refused = ""
    if o.injected:
        refused = f", {o.refused}/{o.injected} faulty requests answered and dead-lettered once"
        if o.refused != o.injected:
            refused += f" ({o.detail})"
    return (
        f"{o.scenario:<28} {verdict:<6} {o.requests} requests at {o.rate:.0f}/s, "
        f"{o.lost} lost, {o.duplicated} duplicated, {rec}, {state}{exited}{refused}"
    )
