"""``saga demo``: a real enveloped round trip on the embedded broker and PostgreSQL.

Starts a throw-away embedded stack, shows that this broker rejects the
idempotent producer (and how the framework says so), publishes order events
through the transport (a current one, an old-version one that is upcast, and a
broken one that is dead-lettered), handles them in a consumer group that
records each in PostgreSQL before its offset is committed, prints what
happened, and stops everything it started.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import asyncpg

from contracts import headers as h
from contracts.catalog import default_registry
from contracts.codec import encode
from contracts.envelope import Envelope
from contracts.messages import Message
from contracts.orders import OrderPlaced
from contracts.topics import dead_letter_topic, events_topic
from saga.consumer import Consumer
from saga.dev import DevStack, StackInfo
from saga.errors import IdempotenceUnsupported
from saga.provisioning import ensure_topics
from saga.publisher import Publisher
from saga.settings import Settings


def _say(text: str) -> None:
    print(text, flush=True)


async def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="saga-demo-") as tmp:
        stack = DevStack(Path(tmp), detached=False)
        _say("starting the embedded Kafka-protocol broker and PostgreSQL ...")
        info = stack.up(kafka_port=None, postgres_port=None)
        try:
            _say(f"  broker   pid {info.broker.pid} on {info.bootstrap_servers}")
            _say(f"  postgres pid {info.postgres.pid} on {info.database_url}")
            await _round_trip(info)
        finally:
            stopped = stack.down()
            _say("stopped " + ", ".join(stopped))
        left = [s.name for s in (info.broker, info.postgres) if s.alive()]
    if left:
        _say(f"still running: {left}")
        return 1
    _say("demo finished; nothing left running")
    return 0


async def _round_trip(info: StackInfo) -> None:
    strict = Settings(bootstrap_servers=info.bootstrap_servers)
    try:
        async with Publisher(strict):
            pass
    except IdempotenceUnsupported as exc:
        _say(f"\nidempotent producer refused, as expected on this broker:\n  {exc}")

    settings = Settings(
        bootstrap_servers=info.bootstrap_servers,
        enable_idempotence=False,
        fetch_max_wait_ms=5,
        commit_interval_ms=50,
        topic_partitions=3,
    )
    topic = events_topic("orders")
    created = await ensure_topics(settings, [topic])
    _say(f"\ncreated topics {created}")

    db = await asyncpg.connect(info.database_url)
    await db.execute(
        "CREATE TABLE IF NOT EXISTS demo_received ("
        " message_id text PRIMARY KEY, saga_id text NOT NULL, type text NOT NULL,"
        " payload jsonb NOT NULL)"
    )
    received: asyncio.Queue[Envelope[Message]] = asyncio.Queue()

    async def handle(envelope: Envelope[Message]) -> None:
        # Durable first: the offset is committed only after this returns.
        await db.execute(
            "INSERT INTO demo_received VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            envelope.id,
            envelope.saga_id,
            envelope.type,
            envelope.payload.model_dump_json(),
        )
        await received.put(envelope)

    consumer = Consumer(
        settings,
        topics=[topic],
        group_id="demo-inventory",
        handler=handle,
        registry=default_registry(),
    )
    await consumer.start()
    runner = asyncio.create_task(consumer.run())
    async with Publisher(settings) as publisher:
        placed = Envelope(
            payload=OrderPlaced(order_id="order-1", customer_id="alice", amount_cents=4200),
            saga_id="order-1",
            source="/services/orders",
            saga_type="order",
        )
        where = await publisher.publish(topic, placed)
        _say(f"\npublished {placed.type} v{placed.schema_version} id={placed.id}")
        _say(f"  -> {where.topic}[{where.partition}]@{where.offset}, key={placed.saga_id!r}")

        old = encode(placed.replace(saga_id="order-2", id="legacy-1"))
        v1_headers = [(n, b"1" if n == h.SCHEMA_VERSION else v) for n, v in old.headers]
        await publisher.publish_raw(
            topic,
            key=b"order-2",
            value=json.dumps({"order_id": "order-2", "customer_id": "bob", "amount": 7}).encode(),
            headers=v1_headers,
        )
        _say("published an OrderPlaced written by an old producer (schema version 1)")

        broken = encode(placed.replace(saga_id="order-3"))
        await publisher.publish_raw(
            topic, key=broken.key, value=b"this is not json", headers=broken.headers
        )
        _say("published a record whose value is not JSON")

        for _ in range(2):
            got = await asyncio.wait_for(received.get(), timeout=30)
            _say(f"\nconsumer handled {got.type} (schema v{got.schema_version}) saga={got.saga_id}")
            _say(f"  headers: id={got.id} source={got.source} time={got.time.isoformat()}")
            _say(f"  payload: {got.payload.model_dump()}")

    letter = await _first_dead_letter(settings, dead_letter_topic(topic))
    _say(f"\ndead-lettered to {dead_letter_topic(topic)}:")
    for name in (h.DLQ_REASON, h.DLQ_TOPIC, h.DLQ_PARTITION, h.DLQ_OFFSET):
        _say(f"  {name}: {letter[name]}")

    consumer.stop()
    await runner
    rows = await db.fetch("SELECT saga_id, type, payload FROM demo_received ORDER BY saga_id")
    await db.close()
    _say("\nrows in PostgreSQL (written before each offset commit):")
    for row in rows:
        _say(f"  {row['saga_id']}  {row['type']}  {row['payload']}")


async def _first_dead_letter(settings: Settings, topic: str) -> dict[str, str]:
    from aiokafka import AIOKafkaConsumer

    reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    await reader.start()
    try:
        record = await asyncio.wait_for(reader.getone(), timeout=30)
    finally:
        await reader.stop()
    return {name: (value or b"").decode() for name, value in record.headers}
