"""``canary broker start | stop | status`` against a second, throwaway local broker."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from model_canary.agents.broker import LocalBroker
from model_canary.streams.settings import Settings

pytestmark = pytest.mark.integration


def _free_port_pair() -> int:
    """Two free consecutive ports below the range the kernel gives outgoing connections
    (``ip_local_port_range``): a port from that range, free when picked, can be taken as a
    client's source port before the broker binds it (a parallel test's clients, or the agents
    waiting for this very broker), and the broker then fails with "Address already in use"."""
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    pick = random.Random()
    for _ in range(200):
        port = pick.randrange(max(1024, low - 12_000), low - 1)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two free consecutive ports")


def _canary(*args: str, env_state: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "model_canary.agents.cli.main",
            "broker",
            *args,
            "--broker-port",
            str(port),
            "--state-dir",
            str(env_state),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_start_twice_is_harmless_and_stop_leaves_no_process(tmp_path: Path) -> None:
    port = _free_port_pair()
    broker = LocalBroker(Settings.from_env(broker_port=port, state_dir=tmp_path))
    try:
        first = _canary("start", env_state=tmp_path, port=port)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "started in" in first.stdout
        pid = broker.pid()
        assert pid is not None

        second = _canary("start", env_state=tmp_path, port=port)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "already running" in second.stdout
        assert broker.pid() == pid, "a second start must not start another broker"

        status = _canary("status", env_state=tmp_path, port=port)
        assert status.returncode == 0 and "answering" in status.stdout

        # A stop or status for another port of the same state folder touches nothing and
        # names the port that runs (a broker's home is STATE_DIR/broker-PORT).
        for action in ("stop", "status"):
            wrong = _canary(action, env_state=tmp_path, port=port + 7)
            assert f"add --broker-port {port}" in wrong.stdout, wrong.stdout + wrong.stderr
            assert broker.pid() == pid, f"{action} for another port touched the broker"

        stop = _canary("stop", env_state=tmp_path, port=port)
        assert stop.returncode == 0 and "stopped" in stop.stdout
        assert broker._find_pids() == [], "a broker process survived stop"
        assert (
            not Path(f"/proc/{pid}").exists()
            or b"kafka.Kafka" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        )

        down = _canary("status", env_state=tmp_path, port=port)
        assert down.returncode == 1 and "down" in down.stdout

        # Storage is formatted once: a restart reuses it and keeps the cluster id.
        cluster_id = (broker.home / "cluster.id").read_text()
        restart = _canary("start", env_state=tmp_path, port=port)
        assert restart.returncode == 0, restart.stdout + restart.stderr
        assert (broker.home / "cluster.id").read_text() == cluster_id
    finally:
        broker.stop()
    assert broker._find_pids() == []


def test_existing_cluster_starts_nothing_locally(broker_settings: Settings, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_canary.agents.cli.main",
            "broker",
            "start",
            "--bootstrap",
            broker_settings.bootstrap_servers,
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "nothing local" in result.stdout
    assert not any(tmp_path.iterdir()), "no local state may be created for an existing cluster"


def test_start_on_a_busy_port_fails_clearly(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = _canary("start", env_state=tmp_path, port=port)
    assert result.returncode == 2
    assert "already in use" in result.stderr
