"""``canary feedback`` with a label, a value and attributes, read back from the feedback topic."""

from __future__ import annotations

import subprocess
import sys

import pytest

from model_canary.streams.codec.json_records import decode_record
from model_canary.streams.messages import Feedback
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import read_topic

pytestmark = pytest.mark.integration


def test_feedback_with_a_value_and_attributes(settings: Settings, topics: TopicCatalogue) -> None:
    conn = ["--bootstrap", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix]

    def canary(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "model_canary.agents.cli.main", "feedback", *args, *conn],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    sent = canary(
        "--model", "chat", "--request-id", "r1", "--value", "0.25",
        "--attr", "complaint=yes", "--attr", "channel=a=b",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert "value 0.25" in sent.stdout and "complaint=yes" in sent.stdout
    nothing = canary("--model", "chat", "--request-id", "r2")
    assert nothing.returncode != 0 and "give at least one of --label" in nothing.stderr
    infinite = canary("--model", "chat", "--request-id", "r3", "--value", "inf")
    assert infinite.returncode != 0 and "must be finite" in infinite.stderr
    labelled = canary("--model", "chat", "--request-id", "r4", "--label", "down")
    assert labelled.returncode == 0, labelled.stderr

    msgs = read_topic(settings, topics.feedback, 2)
    records = [decode_record(Feedback, m.value(), None) for m in msgs]
    assert [(r.request_id, r.label, r.value, dict(r.attributes)) for r in records] == [
        ("r1", "", 0.25, {"complaint": "yes", "channel": "a=b"}),
        ("r4", "down", None, {}),
    ]
