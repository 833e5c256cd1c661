"""Faults of a three-node cluster (``canary chaos --cluster 3``): a node SIGKILLed while it
leads the busiest partition, the active controller SIGKILLed, every node restarted in turn, and
a node frozen (SIGSTOP) past the session timeouts. Each returns once the node is running again;
:func:`settle` then waits until every partition of the run's topics has all its replicas in
sync, so the next fault starts from a healthy cluster.

The busiest partition is measured, not guessed: the partition of the run's topics whose end
offset grew most over one second of the load.
"""

from __future__ import annotations

import time

from model_canary.agents.audit.reader import RangeReader
from model_canary.agents.broker.cluster import LocalCluster
from model_canary.streams.errors import BrokerError
from model_canary.streams.settings import Settings

# A SIGKILLed node stays down this long: its leaderships move (the controller fences a broker
# after broker.session.timeout.ms, 9 s), clients fail over, then it comes back.
DOWN_S = 5.0
# Longer than the broker session timeout (9 s) and the agents' consumer session timeout (10 s).
STALL_S = 15.0
IN_SYNC_TIMEOUT_S = 180.0


def end_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    """The end offset (high watermark) of every partition of ``topics``."""
    reader = RangeReader(settings, "canary-chaos-offsets")
    try:
        return reader.ends(topics)
    finally:
        reader.close()


def busiest_partition(
    settings: Settings, topics: list[str], window_s: float = 1.0
) -> tuple[str, int, float]:
    """The partition of ``topics`` whose end offset grew most over ``window_s``, and its
    rate in messages per second."""
    before = end_offsets(settings, topics)
    time.sleep(window_s)
    after = end_offsets(settings, topics)
    grown = {tp: after[tp] - before.get(tp, after[tp]) for tp in after}
    if not grown:
        raise BrokerError(f"no partition of {topics} could be measured")
    (topic, partition), n = max(grown.items(), key=lambda item: item[1])
    return topic, partition, n / window_s


class ClusterFaults:
    """The faults of one chaos run's cluster, on its topics."""

    def __init__(self, cluster: LocalCluster, settings: Settings, topics: list[str]) -> None:
        self.cluster = cluster
        self.settings = settings
        self.topics = topics
        #: What the last fault hit, for the outcome's detail.
        self.last = ""

    def kill_busiest_leader(self) -> None:
        topic, partition, rate = busiest_partition(self.settings, self.topics)
        node = self.cluster.leader_of(topic, partition)
        self.last = f"node {node}, leader of {topic}[{partition}] ({rate:.0f} messages/s)"
        self._kill_and_restart(node)

    def kill_active_controller(self) -> None:
        node = self.cluster.active_controller()
        self.last = f"node {node}, the active controller"
        self._kill_and_restart(node)

    def rolling_restart(self) -> None:
        """Each node in turn: stopped gracefully, started, and caught up before the next."""
        done = []
        for node in self.cluster.nodes:
            node.stop()
            self.cluster.restart(node.node_id)
            self._in_sync()
            done.append(str(node.node_id))
        self.last = f"nodes {', '.join(done)} restarted in turn"

    def stall_busiest_leader(self) -> None:
        topic, partition, rate = busiest_partition(self.settings, self.topics)
        node = self.cluster.leader_of(topic, partition)
        self.last = (
            f"node {node}, leader of {topic}[{partition}] ({rate:.0f} messages/s), "
            f"frozen {STALL_S:g}s"
        )
        self.cluster.pause(node)
        try:
            time.sleep(STALL_S)
        finally:
            self.cluster.resume(node)

    def settle(self) -> None:
        """Every node running and in the metadata, every replica in sync."""
        for node_id in range(1, len(self.cluster.nodes) + 1):
            if node_id not in self.cluster.running():
                self.cluster.restart(node_id)
        self.cluster.wait_ready()
        self._in_sync()

    def _kill_and_restart(self, node: int) -> None:
        self.cluster.kill(node)
        time.sleep(DOWN_S)
        self.cluster.restart(node)

    def _in_sync(self) -> None:
        if not self.cluster.wait_in_sync(self.topics, IN_SYNC_TIMEOUT_S):
            raise BrokerError(
                f"replicas of {self.topics} not back in sync within {IN_SYNC_TIMEOUT_S:g}s"
            )
