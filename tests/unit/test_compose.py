"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine): check them by
reading, against the real ``canary`` argument parser, Settings and the Prometheus config."""

from __future__ import annotations

import argparse
import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from model_canary.agents.cli.main import build_parser, main
from model_canary.streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "model-canary:local"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def load_yaml(relative: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / relative).read_text())
    return data


def agent_services() -> dict[str, dict[str, Any]]:
    """The services that run our image (built from ./Dockerfile, entry point ``canary``)."""
    return {n: s for n, s in load_compose()["services"].items() if "build" in s}


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path in the repo, container path) of every ``./`` bind mount."""
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out.append(((ROOT / source).resolve(), target))
    return out


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Service name -> condition (the short list form means ``service_started``)."""
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def canary_invocations(script: str) -> list[list[str]]:
    """The arguments of every ``canary ...`` simple command in a shell script."""
    script = script.replace("\\\n", " ").replace("$$", "$")  # continuations, compose escapes
    found = []
    for line in script.splitlines():
        for part in re.split(r"&&|\|\||;|\|", line):
            words = shlex.split(part, comments=True)
            if words[:1] == ["exec"]:
                words = words[1:]
            if words[:1] == ["canary"]:
                found.append(words[1:])
    return found


def service_commands(service: dict[str, Any]) -> list[list[str]]:
    """``canary`` argument lists a service of our image runs."""
    entrypoint = service.get("entrypoint")
    if entrypoint is None:
        return [[str(arg) for arg in service["command"]]]
    assert entrypoint == ["/bin/sh", "-c"], f"unexpected entrypoint {entrypoint}"
    return canary_invocations(service["command"][0])


def parse(args: list[str]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`canary {shlex.join(args)}` is not a valid canary command line")


def metrics_port(args: argparse.Namespace) -> int | None:
    port: int | None = getattr(args, "metrics_port", None)
    return port


def scrape_targets() -> dict[str, str]:
    """``host:port`` -> job of every static Prometheus target."""
    config = load_yaml("deploy/prometheus/prometheus.yml")
    return {
        target: job["job_name"]
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }


def dockerfile_runs() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line[4:] for line in text.splitlines() if line.startswith("RUN ")]


def test_kafka_service_is_kraft_single_node_with_healthcheck() -> None:
    kafka = load_compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    # Single node: transactions need these at 1.
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == 1
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == 0
    # Every advertised listener is declared, mapped to a protocol, and the host port is published.
    listeners = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    advertised = {item.split("://")[0] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    protocols = {
        item.split(":")[0] for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    }
    assert advertised <= listeners <= protocols
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert "9092:9092" in kafka["ports"]
    check = " ".join(kafka["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in check and "localhost:9092" in check


def test_named_volumes_are_declared() -> None:
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"volume {source} is not declared"


def test_every_service_has_an_image_and_the_expected_roles_exist() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name} has neither image nor build"
    agents = agent_services()
    assert all(s["build"] == "." and s["image"] == IMAGE for s in agents.values())
    roles = {parse(service_commands(s)[-1]).command for s in agents.values()}
    assert {"topics", "model", "router", "evaluator", "worker", "load"} <= roles
    assert {"prometheus", "grafana", "kafka-ui"} <= set(services)
    assert services["load"]["profiles"] == ["load"], "the load generator is optional"


def test_dependencies_exist_are_acyclic_and_wait_for_what_they_need() -> None:
    services = load_compose()["services"]
    graph = {name: depends_on(service) for name, service in services.items()}
    for name, deps in graph.items():
        for target, condition in deps.items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition in CONDITIONS, f"{name} -> {target}: bad condition {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert str(services[target].get("restart")).startswith(("no", "on-failure"))
    done: set[str] = set()
    while len(done) < len(graph):
        ready = {n for n, deps in graph.items() if n not in done and set(deps) <= done}
        assert ready, f"dependency cycle among {sorted(set(graph) - done)}"
        done |= ready
    for name in agent_services():
        if name != "topics":
            assert graph[name]["kafka"] == "service_healthy", name
            assert graph[name]["topics"] == "service_completed_successfully", name
    # Registering needs the router's controller to answer.
    assert "router" in graph["register"]


def test_bind_mounted_paths_exist_in_the_repo() -> None:
    mounts = [m for s in load_compose()["services"].values() for m in bind_mounts(s)]
    assert mounts, "Prometheus and Grafana mount their configuration"
    for host, target in mounts:
        assert host.exists(), f"{host} (mounted at {target}) is missing"
        assert ROOT in host.parents, f"{host} is outside the repository"


def test_published_host_ports_are_unique() -> None:
    published = [
        str(port).rsplit(":", 1)[0].split(":")[-1]
        for service in load_compose()["services"].values()
        for port in service.get("ports", [])
    ]
    assert len(published) == len(set(published)), published


def test_every_agent_metrics_port_is_scraped_and_every_target_is_an_agent() -> None:
    targets = scrape_targets()
    served = {}
    for name, service in agent_services().items():
        for args in service_commands(service):
            port = metrics_port(parse(args))
            if port is not None:
                served[f"{name}:{port}"] = parse(args).command
    assert set(served.values()) >= {"router", "evaluator", "worker"}
    assert set(served) == set(targets), "scrape targets and agents' --metrics-port differ"
    for target, job in targets.items():
        assert job == f"canary-{served[target]}", f"{target} is scraped as {job}"


class _RecordingEnv(dict[str, str]):
    """An environment that remembers which variables were looked up by name."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def settings_reads(var: str, value: str) -> bool:
    """Whether Settings looks ``var`` up, or (prefix variables such as CANARY_KAFKA_*) is
    changed by it."""
    env = _RecordingEnv({var: value})
    changed = Settings.from_env(env) != Settings.from_env({})
    return changed or var in env.read


