"""A three-node KRaft cluster from ``canary broker start --nodes 3`` (the ``local_cluster``
fixture): the project's topics get three replicas and ``min.insync.replicas=2``, and the
leader of the busiest partition SIGKILLed under load with a rollout in progress loses and
duplicates nothing and leaves the rollout as it was.

About two minutes on two cores, so off unless ``CANARY_TEST_CLUSTER=1`` (the suite must stay
under 15 minutes); ``canary chaos --cluster 3 --json`` runs every cluster scenario at
2,000 requests/s. Ports: ``CANARY_TEST_CLUSTER_PORT`` (default 19300) and the next five.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_canary.agents.broker.cluster import LocalCluster
from model_canary.agents.chaos.run import ChaosOptions, run_chaos
from model_canary.agents.kafka.admin import Admin
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("CANARY_TEST_CLUSTER"),
        reason="the 3-node cluster test takes about two minutes: CANARY_TEST_CLUSTER=1",
    ),
]

CLUSTER_PORT = int(os.environ.get("CANARY_TEST_CLUSTER_PORT", "19300"))


def _broker(action: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_canary.agents.cli.main", "broker", action, "--nodes", "3",
         "--broker-port", str(CLUSTER_PORT), "--state-dir", str(state)],
        env={k: v for k, v in os.environ.items() if not k.startswith("CANARY_")},
        cwd=str(ROOT), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three nodes started with ``canary broker start --nodes 3``, stopped at the end."""
    state = tmp_path_factory.mktemp("cluster")
    cluster = LocalCluster(Settings.from_env({}, broker_port=CLUSTER_PORT, state_dir=state))
    started = _broker("start", state)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"CANARY_BOOTSTRAP={cluster.bootstrap}" in started.stdout
        yield cluster
    finally:
        stopped = _broker("stop", state)
        assert stopped.returncode == 0, stopped.stderr
        assert cluster.running() == []


def test_three_nodes_and_the_projects_topics_have_three_replicas(
    local_cluster: LocalCluster,
) -> None:
    assert local_cluster.brokers() == {1, 2, 3}
    assert local_cluster.active_controller() in (1, 2, 3)
    settings = local_cluster.client_settings().with_overrides(topic_prefix="replicated")
    admin = Admin(settings)
    catalogue = TopicCatalogue(settings.topic_prefix, 3)
    admin.ensure_topics(catalogue.core_specs())
    md = admin.client.list_topics(timeout=10)
    for name in (catalogue.requests, catalogue.results, catalogue.control):
        for partition in md.topics[name].partitions.values():
            assert len(partition.replicas) == 3 and set(partition.isrs) == {1, 2, 3}
        assert admin.topic_config(name)["min.insync.replicas"] == "2"
    for internal in ("__consumer_offsets", "__transaction_state"):
        if internal in md.topics:
            assert all(len(p.replicas) == 3 for p in md.topics[internal].partitions.values())


def test_the_busiest_partitions_leader_killed_loses_and_duplicates_nothing(
    local_cluster: LocalCluster,
) -> None:
    options = ChaosOptions(scenarios=("leader-kill",), rate=300, seconds=12, cluster=3)
    outcomes = run_chaos(local_cluster.settings, options, cluster=local_cluster)
    assert [o.scenario for o in outcomes] == ["leader-kill"]
    outcome = outcomes[0]
    assert outcome.requests >= 300 * 12 * 0.9, outcome
    assert (outcome.lost, outcome.duplicated, outcome.orphans) == (0, 0, 0), outcome
    assert outcome.state_ok and outcome.recovery_s is not None, outcome
    assert "leader of" in outcome.detail, outcome
    assert sorted(local_cluster.running()) == [1, 2, 3]
