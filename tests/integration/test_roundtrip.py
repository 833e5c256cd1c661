"""Produce and consume our records across the wire with confluent-kafka and with aiokafka
(faust's transport)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer

from model_canary.streams import headers as h
from model_canary.streams.codec.avro import INFERENCE_REQUEST_CONTENT_TYPE, codec_for
from model_canary.streams.codec.requests import decode_request, encode_request_json, oip_request
from model_canary.streams.messages import InferenceRequest, utc_now
from model_canary.streams.settings import Settings
from tests.integration.conftest import consume_n

pytestmark = pytest.mark.integration


def _request(i: int) -> InferenceRequest:
    return InferenceRequest(
        request_id=f"r{i}",
        model="iris",
        inputs=oip_request({"x": [[float(i), 1.5]]}),
        routing_key=f"user-{i}",
        created_at=utc_now(),
        attributes={"tenant": "a"},
    )


def test_confluent_round_trip_of_avro_and_json_requests(
    make_topic: Callable[..., str],
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    topic = make_topic(partitions=3)
    codec = codec_for(InferenceRequest)
    sent = [_request(i) for i in range(100)]
    producer = make_producer()
    for i, req in enumerate(sent):
        as_json = i % 2 == 1
        producer.produce(
            topic,
            encode_request_json(req) if as_json else codec.encode(req),
            key=(req.routing_key or "").encode(),
            headers=[
                (h.CONTENT_TYPE, h.JSON if as_json else INFERENCE_REQUEST_CONTENT_TYPE),
                (h.REQUEST_ID, req.request_id),
                (h.MODEL, req.model),
            ],
        )
    producer.flush(10)
    got = consume_n(make_consumer(topic), len(sent))
    decoded = {
        r.request_id: r
        for r in (
            decode_request(m.value() or b"", h.header_dict(m.headers())[h.CONTENT_TYPE])
            for m in got
        )
    }
    assert decoded == {r.request_id: r for r in sent}, "JSON and Avro forms decode alike"


def test_aiokafka_round_trip_and_read_committed(
    settings: Settings,
    make_topic: Callable[..., str],
    make_producer: Callable[..., Producer],
    unique: str,
) -> None:
    topic = make_topic(partitions=2)
    codec = codec_for(InferenceRequest)
    sent = [_request(i) for i in range(50)]
    # A transactional confluent-kafka producer commits half and aborts the rest.
    tx = make_producer(transactional_id=f"rt-{unique}")
    tx.init_transactions(30)
    tx.begin_transaction()
    for req in sent[:25]:
        tx.produce(topic, codec.encode(req), key=req.request_id.encode())
    tx.commit_transaction(30)
    tx.begin_transaction()
    for req in sent[25:]:
        tx.produce(topic, codec.encode(req), key=req.request_id.encode())
    tx.abort_transaction(30)

    async def run() -> list[InferenceRequest]:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            for req in sent[25:]:
                await producer.send_and_wait(
                    topic,
                    codec.encode(req),
                    key=req.request_id.encode(),
                    headers=[(h.CONTENT_TYPE, INFERENCE_REQUEST_CONTENT_TYPE.encode())],
                )
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.bootstrap_servers,
            group_id=f"aio-{unique}",
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        committed: list[InferenceRequest] = []
        try:
            while len(committed) < 50:
                batch = await consumer.getmany(timeout_ms=1000)
                if not batch:
                    break
                for records in batch.values():
                    committed += [codec.decode(r.value) for r in records]
        finally:
            await consumer.stop()
        return committed

    committed = asyncio.run(run())
    # 25 committed in the transaction + 25 from aiokafka; the 25 aborted are invisible.
    assert sorted(r.request_id for r in committed) == sorted(r.request_id for r in sent)
    assert {r.request_id: r for r in committed} == {r.request_id: r for r in sent}
