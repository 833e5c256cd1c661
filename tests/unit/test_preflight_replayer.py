"""The pre-flight's replayer, in process on the in-memory Kafka: only the model's recorded
requests in range are replayed, each exactly once per arm, with the router's headers and the
pre-flight's, and a replay stopped half-way resumes where it was; a worker answers replayed
copies on the pre-flight results topic only."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest

from model_canary.agents.preflight.replayer import Replayer
from model_canary.agents.testing import FakeKafka, run_until_idle, using
from model_canary.agents.worker.adapters import EchoAdapter
from model_canary.agents.worker.agent import Worker, WorkerOptions
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.codec.results import decode_result
from model_canary.streams.enums import BaselineMode, PreflightStatus
from model_canary.streams.messages import EPOCH, InferenceRequest, OffsetRange, Preflight
from model_canary.streams.preflight.replay import Pacer
from model_canary.streams.route_header import decode_route
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

SETTINGS = Settings(bootstrap="fake:9092", topic_prefix="t", partitions=1)
CAT = TopicCatalogue("t", 1)


@pytest.fixture
def kafka() -> Iterator[FakeKafka]:
    fake = FakeKafka()
    with using(fake):
        yield fake


def record(model: str, rid: str) -> bytes:
    request = InferenceRequest(request_id=rid, model=model, inputs=b"{}", created_at=EPOCH)
    return codec_for(InferenceRequest).encode(request)


def job(end: int, **fields: object) -> Preflight:
    base = Preflight(
        preflight_id="pf-1",
        model="iris",
        baseline_version="v1",
        candidate_version="v2",
        status=PreflightStatus.REPLAYING,
        ranges=(OffsetRange(topic=CAT.requests, partition=0, first=5, last=end - 1),),
        window_start=EPOCH,
        started_at=EPOCH,
        updated_at=EPOCH,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def header(msg: object, name: str) -> str | None:
    return h.header_dict(h.as_list(msg.headers())).get(name)  # type: ignore[attr-defined]


def fill(kafka: FakeKafka) -> list[str]:
    """300 recorded requests: iris ones (Avro with headers, some JSON bare bodies), another
    model's, and junk; returns the iris request ids at offsets 5.. (the range's start)."""
    wanted = []
    for i in range(300):
        if i % 10 == 3:
            kafka.send(CAT.requests, record("other", f"o{i}"), key=b"k")
        elif i % 10 == 7:
            kafka.send(CAT.requests, b"junk", key=b"k")
        elif i % 10 == 9:
            headers: h.RawHeaders = [(h.CONTENT_TYPE, b"application/json"), (h.MODEL, b"iris")]
            kafka.send(CAT.requests, b'{"x": 1}', key=f"user-{i}".encode(), headers=headers)
            if i >= 5:
                wanted.append(f"{CAT.requests}[0]@{i}")  # the position id the router gave it
        else:
            headers = [(h.MODEL, b"iris"), (h.REQUEST_ID, f"r{i}".encode())]
            kafka.send(
                CAT.requests, record("iris", f"r{i}"), key=f"user-{i}".encode(), headers=headers
            )
            if i >= 5:
                wanted.append(f"r{i}")
    return wanted


def test_a_replay_stopped_half_way_resumes_and_replays_each_request_once(
    kafka: FakeKafka,
) -> None:
    wanted = fill(kafka)
    stop = threading.Event()

    class StopAfter60(Pacer):
        """Does not wait; asks the replay to stop after 60 requests (as Ctrl-C would)."""

        taken = 0

        def wait(self) -> None:
            self.taken += 1
            if self.taken >= 60:
                stop.set()

    # rate 50/s: batches of 5; the batch under way when asked to stop is finished, committed
    first = Replayer(SETTINGS, job(300, rate=50.0), pacer=StopAfter60(0))
    first.run(stop)
    assert not first.done and 60 <= first.committed < len(wanted)
    records = [codec_for(Preflight).decode(m.value() or b"") for m in kafka.read(CAT.preflights)]
    assert records[-1].replayed == first.committed  # progress, with the copies it counts

    resumed = Replayer(SETTINGS, replace(job(300), replayed=records[-1].replayed), pacer=Pacer(0))
    resumed.run(threading.Event())
    assert resumed.done and resumed.committed == len(wanted)
    for version in ("v1", "v2"):
        copies = kafka.read(CAT.preflight_requests("iris", version))
        per_request = Counter(header(m, h.REQUEST_ID) for m in copies)
        assert sorted(map(str, per_request)) == sorted(wanted)
        assert set(per_request.values()) == {1}
        arm = "canary" if version == "v2" else "baseline"
        first_copy = copies[0]
        route = decode_route(header(first_copy, h.ROUTE) or "")
        assert header(first_copy, h.PREFLIGHT) == "pf-1" and route.arm == arm
        assert (route.version, route.weight_bp, route.rollout_id) == (version, 5000, "pf-1")
    by_id = {header(m, h.REQUEST_ID): m for m in kafka.read(CAT.preflight_requests("iris", "v2"))}
    assert by_id["r10"].key() == b"user-10" and by_id["r10"].value() == record("iris", "r10")
    assert by_id[f"{CAT.requests}[0]@9"].value() == b'{"x": 1}'


def test_sample_max_requests_and_a_recorded_baseline(kafka: FakeKafka) -> None:
    wanted = fill(kafka)
    limited = job(300, sample_bp=5000, max_requests=40, baseline_mode=BaselineMode.RECORDED)
    replayer = Replayer(SETTINGS, limited, pacer=Pacer(0))
    replayer.run(threading.Event())
    assert replayer.done and replayer.committed == 40
    copies = kafka.read(CAT.preflight_requests("iris", "v2"))
    assert len(copies) == 40 and {header(m, h.REQUEST_ID) for m in copies} < set(wanted)
    assert kafka.read(CAT.preflight_requests("iris", "v1")) == []  # the baseline not replayed


def test_a_worker_answers_replayed_copies_on_the_preflight_results_topic_only(
    kafka: FakeKafka,
) -> None:
    fill(kafka)
    kafka.create(CAT.rollout_state)
    Replayer(SETTINGS, job(40), pacer=Pacer(0)).run(threading.Event())
    kafka.send(CAT.version_requests("iris", "v2"), record("iris", "live-1"),
               headers=[(h.MODEL, b"iris"), (h.REQUEST_ID, b"live-1")])  # fmt: skip
    worker = Worker(SETTINGS, WorkerOptions("iris", "v2", instance="w1"), EchoAdapter())
    run_until_idle(worker.loop, kafka)
    replayed = kafka.read(CAT.preflight_results)
    assert len(replayed) == len(kafka.read(CAT.preflight_requests("iris", "v2")))
    assert all(header(m, h.PREFLIGHT) == "pf-1" for m in replayed)
    # Each answer names its micro-batch (the pre-flight's served evidence counts batches).
    assert all((header(m, h.PREFLIGHT_BATCH) or "").startswith("w1.") for m in replayed)
    result = decode_result(replayed[0].value(), replayed[0].headers())
    assert result.version == "v2" and not result.served and result.rollout_id == "pf-1"
    live = kafka.read(CAT.results)
    assert [header(m, h.REQUEST_ID) for m in live] == ["live-1"]
    assert kafka.read(CAT.shadow_results) == []
    # The replayed copies carry their pre-flight's id as a rollout id: no live evidence.
    assert kafka.read(CAT.evidence) == [] and kafka.read(CAT.predictions) == []
