"""Start, stop and inspect a single-node KRaft broker (combined broker and controller) on
127.0.0.1, with all data and logs under one state folder.

>>> broker = LocalBroker(Settings(broker_port=19092, state_dir=Path("/tmp/canary-doc")))
>>> broker.home
PosixPath('/tmp/canary-doc/broker-19092')
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from model_canary.agents.broker.install import KAFKA_VERSION, ensure_libs
from model_canary.agents.broker.security import BrokerSecurity
from model_canary.agents.kafka.admin import Admin
from model_canary.streams.errors import BrokerError
from model_canary.streams.settings import Settings, read_properties

__all__ = ["KAFKA_VERSION", "BrokerSecurity", "BrokerStatus", "LocalBroker"]

_LOG4J = """\
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {logs}/server.log
appender.file.filePattern = {logs}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    running: bool
    answering: bool
    pid: int | None
    bootstrap: str
    home: Path

    def describe(self) -> str:
        if self.answering:
            return f"up: Kafka {KAFKA_VERSION} answering at {self.bootstrap} (pid {self.pid})"
        if self.running:
            return f"starting or stuck: pid {self.pid} alive but {self.bootstrap} not answering"
        return f"down: no local broker for {self.bootstrap} (state in {self.home})"


class LocalBroker:
    """The development broker for ``settings.broker_port`` under ``settings.state_dir``.

    With ``security`` its listener takes SASL/SCRAM users only and ACLs decide what each may
    do (see :mod:`model_canary.agents.broker.security`); without it, PLAINTEXT and no authorization.
    """

    def __init__(self, settings: Settings, security: BrokerSecurity | None = None) -> None:
        self.settings = settings
        self.security = security
        self.port = settings.broker_port
        self.controller_port = _controller_port(self.port)
        self.home = settings.state_dir / f"broker-{self.port}"
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.heap = "512m"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def admin_file(self) -> Path:
        """A secured broker's own client settings (its admin's), so that status and stop work
        from a command that was not given the security flags. Readable by its owner only."""
        return self.home / "admin.properties"

    # -- queries -------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The broker's pid when its process is alive, else ``None``."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and self._is_ours(pid) else None

    def answering(self, timeout: float = 2.0) -> bool:
        # The TCP probe first: librdkafka logs every refused connection loudly.
        if not _port_in_use(self.port):
            return False
        return Admin(self.admin_settings()).ping(timeout)

    def admin_settings(self) -> Settings:
        """Settings that reach this broker (as its super user when it is secured)."""
        if self.security is not None:
            creds = self.security.client_config(self.security.admin)
        elif self.admin_file.exists():
            creds = read_properties(self.admin_file)
        else:
            return self.settings.with_overrides(bootstrap=self.bootstrap)
        extra = {**self.settings.extra_config, **creds}
        return self.settings.with_overrides(bootstrap=self.bootstrap, extra_config=extra)

    def status(self) -> BrokerStatus:
        pid = self.pid()
        answering = pid is not None and self.answering()
        return BrokerStatus(pid is not None, answering, pid, self.bootstrap, self.home)

    def log_tail(self, lines: int = 30) -> str:
        chunks: list[str] = []
        for name in ("server.log", "stdout.log"):
            path = self.logs_dir / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(chunks) or f"(no log under {self.logs_dir})"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 90.0, heap: str | None = None) -> BrokerStatus:
        """Start the broker unless it is already up; return once it answers metadata requests.

        Idempotent: a second call finds the running broker and returns its status.
        """
        proc = self.launch(heap)
        return self._wait_ready(timeout, proc)

    def launch(self, heap: str | None = None) -> subprocess.Popen[bytes] | None:
        """Start the broker's process unless it runs already (``None`` then); do not wait."""
        if self.pid() is not None:
            return None
        if _port_in_use(self.port) or _port_in_use(self.controller_port):
            raise BrokerError(
                f"port {self.port} or {self.controller_port} is already in use by another "
                "process: stop it, choose another --broker-port, or use it with --bootstrap"
            )
        self._check_security_unchanged()
        java = _java()
        libs = ensure_libs(self.settings.cache_dir)
        self._write_config()
        self._format(java, libs)
        heap = heap or self.heap
        cmd = [
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dcanary.broker.home={self.home}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.home / "server.properties"),
        ]
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with open(self.logs_dir / "stdout.log", "ab") as out:
            # A new session: the broker outlives this command and ignores its terminal's ^C.
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); True if one was running.

        Afterwards no java process of this broker remains.
        """
        pids = set(self._find_pids())
        pid = self.pid()
        if pid is not None:
            pids.add(pid)
        for p in pids:
            _signal(p, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in pids:
            if _alive(p):
                _signal(p, signal.SIGKILL)
        for p in pids:
            _reap(p)
        self.pid_file.unlink(missing_ok=True)
        return bool(pids)

    # -- internals -----------------------------------------------------------------------
    def _check_security_unchanged(self) -> None:
        """SCRAM users are written into the storage when it is formatted: a broker formatted
        secured cannot start open, nor one formatted open start secured."""
        if not (self.data_dir / "meta.properties").exists():
            return
        secured = self.admin_file.exists()
        if secured and self.security is None:
            raise BrokerError(
                f"the broker in {self.home} was set up with SCRAM users: start it with the same "
                "--scram-users (and --tls) flags, or use another --state-dir"
            )
        if not secured and self.security is not None:
            raise BrokerError(
                f"the broker in {self.home} was set up without SCRAM users, which are stored "
                "when it is first formatted: use another --state-dir for a secured broker"
            )

    def _wait_ready(
        self, timeout: float, proc: subprocess.Popen[bytes] | None = None
    ) -> BrokerStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {proc.returncode} during start-up:\n"
                    + self.log_tail()
                )
            if self.answering(timeout=1.0):
                return self.status()
            time.sleep(0.2)
        raise BrokerError(
            f"the broker did not answer at {self.bootstrap} within {timeout:.0f}s:\n"
            + self.log_tail()
        )

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        props = self._properties()
        server_properties = self.home / "server.properties"
        if self.security is not None:
            props.update(self.security.server_properties(self.port, self.controller_port))
            # They hold the admin password: readable by their owner only.
            admin = self.security.client_config(self.security.admin)
            for path in (server_properties, self.admin_file):
                path.touch(mode=0o600)
                path.chmod(0o600)
            self.admin_file.write_text("".join(f"{k}={v}\n" for k, v in admin.items()))
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        server_properties.write_text(text)
        (self.home / "log4j2.properties").write_text(_LOG4J.format(logs=self.logs_dir))

    def _properties(self) -> dict[str, str]:
        """The server.properties of a single combined node (a cluster's nodes add theirs)."""
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            # One broker: every internal topic has one replica, and transactions need
            # min ISR 1 (the default 2 makes transactional producers fail).
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "24",
        }

    def _format(self, java: str, libs: Path) -> None:
        """Format the storage once; an already formatted folder is kept as it is."""
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = self._cluster_id()
        proc = subprocess.run(
            [
                java,
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                "-cp",
                f"{libs}/*",
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                # The "=" form: an id may start with "-", which would read as an option.
                f"--cluster-id={cluster_id}",
                "-c",
                str(self.home / "server.properties"),
                *(self.security.format_arguments() if self.security else ()),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BrokerError(f"formatting {self.data_dir} failed:\n{proc.stdout}{proc.stderr}")

    def _cluster_id(self) -> str:
        """The id the storage is formatted with, made once and kept in ``cluster.id``."""
        return cluster_id_in(self.home)

    def _find_pids(self) -> list[int]:
        """Every live process started for this broker home (also one whose pid file is lost)."""
        marker = f"-Dcanary.broker.home={self.home}".encode()
        found: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in args:
                found.append(int(entry.name))
        return found

    def _is_ours(self, pid: int) -> bool:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"-Dcanary.broker.home={self.home}".encode() in args


def running_ports(state_dir: Path, exclude: int | None = None) -> list[int]:
    """Ports of the development brokers of ``state_dir`` whose process is alive (``exclude``:
    one port left out), read from their homes ``broker-PORT``.

    >>> running_ports(Path("/nonexistent"))
    []
    """
    ports = []
    for home in sorted(state_dir.glob("broker-*")):
        port = home.name.removeprefix("broker-")
        if not port.isdigit() or int(port) == exclude:
            continue
        broker = LocalBroker(Settings(broker_port=int(port), state_dir=state_dir))
        if broker.pid() is not None:
            ports.append(int(port))
    return ports


def cluster_id_in(folder: Path) -> str:
    """The cluster id kept in ``folder/cluster.id``, made the first time."""
    cluster_file = folder / "cluster.id"
    if not cluster_file.exists():
        folder.mkdir(parents=True, exist_ok=True)
        cluster_file.write_text(new_cluster_id() + "\n")
    return cluster_file.read_text().strip()


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in URL-safe base64 without padding, never starting
    with "-" (as Kafka's own ``random-uuid`` guarantees, so command lines parse it)."""
    while True:
        raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not raw.startswith("-"):
            return raw


def _controller_port(port: int) -> int:
    return port + 1 if port < 65535 else port - 1


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "Java 17 or newer is needed to run the local Kafka broker "
            "(apt-get install openjdk-17-jre-headless)"
        )
    return java


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
