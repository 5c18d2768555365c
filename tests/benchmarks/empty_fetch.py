"""What one empty fetch costs the embedded broker and the client, by fetch shape.

One aiokafka consumer, assigned ``--partitions`` partitions of empty topics (no
group), polls the embedded stack's broker for ``--seconds``; the broker's and this
process's CPU time are divided by the number of fetch requests sent. Shapes vary by
partitions per request, ``fetch_max_wait_ms``, ``max_partition_fetch_bytes`` and
``isolation_level``, interleaved over ``--repeat`` rounds::

    python -m tests.benchmarks.empty_fetch --repeat 2

``--wake`` measures instead what the idle fetch wait (:mod:`saga.kafka.fetch_wait`,
driven as :class:`saga.kafka.consumer.Consumer` drives it) costs one hop: a record is
produced after ``--quiet-seconds`` of nothing, and timed until the consumer has it, for
each ``SAGA_FETCH_IDLE_MAX_WAIT_MS`` of ``--bounds``, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from saga.kafka.consumer import set_fetch_wait
from saga.kafka.fetch_wait import FetchWait
from saga.kafka.provisioning import ensure_topics
from saga.settings import Settings
from tests.benchmarks.stack import embedded

#: name -> (partitions per request, wait ms, max_partition_fetch_bytes, isolation level)
SHAPES: dict[str, tuple[int, int, int, str]] = {
    "1 partition, 5 ms": (1, 5, 2_097_152, "read_uncommitted"),
    "6 partitions, 5 ms": (6, 5, 2_097_152, "read_uncommitted"),
    "36 partitions, 5 ms": (36, 5, 2_097_152, "read_uncommitted"),
    "36 partitions, 10 ms": (36, 10, 2_097_152, "read_uncommitted"),
    "36 partitions, 5 ms, 64 KiB/partition": (36, 5, 65_536, "read_uncommitted"),
    "36 partitions, 5 ms, read_committed": (36, 5, 2_097_152, "read_committed"),
}


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def measure(
    settings: Settings, broker: psutil.Process, shape: tuple[int, int, int, str], seconds: float
) -> dict[str, float]:
    partitions, wait_ms, partition_bytes, isolation = shape
    topics = [f"empty-{n}-{time.monotonic_ns()}" for n in range((partitions + 5) // 6)]
    await ensure_topics(settings.model_copy(update={"topic_partitions": 6}), topics)
    assigned = [TopicPartition(t, p) for t in topics for p in range(6)][:partitions]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        fetch_max_wait_ms=wait_ms,
        max_partition_fetch_bytes=partition_bytes,
        isolation_level=isolation,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    sent = 0
    fetcher: Any = consumer._fetcher
    original = fetcher._proc_fetch_request

    async def counted(*args: Any) -> Any:
        nonlocal sent
        sent += 1
        return await original(*args)

    fetcher._proc_fetch_request = counted
    try:
        consumer.assign(assigned)
        await consumer.getmany(timeout_ms=500)
        me = psutil.Process()
        sent, broker_0, own_0 = 0, _cpu(broker), _cpu(me)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=100)
        fetches, broker_s, own_s = sent, _cpu(broker) - broker_0, _cpu(me) - own_0
    finally:
        await consumer.stop()
    return {
        "fetches_per_s": fetches / seconds,
        "broker_us_per_fetch": broker_s / fetches * 1e6,
        "client_us_per_fetch": own_s / fetches * 1e6,
        "broker_pct": broker_s / seconds * 100,
        "client_pct": own_s / seconds * 100,
    }


async def wake(settings: Settings, bound_ms: int, quiet_s: float, samples: int) -> list[float]:
    """One hop's latency (ms) after ``quiet_s`` idle, with the wait bounded by ``bound_ms``."""
    topic = f"wake-{bound_ms}-{time.monotonic_ns()}"
    await ensure_topics(settings.model_copy(update={"topic_partitions": 6}), [topic])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        fetch_max_wait_ms=5,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    await producer.start()
    schedule = FetchWait(base_ms=5, idle_ms=bound_ms)
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def poll() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            wait_ms = schedule.update(busy=bool(batches), now=time.monotonic())
            set_fetch_wait(consumer, wait_ms)
            if batches:
                arrived.put_nowait(time.perf_counter())

    consumer.assign([TopicPartition(topic, p) for p in range(6)])
    poller = asyncio.create_task(poll())
    out = []
    try:
        await asyncio.sleep(1)
        for i in range(samples):
            await asyncio.sleep(quiet_s)
            sent = time.perf_counter()
            await producer.send_and_wait(topic, b"x", partition=i % 6)
            out.append((await arrived.get() - sent) * 1000)
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await producer.stop()
        await consumer.stop()
    return out


async def main_async(repeat: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="saga-fetch-") as tmp, embedded(Path(tmp)) as base:
        state = json.loads((Path(tmp) / "stack" / "stack.json").read_text())
        broker = psutil.Process(int(state["broker"]["pid"]))
        for round_ in range(repeat):
            for name, shape in SHAPES.items():
                figures = await measure(base, broker, shape, seconds)
                rounded = {k: round(v, 1) for k, v in figures.items()}
                print(json.dumps({"shape": name, "round": round_, **rounded}), flush=True)


async def wake_async(bounds: list[int], quiet_s: float, samples: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="saga-fetch-") as tmp, embedded(Path(tmp)) as base:
        for round_ in range(repeat):
            for bound in bounds:
                ms = sorted(await wake(base, bound, quiet_s, samples))
                line = {"bound_ms": bound, "round": round_, "hop_ms": [round(x, 1) for x in ms]}
                print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--wake", action="store_true")
    parser.add_argument("--bounds", default="0,50,100")
    parser.add_argument("--quiet-seconds", type=float, default=6)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args(argv)
    if args.wake:
        bounds = [int(b) for b in args.bounds.split(",")]
        asyncio.run(wake_async(bounds, args.quiet_seconds, args.samples, args.repeat))
    else:
        asyncio.run(main_async(args.repeat, args.seconds))


if __name__ == "__main__":
    main()
