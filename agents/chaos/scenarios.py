"""The faults, one function each: what to break and how it comes back.

A fault runs while the load is on; it returns when the faulty part was restarted (the
measurement goes on until the backlog is answered).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from model_canary.agents.broker import LocalBroker
from model_canary.agents.chaos.cluster_faults import ClusterFaults
from model_canary.agents.chaos.code_faults import REQUESTS_LIMIT, RESULTS_LIMIT, Expected, Injector
from model_canary.agents.chaos.supervisor import Supervisor
from model_canary.agents.client.control import ControlClient
from model_canary.streams.messages import Phase

MODEL = "iris"
# Slightly longer than the agents' consumer session timeout (agents/kafka/eos.py: 10 s).
PAUSE_S = 15.0
DOWN_S = 1.0

ROUTER, ROUTER_2 = "router", "router-2"
WORKER_V1, WORKER_V1B, WORKER_V2, EVALUATOR = "worker-v1", "worker-v1b", "worker-v2", "evaluator"


@dataclass
class Context:
    """What a fault acts on."""

    supervisor: Supervisor
    control: ControlClient
    broker: LocalBroker | None  # None unless this chaos run started the broker
    injector: Injector  # sends the requests that break code, and remembers them
    cluster: ClusterFaults | None = None  # with canary chaos --cluster: its nodes' faults


def _kill_restart(name: str) -> Callable[[Context], None]:
    def fault(ctx: Context) -> None:
        ctx.supervisor.kill(name)
        time.sleep(DOWN_S)
        ctx.supervisor.restart(name)

    return fault


def _pause_worker(ctx: Context) -> None:
    ctx.supervisor.pause(WORKER_V1B)
    time.sleep(PAUSE_S)
    ctx.supervisor.resume(WORKER_V1B)


def _broker_restart(ctx: Context) -> None:
    assert ctx.broker is not None
    ctx.broker.stop()
    ctx.broker.start()


def _second_router_prepare(ctx: Context) -> None:
    ctx.supervisor.start(ROUTER_2, "router", "--instance", "chaos-r2")
    # Both routers in the group before the load: the fault, not the join, is measured.
    ctx.supervisor.wait_for_log(ROUTER_2, "router assigned")


def _kill_first_router(ctx: Context) -> None:
    ctx.supervisor.kill(ROUTER)


def _back_to_one_router(ctx: Context) -> None:
    ctx.supervisor.restart(ROUTER)
    ctx.supervisor.stop(ROUTER_2)
    # The next scenario starts from a steady state, not from a router still starting.
    ctx.supervisor.wait_for_log(ROUTER, "router assigned")


def _canary_dies_during_rollback(ctx: Context) -> None:
    ctx.supervisor.kill(WORKER_V2)
    ctx.control.send(MODEL, "rollback", reason="chaos: canary worker dead during rollback")
    time.sleep(DOWN_S)
    ctx.supervisor.restart(WORKER_V2)


def _nothing(_ctx: Context) -> None:
    return None


# -- faults that break code (see code_faults) ----------------------------------------------
def _marked(name: str, fault: str, reason: str) -> Callable[[Context], None]:
    def inject(ctx: Context) -> None:
        ctx.injector.marked(name, fault, Expected(reason))

    return inject


def _oversized_requests(ctx: Context) -> None:
    ctx.injector.oversized_requests("oversized-request")


def _poison(ctx: Context) -> None:
    ctx.injector.poison("poison-message")


def _big_requests_allowed(ctx: Context) -> None:
    ctx.injector.limit(ctx.injector.catalogue.requests, REQUESTS_LIMIT)


def _requests_limit_back(ctx: Context) -> None:
    ctx.injector.limit(ctx.injector.catalogue.requests, None)


def _results_limit_lowered(ctx: Context) -> None:
    ctx.injector.limit(ctx.injector.catalogue.results, RESULTS_LIMIT)


def _results_limit_back(ctx: Context) -> None:
    ctx.injector.limit(ctx.injector.catalogue.results, None)


# -- faults of a cluster (see cluster_faults) ------------------------------------------------
def _on_cluster(fault: Callable[[ClusterFaults], None]) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        assert ctx.cluster is not None
        fault(ctx.cluster)

    return run


_settle = _on_cluster(ClusterFaults.settle)


@dataclass(frozen=True)
class Scenario:
    """A fault; ``prepare`` runs before the load, ``cleanup`` after the audit.

    ``expected_phase`` is the rollout phase afterwards (``None``: unchanged)."""

    name: str
    fault: Callable[[Context], None]
    prepare: Callable[[Context], None] = _nothing
    cleanup: Callable[[Context], None] = _nothing
    expected_phase: Phase | None = None
    needs_own_broker: bool = False
    needs_cluster: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("router-kill", _kill_restart(ROUTER)),
    Scenario("worker-kill-baseline", _kill_restart(WORKER_V1)),
    Scenario("worker-kill-canary", _kill_restart(WORKER_V2)),
    Scenario("evaluator-kill", _kill_restart(EVALUATOR)),
    Scenario("worker-pause", _pause_worker),
    Scenario(
        "router-failover",
        _kill_first_router,
        prepare=_second_router_prepare,
        cleanup=_back_to_one_router,
    ),
    Scenario("broker-restart", _broker_restart, needs_own_broker=True),
    Scenario("handler-exception", _marked("handler-exception", "bad-output", "internal-error")),
    Scenario("oversized-output", _marked("oversized-output", "huge-output", "too-large")),
    Scenario(
        "produce-error",
        _marked("produce-error", "large-output", "too-large"),
        prepare=_results_limit_lowered,
        cleanup=_results_limit_back,
    ),
    Scenario(
        "oversized-request",
        _oversized_requests,
        prepare=_big_requests_allowed,
        cleanup=_requests_limit_back,
    ),
    Scenario("poison-message", _poison),
    # Last: it leaves the rollout rolled back.
    Scenario(
        "canary-kill-during-rollback",
        _canary_dies_during_rollback,
        expected_phase=Phase.ROLLED_BACK,
    ),
)

CLUSTER_SCENARIOS: tuple[Scenario, ...] = tuple(
    Scenario(name, _on_cluster(fault), cleanup=_settle, needs_cluster=True)
    for name, fault in (
        ("leader-kill", ClusterFaults.kill_busiest_leader),
        ("controller-kill", ClusterFaults.kill_active_controller),
        ("rolling-restart", ClusterFaults.rolling_restart),
        ("broker-stall", ClusterFaults.stall_busiest_leader),
    )
)

#: What ``canary chaos`` runs by default, and with ``--cluster N``.
BROKER_NAMES = tuple(s.name for s in SCENARIOS)
CLUSTER_NAMES = tuple(s.name for s in CLUSTER_SCENARIOS)
ALL: tuple[Scenario, ...] = (*CLUSTER_SCENARIOS, *SCENARIOS)
NAMES = tuple(s.name for s in ALL)
