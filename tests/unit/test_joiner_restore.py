"""The label joiner's restore, in process (on :class:`~model_canary.agents.testing.FakeKafka`):
it reads its changelog up to the high watermark, so a commit whose markers are not written
yet (Kafka's commit returns before them) is waited for, not missed."""

from __future__ import annotations

import threading
import time

from model_canary.agents.evaluator.joiner import restore
from model_canary.agents.testing import FakeKafka, new_producer, using
from model_canary.streams.evidence.join import LabelJoin, Waiting, dump_ops
from model_canary.streams.settings import Settings

SETTINGS = Settings(bootstrap="fake:9092", topic_prefix="t", partitions=1)
TOPIC = "t.joiner-state"


def _prediction(rid: str) -> list[list[object]]:
    join = LabelJoin()
    now = int(time.time())
    waiting = Waiting("iris", "ro1", "v2", "canary", True, 5000, now, 42, 1, "a", now + 3600)
    join.add_prediction(rid, waiting, now)
    return join.take_changes()


def test_a_restore_right_after_a_commit_waits_for_its_markers() -> None:
    kafka = FakeKafka()
    with using(kafka):
        producer = new_producer(SETTINGS, "joiner", transactional_id="t.joiner.j1")
        producer.init_transactions(10)
        for seq, rid in enumerate(["r1", "r2"]):
            producer.begin_transaction()
            producer.produce(TOPIC, dump_ops(_prediction(rid)), key=f"d/0/{seq}".encode())
            producer.flush(10)
            if rid == "r2":
                # The second commit returns before its markers are written: a restore made
                # now (the next transaction aborted, or a new owner) must not miss it.
                kafka.hold_markers = True
            producer.commit_transaction(10)
        writer = threading.Timer(0.3, kafka.write_markers)
        writer.start()
        try:
            restored = restore(SETTINGS, TOPIC, [0])
        finally:
            writer.cancel()

    join, state_log = restored[0]
    assert sorted(join.predictions) == ["r1", "r2"]
    assert state_log.seq == 2  # the next delta takes a key of its own, not r2's
