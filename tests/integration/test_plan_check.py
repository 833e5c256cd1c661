"""``canary plan check`` measures a model's traffic from the evidence topic (on by default),
not from the opt-in per-request metrics."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from model_canary.agents.cli import plan_cmd
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.enums import Arm, EvidenceKind
from model_canary.streams.errors import ConfigError
from model_canary.streams.messages import Evidence
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue


def test_plan_check_reads_the_models_evidence(
    settings: Settings,
    topics: TopicCatalogue,
    make_producer: Callable[..., Producer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    codec = codec_for(Evidence)
    producer = make_producer()
    now = int(time.time())
    for model, per_second in (("iris", 20), ("other", 500)):
        for second in range(now - 60, now):  # 60 s: 20 requests/s, 2% baseline errors
            for kind, arm, requests, errors in (
                (EvidenceKind.ROUTED, Arm.BASELINE, per_second - 1, 0),
                (EvidenceKind.ROUTED, Arm.CANARY, 1, 0),
                (EvidenceKind.SERVED, Arm.BASELINE, per_second - 1, 0),
                (EvidenceKind.SERVED, Arm.CANARY, 1, 1),  # the canary's errors: not the base rate
            ):
                ev = Evidence(kind=kind, model=model, rollout_id="ro1", arm=arm,
                              weight_bp=500, second=second, source="test",
                              requests=requests, errors=errors)  # fmt: skip
                producer.produce(topics.evidence, codec.encode(ev), key=model.encode())
        ev = Evidence(kind=EvidenceKind.SERVED, model=model, rollout_id="ro1", arm=Arm.BASELINE,
                      weight_bp=500, second=now - 30, source="test", requests=0,
                      errors=23)  # fmt: skip
        producer.produce(topics.evidence, codec.encode(ev), key=model.encode())
    producer.flush(10)

    sample = plan_cmd.recent_evidence(settings, "iris", 600.0)
    traffic = sample.traffic()
    assert traffic is not None
    assert traffic.rate_per_min == pytest.approx(1200.0)
    assert traffic.base("errors") == pytest.approx(23 / (19 * 60))

    args = argparse.Namespace(
        model="iris", plan=None, rate=None, error_rate=None, accuracy=None, outcome_rate=[],
        label_coverage=None, design_effect=1.0, window=600.0, json=True, batch_size=None,
        bootstrap=settings.bootstrap, topic_prefix=settings.topic_prefix,
    )  # fmt: skip
    assert plan_cmd.run_check(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rate_per_min"] == pytest.approx(1200.0) and len(doc["steps"]) == 4
    assert doc["batch_size"] == 1.0, "records without batches: answers timed alone"

    args.model = "never-rolled-out"
    with pytest.raises(ConfigError, match="no evidence for 'never-rolled-out'"):
        plan_cmd.run_check(args)
