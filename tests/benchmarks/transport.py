"""Transport benchmark: envelopes through Publisher -> broker -> Consumer, beside raw aiokafka.

Prints figures; asserts nothing. Run with ``make bench`` (starts the embedded
stack) or against your own broker with ``--kafka host:port``.

* throughput: N records over 6 partitions, all in flight, until the last is handled
* latency: one record at a time, publish -> handled, p50 / p99
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts.catalog import default_registry
from contracts.orders import OrderPlaced
from saga.dev import DevStack
from saga.kafka.consumer import Consumer
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Publisher
from saga.messages.base import Message
from saga.messages.envelope import Envelope
from saga.settings import Settings


def envelope(i: int) -> Envelope[OrderPlaced]:
    return Envelope(
        payload=OrderPlaced(order_id=f"o-{i}", customer_id="c", amount_cents=abs(i) + 1),
        saga_id=f"o-{i}",
        source="/bench",
    )


async def framework(settings: Settings, count: int, rounds: int) -> tuple[float, list[float]]:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=6)
    done = asyncio.Event()
    warm = asyncio.Event()
    handled = 0
    arrivals: asyncio.Queue[float] = asyncio.Queue()

    async def handle(env: Envelope[Message]) -> None:
        nonlocal handled
        warm.set()
        handled += 1
        if handled == count:
            done.set()
        if handled > count:
            await arrivals.put(time.perf_counter())

    consumer = Consumer(
        settings, topics=[topic], group_id=topic, handler=handle, registry=default_registry()
    )
    await consumer.start()
    runner = asyncio.create_task(consumer.run())
    async with Publisher(settings) as publisher:
        await publisher.publish(topic, envelope(-1))  # warm-up: wait for the assignment
        await warm.wait()
        handled = 0
        start = time.perf_counter()
        for chunk in range(0, count, 500):
            batch = [(topic, envelope(i)) for i in range(chunk, min(chunk + 500, count))]
            await publisher.publish_many(batch)
        await done.wait()
        rate = count / (time.perf_counter() - start)
        latencies = []
        for i in range(rounds):
            sent = time.perf_counter()
            await publisher.publish(topic, envelope(i))
            latencies.append((await arrivals.get()) - sent)
    consumer.stop()
    await runner
    return rate, latencies


async def raw(settings: Settings, count: int, rounds: int) -> tuple[float, list[float]]:
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=6, with_dead_letters=False)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        linger_ms=settings.linger_ms,
        compression_type="gzip",
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=topic,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    await producer.start()
    await consumer.start()
    try:
        value = envelope(0).payload.model_dump_json().encode()
        await producer.send_and_wait(topic, value, key=b"warm")
        await consumer.getone()
        await consumer.commit()
        start = time.perf_counter()
        futures = [await producer.send(topic, value, key=f"o-{i}".encode()) for i in range(count)]
        await asyncio.gather(*futures)
        got = 0
        while got < count:
            batches = await consumer.getmany(timeout_ms=100)
            got += sum(len(b) for b in batches.values())
            if batches:
                await consumer.commit()
        rate = count / (time.perf_counter() - start)
        latencies = []
        for i in range(rounds):
            sent = time.perf_counter()
            await producer.send_and_wait(topic, value, key=f"o-{i}".encode())
            await consumer.getone()
            latencies.append(time.perf_counter() - sent)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
    return rate, latencies


def report(name: str, rate: float, latencies: list[float]) -> None:
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"{name:<28} {rate:>9,.0f} records/s   one at a time p50 {statistics.median(ms):6.1f} ms"
        f"  p99 {p99:6.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kafka", help="bootstrap servers (default: embedded broker)")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        stack = DevStack(Path(tmp), detached=False)
        try:
            if args.kafka is None:
                args.kafka = stack.up(kafka_port=None, postgres_port=None).bootstrap_servers
                external = False
            else:
                external = True
            settings = Settings(
                bootstrap_servers=args.kafka,
                enable_idempotence=external,
                fetch_max_wait_ms=100 if external else 5,
            )
            print(f"{args.count} records, 6 partitions; {args.rounds} one-at-a-time rounds")
            report("raw aiokafka (bytes)", *await raw(settings, args.count, args.rounds))
            report("Publisher -> Consumer", *await framework(settings, args.count, args.rounds))
        finally:
            stack.down()


if __name__ == "__main__":
    asyncio.run(main())
