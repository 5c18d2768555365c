"""Small helpers the integration tests share: read topics, run consumers, wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from saga.kafka.consumer import Consumer
from saga.settings import Settings


def _reader(settings: Settings, topic: str) -> AIOKafkaConsumer:
    """A group-less consumer reading ``topic`` from the start."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        enable_auto_commit=False,
    )


async def read_records(
    settings: Settings, topic: str, count: int, *, timeout_s: float = 30
) -> list[ConsumerRecord]:
    """The first ``count`` records of ``topic`` (all partitions), read without a group."""
    reader = _reader(settings, topic)
    await reader.start()
    records: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(records) < count:
                for batch in (await reader.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await reader.stop()
    return records


async def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset per partition of ``topic``."""
    probe = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await probe.start()
    try:
        partitions = probe.partitions_for_topic(topic) or set()
        return {p: await probe.committed(TopicPartition(topic, p)) for p in sorted(partitions)}
    finally:
        await probe.stop()


@contextlib.asynccontextmanager
async def running(consumer: Consumer) -> AsyncIterator[Consumer]:
    """Start ``consumer``, run it in the background, and stop it gracefully on exit."""
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stop()
        await asyncio.wait_for(task, timeout=60)


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, timeout_s: float = 30, what: str = "condition"
) -> None:
    """Wait until ``check()`` is true; fail with ``what`` after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result: Any = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


async def read_available(
    settings: Settings, topic: str, *, idle_s: float = 1.5
) -> list[ConsumerRecord]:
    """Every record of ``topic`` so far: read until nothing new comes for ``idle_s``."""
    reader = _reader(settings, topic)
    await reader.start()
    records: list[ConsumerRecord] = []
    try:
        while True:
            batches = await reader.getmany(timeout_ms=int(idle_s * 1000))
            if not batches:
                return records
            for batch in batches.values():
                records.extend(batch)
    finally:
        await reader.stop()
