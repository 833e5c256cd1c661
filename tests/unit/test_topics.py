from __future__ import annotations

import pytest

from model_canary.streams.errors import ConfigError
from model_canary.streams.topics import TopicCatalogue, validate_name


def test_names_follow_the_prefix() -> None:
    cat = TopicCatalogue("acme")
    names = [s.name for s in cat.core_specs()]
    assert all(n.startswith("acme.") for n in names)
    assert len(set(names)) == len(names) == 16
    assert cat.shadow_results == "acme.results.shadow"
    assert cat.version_requests("fraud", "v10") == "acme.requests.fraud.v10"
    assert cat.preflight_requests("fraud", "v10") == "acme.preflight.fraud.v10"
    assert [s.name for s in cat.version_specs("fraud", "v10")] == [
        "acme.requests.fraud.v10",
        "acme.preflight.fraud.v10",
    ]
    assert cat.spec(cat.preflights).config["cleanup.policy"] == "compact"


def test_control_plane_topics_have_one_partition_and_state_is_compacted() -> None:
    cat = TopicCatalogue("c", partitions=6)
    assert cat.spec(cat.control).partitions == 1
    assert cat.spec(cat.rollout_state).partitions == 1
    assert cat.spec(cat.rollout_state).config["cleanup.policy"] == "compact"
    assert cat.spec(cat.requests).partitions == 6
    assert "cleanup.policy" not in cat.spec(cat.requests).config


def test_evidence_topics_are_partitioned_like_the_data_and_snapshots_compacted() -> None:
    cat = TopicCatalogue("c", partitions=6)
    for name in (cat.evidence, cat.predictions, cat.feedback, cat.feedback_rekeyed):
        assert cat.spec(name).partitions == 6
    for name in (cat.evaluator_state, cat.joiner_state):
        spec = cat.spec(name)
        assert spec.partitions == 6 and spec.config["cleanup.policy"] == "compact"
        assert int(spec.config["segment.ms"]) <= 60_000


@pytest.mark.parametrize("bad", ["", "a.b", "has space", "x" * 65, "ünï"])
def test_invalid_model_and_version_names(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid"):
        validate_name("model", bad)
    with pytest.raises(ConfigError):
        TopicCatalogue().version_requests("iris", bad)
