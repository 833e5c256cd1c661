from __future__ import annotations

from pathlib import Path

import pytest

from model_canary.agents.kafka.config import consumer_config, producer_config
from model_canary.streams.errors import ConfigError
from model_canary.streams.settings import Settings, parse_key_values


def test_env_then_overrides() -> None:
    env = {
        "CANARY_BOOTSTRAP": "kafka-1:9093,kafka-2:9093",
        "CANARY_TOPIC_PREFIX": "ml",
        "CANARY_PARTITIONS": "12",
        "CANARY_STATE_DIR": "/var/tmp/x",
    }
    s = Settings.from_env(env, topic_prefix="override", partitions=None)
    assert s.bootstrap_servers == "kafka-1:9093,kafka-2:9093"
    assert not s.uses_local_broker
    assert s.topic_prefix == "override"
    assert s.partitions == 12
    assert s.state_dir == Path("/var/tmp/x")


def test_local_broker_by_default() -> None:
    s = Settings.from_env({}, broker_port=19999)
    assert s.uses_local_broker and s.bootstrap_servers == "127.0.0.1:19999"


def test_kafka_settings_pass_through_from_env_file_and_flags(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("# TLS\nsecurity.protocol=SSL\nssl.ca.location=/etc/ca.pem\n")
    env = {
        "CANARY_KAFKA_CONFIG_FILE": str(props),
        "CANARY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CANARY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    }
    s = Settings.from_env(env, extra_config={"sasl.username": "alice"})
    assert dict(s.extra_config) == {
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": "/etc/ca.pem",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
    }
    producer = producer_config(s, "router", transactional_id="router-1")
    consumer = consumer_config(s, "router", "canary-router")
    for config in (producer, consumer):
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.username"] == "alice"
    assert producer["transactional.id"] == "router-1"
    assert consumer["group.id"] == "canary-router"
    assert consumer["isolation.level"] == "read_committed"


def test_required_client_settings_win_over_pass_through() -> None:
    s = Settings.from_env({}, extra_config={"group.id": "hijack", "linger.ms": "50"})
    assert consumer_config(s, "c", "mine")["group.id"] == "mine"
    # Tuning the user passes through does override project defaults.
    assert producer_config(s, "p")["linger.ms"] == "50"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CANARY_PARTITIONS": "three"}, "whole number"),
        ({"CANARY_PARTITIONS": "0"}, "at least 1"),
        ({"CANARY_TOPIC_PREFIX": "bad prefix"}, "topic prefix"),
        ({"CANARY_BROKER_PORT": "70000"}, "outside"),
        ({"CANARY_KAFKA_CONFIG_FILE": "/nonexistent/file"}, "cannot read"),
    ],
)
def test_bad_settings_raise_config_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_parse_key_values() -> None:
    assert parse_key_values(["a.b=1", "c = x=y"]) == {"a.b": "1", "c": "x=y"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_key_values(["novalue"])


def test_cluster_ids_never_start_with_a_dash() -> None:
    from model_canary.agents.broker.local import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_settings_go_to_a_child_process_whole_through_the_environment(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("ops:0123456789abcdef0123\nold:fedcba9876543210fedc\n")
    parent_env = {
        "CANARY_BOOTSTRAP": "k1:9092,k2:9092",
        "CANARY_TOPIC_PREFIX": "ml",
        "CANARY_PARTITIONS": "6",
        "CANARY_REPLICATION_FACTOR": "3",
        "CANARY_COMMIT_INTERVAL_MS": "20",
        "CANARY_LATENCY": "low",
        "CANARY_DELIVERY": "at-least-once",
        "CANARY_MAX_REQUEST_BYTES": "4096",
        "CANARY_STATE_DIR": str(tmp_path / "state"),
        "CANARY_KAFKA_SASL_PASSWORD": "s3cr3t",
        "CANARY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CANARY_CONTROL_KEY_FILE": str(keys),
    }
    settings = Settings.from_env(parent_env)
    env = settings.child_env(
        {"CANARY_FUZZ_MESSAGES": "5"},
        base={"PATH": "/bin", "CANARY_SCHEMA_DIRS": "/schemas", "CANARY_KAFKA_STALE_SETTING": "x"},
    )
    # Unrelated variables stay; a Kafka setting the parent's Settings do not hold is dropped.
    assert env["PATH"] == "/bin" and env["CANARY_SCHEMA_DIRS"] == "/schemas"
    assert "CANARY_KAFKA_STALE_SETTING" not in env and env["CANARY_FUZZ_MESSAGES"] == "5"
    assert env["PYTHONUNBUFFERED"] == "1"
    child = Settings.from_env(env)
    assert child == settings
    assert child.control_keys.key_ids == ("ops", "old")
    assert dict(child.extra_config) == {"sasl.password": "s3cr3t", "security.protocol": "SASL_SSL"}
    # The local broker's settings travel too (no bootstrap: the child finds the same broker).
    local = Settings(broker_port=39999, topic_prefix="x")
    assert Settings.from_env(local.to_env()).bootstrap_servers == "127.0.0.1:39999"


def test_every_setting_has_its_environment_variable() -> None:
    # A field without one would be lost on the way to every agent a launcher starts.
    from dataclasses import fields

    from model_canary.streams import settings as module

    mapped = {
        *module._TEXT_VARS.values(),
        *module._NUMBER_VARS.values(),
        *module._FLOAT_VARS.values(),
        *module._PATH_VARS.values(),
        "extra_config",
        "control_keys",
    }
    assert {f.name for f in fields(Settings)} == mapped