def test_settings_reads_tells_known_from_unknown_variables() -> None:
    assert settings_reads("CANARY_TOPIC_PREFIX", "canary")  # read, although the default
    assert settings_reads("CANARY_KAFKA_SASL_MECHANISM", "PLAIN")  # a prefix variable
    assert not settings_reads("CANARY_BOOTSTRAP_SERVERS", "kafka:19092")


def test_agent_environment_variables_are_ones_settings_reads() -> None:
    for name, service in agent_services().items():
        for var, value in service["environment"].items():
            assert settings_reads(var, str(value)), f"{name}: Settings ignores {var}"
        assert service["environment"]["CANARY_BOOTSTRAP"] == "kafka:19092"
    kafka_env = load_compose()["services"]["kafka"]["environment"]
    assert "PLAINTEXT://kafka:19092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]


def test_agent_commands_parse_and_agree_on_models() -> None:
    agents = agent_services()
    parsed = {name: [parse(a) for a in service_commands(s)] for name, s in agents.items()}
    workers = [a for runs in parsed.values() for a in runs if a.command == "worker"]
    assert {(w.model, w.version) for w in workers} == {("iris", "v1"), ("iris", "v2")}
    instances = [w.instance for w in workers]
    assert len(set(instances)) == len(instances), "transactional ids must differ"
    created = {mv for a in parsed["topics"] for mv in a.model_version or []}
    assert {f"{w.model}:{w.version}" for w in workers} <= created
    registered = [a for a in parsed["register"] if a.command == "model"]
    assert [(a.model, a.version) for a in registered] == [("iris", "v1")]
    assert [a.model for a in parsed["load"]] == ["iris"]


def test_canary_invocations_reads_shell_scripts() -> None:
    script = "canary status iris\nknown=$$?\n# canary comment\nexec canary model register iris\n"
    assert canary_invocations(script) == [["status", "iris"], ["model", "register", "iris"]]
    assert canary_invocations("pip install . \\\n  && canary demo train --out /m") == [
        ["demo", "train", "--out", "/m"]
    ]


def test_dockerfile_bakes_the_models_the_workers_load(tmp_path: Path) -> None:
    runs = [args for line in dockerfile_runs() for args in canary_invocations(line)]
    assert len(runs) == 1, runs
    args = runs[0]
    out = Path(args[args.index("--out") + 1])
    # Run the Dockerfile's own command into a temporary directory instead of /models.
    assert main([*args[: args.index("--out")], "--out", str(tmp_path)]) == 0
    baked = {p.name for p in tmp_path.iterdir()}
    for service in agent_services().values():
        for call in service_commands(service):
            ns = parse(call)
            if ns.command == "worker":
                kind, path = ns.adapter.split(":", 1)
                assert kind == "sklearn"
                assert Path(path).parent == out and Path(path).name in baked, ns.adapter


def test_dockerfile_copies_only_what_the_build_context_keeps() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^USER (?!root)\w+", text, re.M), "agents run as a non-root user"
    assert 'ENTRYPOINT ["canary"]' in text
    assert "pip install -c constraints.txt '.[sklearn]'" in text and " -e " not in text
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        word
        for line in text.splitlines()
        if line.startswith("COPY ")
        for word in line.split()[1:-1]
    ]
    assert {"pyproject.toml", "README.md", "streams", "agents", "schemas"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: missing"
        hits = [p for p in ignored if fnmatch.fnmatch(source, p.removeprefix("**/"))]
        assert not hits, f"COPY {source} is excluded by .dockerignore {hits}"
