"""Peer: a FastStream chain of 4 handlers on the same broker (a commit per message).

``python -m tests.benchmarks.peers.faststream_chain --kafka HOST:PORT`` prints its
figures as the last line (JSON). ``--meter``: what else to meter with this process
(:mod:`tests.benchmarks.cost`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import uuid

from faststream.kafka import KafkaBroker

from saga.kafka.provisioning import ensure_topics
from saga.settings import Settings
from tests.benchmarks.cost import Meter, Watched
from tests.benchmarks.figures import Figures, latencies


async def measure(
    bootstrap: str,
    count: int,
    rounds: int,
    *,
    meter: Meter,
    idle_s: float = 0,
    idempotence: bool = False,
    fetch_max_wait_ms: int = 5,
    partitions: int = 6,
) -> Figures:
    run = uuid.uuid4().hex[:6]
    topics = [f"fs-{run}-{i}" for i in range(5)]
    settings = Settings(
        bootstrap_servers=bootstrap,
        enable_idempotence=idempotence,
        topic_partitions=partitions,
    )
    await ensure_topics(settings, topics, with_dead_letters=False)
    broker = KafkaBroker(  # the same linger as the floor and ours
        bootstrap,
        enable_idempotence=idempotence,
        linger_ms=settings.linger_ms,
        log_level=logging.WARNING,
    )
    arrivals: asyncio.Queue[bytes] = asyncio.Queue()

    for i in range(4):

        @broker.subscriber(
            topics[i],
            group_id=f"{run}-{i}",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_max_wait_ms,
        )
        @broker.publisher(topics[i + 1])
        async def hop(body: bytes) -> bytes:
            return body

    @broker.subscriber(
        topics[4],
        group_id=f"{run}-end",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    async def collect(body: bytes) -> None:
        arrivals.put_nowait(body)

    await broker.start()
    try:
        for i in range(10):
            await broker.publish(b"warm", topics[0], key=f"w{i}".encode())
        for _ in range(10):
            await arrivals.get()
        idle = await meter.idle(idle_s) if idle_s > 0 else {}
        await meter.start()
        start = time.perf_counter()
        for chunk in range(0, count, 200):
            await asyncio.gather(
                *(
                    broker.publish(b"x" * 200, topics[0], key=f"c-{i}".encode())
                    for i in range(chunk, min(chunk + 200, count))
                )
            )
        for _ in range(count):
            await arrivals.get()
        throughput = count / (time.perf_counter() - start)
        cost = await meter.stop(count)
        samples = []
        for i in range(rounds):
            sent = time.perf_counter()
            await broker.publish(b"y" * 200, topics[0], key=f"l-{i}".encode())
            await arrivals.get()
            samples.append(time.perf_counter() - sent)
    finally:
        await broker.stop()
    figures = latencies("FastStream 0.7, 4 handlers chained", samples, throughput)
    figures.extra = {**cost, **idle}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--meter", default="", help="processes to meter too (JSON)")
    parser.add_argument("--idle-seconds", type=float, default=0)
    parser.add_argument("--idempotence", action="store_true")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    meter = Meter.from_json(args.meter, Watched("process", os.getpid()))
    figures = asyncio.run(
        measure(
            args.kafka,
            args.count,
            args.rounds,
            meter=meter,
            idle_s=args.idle_seconds,
            idempotence=args.idempotence,
            fetch_max_wait_ms=args.fetch_max_wait_ms,
            partitions=args.partitions,
        )
    )
    figures.print_json()


if __name__ == "__main__":
    main()
