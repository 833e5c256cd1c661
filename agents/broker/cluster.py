"""A multi-node KRaft cluster on loopback, from the same Maven artifacts as the single broker:
every node is a combined broker and controller (the controller quorum is all the nodes), and
the project's topics get three replicas with ``min.insync.replicas=2``, as on the clusters
users run.

Ports, from the base port ``P`` and ``N`` nodes: node ``i`` (1..N) serves clients on
``P + i - 1`` and its controller on ``P + N + i - 1``. State lives under
``STATE_DIR/cluster-P/node-i``, with one cluster id for all nodes.

>>> from pathlib import Path
>>> cluster = LocalCluster(Settings(broker_port=39100, state_dir=Path("/tmp/canary-doc")), 3)
>>> cluster.bootstrap
'127.0.0.1:39100,127.0.0.1:39101,127.0.0.1:39102'
>>> [n.controller_port for n in cluster.nodes], cluster.nodes[2].home.name
([39103, 39104, 39105], 'node-3')
>>> cluster.client_settings().replication_factor
3
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time

from confluent_kafka import KafkaException

from model_canary.agents.broker.local import LocalBroker, _alive, _signal, cluster_id_in
from model_canary.agents.kafka.admin import Admin
from model_canary.streams.errors import BrokerError
from model_canary.streams.settings import Settings

__all__ = ["ClusterNode", "LocalCluster"]

HEAP = "448m"
REPLICATION = 3
MIN_ISR = 2


class ClusterNode(LocalBroker):
    """One node of a :class:`LocalCluster` (a :class:`LocalBroker` with the cluster's
    configuration)."""

    def __init__(self, cluster: LocalCluster, node_id: int) -> None:
        n = len(cluster.ports)
        port = cluster.ports[node_id - 1]
        super().__init__(cluster.settings.with_overrides(broker_port=port))
        self.cluster = cluster
        self.node_id = node_id
        self.controller_port = cluster.base + n + node_id - 1
        self.home = cluster.home / f"node-{node_id}"
        self.heap = cluster.heap

    def _properties(self) -> dict[str, str]:
        props = super()._properties()
        replicas = str(min(REPLICATION, len(self.cluster.ports)))
        min_isr = str(min(MIN_ISR, len(self.cluster.ports)))
        props.update(
            {
                "node.id": str(self.node_id),
                "controller.quorum.voters": self.cluster.voters,
                # Every topic, internal ones included, has three replicas and accepts a write
                # once two have it: one node may fail without losing or refusing anything.
                "default.replication.factor": replicas,
                "min.insync.replicas": min_isr,
                "offsets.topic.replication.factor": replicas,
                "offsets.topic.num.partitions": "6",
                "transaction.state.log.replication.factor": replicas,
                "transaction.state.log.min.isr": min_isr,
                "transaction.state.log.num.partitions": "6",
                "share.coordinator.state.topic.replication.factor": replicas,
                "share.coordinator.state.topic.min.isr": min_isr,
                "num.io.threads": "3",
                "num.replica.fetchers": "1",
            }
        )
        return props

    def _cluster_id(self) -> str:
        return self.cluster.cluster_id()


class LocalCluster:
    """``nodes`` combined KRaft nodes on 127.0.0.1 (see the module docs).

    ``client_settings()`` reach the whole cluster and create topics with three replicas.
    """

    def __init__(self, settings: Settings, nodes: int = 3, heap: str = HEAP) -> None:
        if not 1 <= nodes <= 9:
            raise BrokerError(f"a local cluster has 1 to 9 nodes, not {nodes}")
        self.settings = settings
        self.base = settings.broker_port
        self.ports = [self.base + i for i in range(nodes)]
        self.home = settings.state_dir / f"cluster-{self.base}"
        self.heap = heap
        self.nodes = [ClusterNode(self, i + 1) for i in range(nodes)]
        self.bootstrap = ",".join(n.bootstrap for n in self.nodes)
        self.voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)

    def cluster_id(self) -> str:
        """One id for every node, made once and kept in the cluster's folder."""
        return cluster_id_in(self.home)

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id - 1]

    def client_settings(self) -> Settings:
        """Settings that reach every node, creating topics with the cluster's replication."""
        return self.settings.with_overrides(
            bootstrap=self.bootstrap, replication_factor=min(REPLICATION, len(self.nodes))
        )

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> None:
        """Start every node not running yet (all at once: a node waits for a quorum of
        controllers), then wait until every node is in the cluster's metadata."""
        procs = {n.node_id: n.launch() for n in self.nodes}
        self.wait_ready(timeout, procs)

    def wait_ready(
        self,
        timeout: float = 180.0,
        procs: dict[int, subprocess.Popen[bytes] | None] | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node_id, proc in (procs or {}).items():
                if proc is not None and proc.poll() is not None:
                    raise BrokerError(
                        f"node {node_id} exited with code {proc.returncode} during start-up:\n"
                        + self.node(node_id).log_tail()
                    )
            if len(self.brokers()) == len(self.nodes):
                return
            time.sleep(0.5)
        tails = "\n".join(n.log_tail(10) for n in self.nodes)
        raise BrokerError(
            f"the cluster at {self.bootstrap} was not up within {timeout:.0f}s\n{tails}"
        )

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop every node (SIGTERM to all, SIGKILL after ``timeout``); True if any ran."""
        pids = {p for n in self.nodes for p in [*n._find_pids(), n.pid()] if p is not None}
        for p in pids:
            _signal(p, signal.SIGCONT)  # a paused node cannot handle SIGTERM
            _signal(p, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        stopped = False
        for n in self.nodes:
            stopped |= n.stop(timeout=1.0)
        return stopped or bool(pids)

    def running(self) -> list[int]:
        """The ids of the nodes whose process is alive."""
        return [n.node_id for n in self.nodes if n.pid() is not None]

    # -- what a fault needs --------------------------------------------------------------
    def brokers(self, timeout: float = 3.0) -> set[int]:
        """The node ids the cluster's metadata lists as brokers (empty if none answers)."""
        admin = Admin(self.client_settings())
        try:
            md = admin.client.list_topics(timeout=timeout)
        except KafkaException:
            return set()
        return set(md.brokers)

    def leader_of(self, topic: str, partition: int) -> int:
        """The node that leads ``topic[partition]`` now."""
        md = Admin(self.client_settings()).client.list_topics(topic, timeout=10)
        return int(md.topics[topic].partitions[partition].leader)

    def active_controller(self) -> int:
        """The node whose controller leads the metadata quorum, from the quorum state every
        node keeps on disk (the newest leader epoch wins)."""
        best: tuple[int, int] | None = None
        for n in self.nodes:
            path = n.data_dir / "__cluster_metadata-0" / "quorum-state"
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(path.read_text())
                epoch, leader = int(state.get("leaderEpoch", -1)), int(state.get("leaderId", -1))
                if leader > 0 and (best is None or epoch > best[0]):
                    best = (epoch, leader)
        if best is None:
            raise BrokerError(f"no node of {self.home} knows the quorum's leader")
        return best[1]

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no controlled shutdown."""
        for p in self._pids(node_id):
            _signal(p, signal.SIGKILL)

    def pause(self, node_id: int) -> None:
        for p in self._pids(node_id):
            _signal(p, signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        for p in self._pids(node_id):
            _signal(p, signal.SIGCONT)

    def restart(self, node_id: int, timeout: float = 120.0) -> None:
        """Start a stopped or killed node again and wait until it is back in the metadata."""
        node = self.node(node_id)
        node.stop(timeout=1.0)  # reaps a killed process and removes its pid file
        proc = node.launch()
        self.wait_ready(timeout, {node_id: proc})

    def wait_in_sync(self, topics: list[str], timeout: float = 120.0) -> bool:
        """Wait until every partition of ``topics`` has all its replicas in sync again (a
        restarted node has caught up); False if ``timeout`` passed first."""
        admin = Admin(self.client_settings())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                md = admin.client.list_topics(timeout=5)
            except KafkaException:
                time.sleep(0.5)
                continue
            behind = [
                (name, p.id)
                for name in topics
                if name in md.topics
                for p in md.topics[name].partitions.values()
                if set(p.isrs) != set(p.replicas) or p.leader < 0
            ]
            if not behind:
                return True
            time.sleep(0.5)
        return False

    def _pids(self, node_id: int) -> list[int]:
        node = self.node(node_id)
        pids = set(node._find_pids())
        pid = node.pid()
        if pid is not None:
            pids.add(pid)
        return sorted(pids)
