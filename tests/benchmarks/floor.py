"""The floor: a raw aiokafka chain of 4 hops over the same broker, no saga logic.

One process: a producer starts each chain on topic 0; four consumers each read
topic i and write to topic i+1 (committing after each polled batch); a fifth
reads topic 4 and counts arrivals. Same broker, same partitions, same fetch
wait as the saga system. Metered (``servers``: the broker) as the saga system is:
this process is the floor's only one.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from saga.kafka.provisioning import ensure_topics
from saga.settings import Settings
from tests.benchmarks.cost import Meter, Watched
from tests.benchmarks.figures import Figures, latencies

HOPS = 4


async def measure(
    settings: Settings,
    count: int,
    rounds: int,
    *,
    servers: Sequence[Watched] = (),
    idle_s: float = 0,
) -> Figures:
    run = uuid.uuid4().hex[:6]
    topics = [f"floor-{run}-{i}" for i in range(HOPS + 1)]
    await ensure_topics(
        settings, topics, partitions=settings.topic_partitions, with_dead_letters=False
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        linger_ms=settings.linger_ms,
        enable_idempotence=settings.enable_idempotence,
    )
    await producer.start()
    arrivals: asyncio.Queue[bytes] = asyncio.Queue()
    consumers = [_consumer(settings, topic, f"floor-{run}-{i}") for i, topic in enumerate(topics)]
    for consumer in consumers:
        await consumer.start()
    hops = [asyncio.create_task(_hop(consumers[i], producer, topics[i + 1])) for i in range(HOPS)]
    collector = asyncio.create_task(_collect(consumers[HOPS], arrivals))
    try:
        for i in range(20):  # warm-up: every group has its partitions
            await producer.send_and_wait(topics[0], b"warm", key=f"w{i}".encode())
        for _ in range(20):
            await arrivals.get()
        meter = Meter([Watched("process", os.getpid()), *servers])
        idle = await meter.idle(idle_s) if idle_s > 0 else {}
        await meter.start()
        start = time.perf_counter()
        futures = [
            await producer.send(topics[0], b"x" * 200, key=f"c-{i}".encode()) for i in range(count)
        ]
        await asyncio.gather(*futures)
        for _ in range(count):
            await arrivals.get()
        throughput = count / (time.perf_counter() - start)
        cost = await meter.stop(count)
        samples = []
        for i in range(rounds):
            sent = time.perf_counter()
            await producer.send_and_wait(topics[0], b"y" * 200, key=f"l-{i}".encode())
            await arrivals.get()
            samples.append(time.perf_counter() - sent)
    finally:
        for task in (*hops, collector):
            task.cancel()
        await asyncio.gather(*hops, collector, return_exceptions=True)
        for consumer in consumers:
            await consumer.stop()
        await producer.stop()
    figures = latencies("floor: raw aiokafka, 4 hops", samples, throughput)
    figures.extra = {**cost, **idle}
    return figures


def _consumer(settings: Settings, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )


async def _hop(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, to: str) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=100, max_records=500)
        sent = [
            await producer.send(to, record.value, key=record.key)
            for records in batches.values()
            for record in records
        ]
        if sent:
            await asyncio.gather(*sent)
            await consumer.commit()


async def _collect(consumer: AIOKafkaConsumer, arrivals: asyncio.Queue[bytes]) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=100, max_records=500)
        for records in batches.values():
            for record in records:
                arrivals.put_nowait(record.key or b"")
        if batches:
            await consumer.commit()
