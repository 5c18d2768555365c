"""An envelope crosses the real broker with every header, its key and its payload."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime

from contracts.orders import OrderPlaced
from saga.kafka.consumer import Consumer
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Publisher
from saga.messages import headers as h
from saga.messages.base import Message
from saga.messages.codec import RawRecord, decode, encode
from saga.messages.envelope import Envelope
from saga.messages.registry import MessageRegistry
from saga.settings import Settings
from tests.kafka_helpers import eventually, read_records, running


def full_envelope(saga_id: str) -> Envelope[OrderPlaced]:
    return Envelope(
        payload=OrderPlaced(order_id=saga_id, customer_id="alice", amount_cents=4200),
        saga_id=saga_id,
        source="/services/orders",
        time=datetime(2026, 11, 21, 12, 30, tzinfo=UTC),
        saga_type="order",
        step="place",
        causation_id="cmd-7",
        attempt=3,
        subject=f"order/{saga_id}",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="congo=t61rcWkgMzE",
    )


async def test_round_trip_keeps_every_cloudevents_header_the_key_and_the_payload(
    settings: Settings, unique: Callable[[str], str], registry: MessageRegistry
) -> None:
    topic = unique("orders.events")
    await ensure_topics(settings, [topic])
    sent = full_envelope("order-1")
    async with Publisher(settings) as publisher:
        where = await publisher.publish(topic, sent)

    [record] = await read_records(settings, topic, 1)
    assert (record.partition, record.offset) == (where.partition, where.offset)
    assert record.key == b"order-1"
    assert json.loads(record.value) == sent.payload.model_dump()
    assert list(record.headers) == encode(sent).headers
    got = dict(record.headers)
    assert got[h.ID] == sent.id.encode()
    assert got[h.TYPE] == b"orders.OrderPlaced"
    assert got[h.SOURCE] == b"/services/orders"
    assert got[h.SPECVERSION] == b"1.0"
    assert got[h.TIME] == b"2026-11-21T12:30:00+00:00"
    assert got[h.CONTENT_TYPE] == b"application/json"
    assert got[h.SAGA_ID] == b"order-1"
    assert got[h.SAGA_TYPE] == b"order"
    assert got[h.SAGA_STEP] == b"place"
    assert got[h.CAUSATION_ID] == b"cmd-7"
    assert got[h.ATTEMPT] == b"3"
    assert got[h.SCHEMA_VERSION] == b"2"
    assert got[h.TRACEPARENT] == sent.traceparent.encode()  # type: ignore[union-attr]
    assert got[h.TRACESTATE] == b"congo=t61rcWkgMzE"

    raw = RawRecord(
        topic=topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=list(record.headers),
    )
    assert decode(raw, registry) == sent


async def test_consumer_hands_the_same_envelope_to_its_handler(
    settings: Settings, unique: Callable[[str], str], registry: MessageRegistry
) -> None:
    topic = unique("orders.events")
    await ensure_topics(settings, [topic])
    received: asyncio.Queue[Envelope[Message]] = asyncio.Queue()
    consumer = Consumer(
        settings, topics=[topic], group_id=unique("g"), handler=received.put, registry=registry
    )
    sent = [full_envelope(f"order-{i}") for i in range(5)]
    async with running(consumer), Publisher(settings) as publisher:
        await publisher.publish_many([(topic, envelope) for envelope in sent])
        got = [await asyncio.wait_for(received.get(), 30) for _ in sent]
    assert sorted(got, key=lambda e: e.saga_id) == sent


async def test_old_payload_version_on_the_wire_is_read_as_the_current_one(
    settings: Settings, unique: Callable[[str], str], registry: MessageRegistry
) -> None:
    topic = unique("orders.events")
    await ensure_topics(settings, [topic])
    received: asyncio.Queue[Envelope[Message]] = asyncio.Queue()
    consumer = Consumer(
        settings, topics=[topic], group_id=unique("g"), handler=received.put, registry=registry
    )
    # A record exactly as an old producer (schema version 1, amount in units) wrote it.
    current = encode(full_envelope("order-9"))
    v1_headers = [(n, b"1" if n == h.SCHEMA_VERSION else v) for n, v in current.headers]
    v1_value = json.dumps({"order_id": "order-9", "customer_id": "bob", "amount": 7}).encode()
    async with running(consumer), Publisher(settings) as publisher:
        await publisher.publish_raw(topic, key=b"order-9", value=v1_value, headers=v1_headers)
        got = await asyncio.wait_for(received.get(), 30)
    assert got.payload == OrderPlaced(order_id="order-9", customer_id="bob", amount_cents=700)
    assert got.schema_version == 2
    assert got.saga_id == "order-9"


async def test_one_sagas_messages_are_handled_in_the_order_sent(
    settings: Settings, unique: Callable[[str], str], registry: MessageRegistry
) -> None:
    topic = unique("orders.events")
    await ensure_topics(settings, [topic])
    seen: list[int] = []

    async def handle(envelope: Envelope[Message]) -> None:
        assert isinstance(envelope.payload, OrderPlaced)
        if len(seen) % 7 == 0:
            await asyncio.sleep(0.01)  # give other work a chance to overtake, if it could
        seen.append(envelope.payload.amount_cents)

    consumer = Consumer(
        settings, topics=[topic], group_id=unique("g"), handler=handle, registry=registry
    )
    async with Publisher(settings) as publisher:
        await publisher.publish_many(
            [
                (
                    topic,
                    full_envelope("same-saga").replace(
                        payload=OrderPlaced(order_id="same-saga", customer_id="c", amount_cents=i)
                    ),
                )
                for i in range(1, 201)
            ]
        )
    async with running(consumer):
        await eventually(lambda: len(seen) == 200, what="all 200 records")
    assert seen == list(range(1, 201))


async def test_an_idle_consumer_waits_longer_per_fetch_until_the_first_record(
    settings: Settings, unique: Callable[[str], str], registry: MessageRegistry
) -> None:
    settings = settings.model_copy(update={"fetch_max_wait_ms": 5, "fetch_idle_max_wait_ms": 20})
    topic = unique("orders.events")
    await ensure_topics(settings, [topic])
    received: asyncio.Queue[Envelope[Message]] = asyncio.Queue()
    consumer = Consumer(
        settings, topics=[topic], group_id=unique("g"), handler=received.put, registry=registry
    )

    def wait_ms() -> int:
        waited: int = consumer._kafka._fetcher._fetch_max_wait_ms
        return waited

    async with running(consumer), Publisher(settings) as publisher:
        # 5, then 10 after an idle second, then 20 (the bound) after two.
        await eventually(lambda: wait_ms() == 20, what="the idle wait at its bound")
        await publisher.publish(topic, full_envelope("order-1"))
        await asyncio.wait_for(received.get(), 30)
        assert wait_ms() == 5  # set back before the record was handed on
        await eventually(lambda: wait_ms() == 10, what="idle again")
