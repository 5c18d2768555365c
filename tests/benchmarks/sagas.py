"""Ours: the 4-step order saga end to end, through separate service processes and the
coordinator with its durable log in PostgreSQL.

The bench publishes ``OrderPlaced`` events (as the orders service would) and
reads the coordinator's ``saga.SagaFinished`` announcements: a saga is done
when the coordinator has committed its outcome.

* throughput: ``count`` sagas all in flight, until the last is completed;
* one saga at a time: publish to completed, p50 / p99;
* failure to compensated: sagas that fail at the shipping step (after reserve
  and charge), from the coordinator taking the failure to the saga compensated
  (refund and release, each a round trip), p50 / p99 from the saga log's times;
* RSS of every process at the end;
* CPU per saga of every process, and PostgreSQL's statements, commits and WAL per
  saga, over the throughput phase; CPU of every process idle (:mod:`tests.benchmarks.cost`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from contracts.orders import OrderPlaced
from saga.dev.system import LocalSystem
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Publisher
from saga.messages.base import Message
from saga.messages.envelope import Envelope
from saga.settings import Settings
from services.system import PROCESSES as SYSTEM
from tests.benchmarks.cost import DRIVER, Meter, Watched
from tests.benchmarks.figures import Figures, latencies, percentile
from tests.system_helpers import ROOT, fresh_database

PROCESSES = ("coordinator", "inventory", "payment", "shipping", "notification")


def system_env(settings: Settings, prefix: str, database: str) -> dict[str, str]:
    return {
        **os.environ,
        "SAGA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "SAGA_DATABASE_URL": database,
        "SAGA_ENABLE_IDEMPOTENCE": str(settings.enable_idempotence).lower(),
        "SAGA_FETCH_MAX_WAIT_MS": str(settings.fetch_max_wait_ms),
        "SAGA_TOPIC_PREFIX": prefix,
        "SAGA_TOPIC_PARTITIONS": str(settings.topic_partitions),
        # Queueing under load must not pass for a silent step.
        "SAGA_DEFINITIONS": "tests.integration.sagas:relaxed",
    }


class Finished:
    """Reads ``saga.SagaFinished``: which saga ended how, and when it was seen."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.bootstrap_servers,
            group_id=f"bench-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
        )
        self.seen: dict[str, tuple[str, float]] = {}
        #: When each saga's announcement was read, wall clock ns (as spans are timed).
        self.received_ns: dict[str, int] = {}
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()

    async def _read(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=1000)
            now = time.perf_counter()
            now_ns = time.time_ns()
            for records in batches.values():
                for record in records:
                    if dict(record.headers).get("ce_type") != b"saga.SagaFinished":
                        continue
                    status = json.loads(record.value or b"{}").get("status", "?")
                    self.seen[(record.key or b"").decode()] = (status, now)
                    self.received_ns[(record.key or b"").decode()] = now_ns
            if batches:
                self.changed.set()

    async def wait_for(self, saga_ids: set[str], timeout_s: float = 600) -> None:
        deadline = time.perf_counter() + timeout_s
        while not saga_ids <= self.seen.keys():
            if time.perf_counter() > deadline:
                missing = len(saga_ids - self.seen.keys())
                raise TimeoutError(f"{missing} sagas not finished after {timeout_s}s")
            self.changed.clear()
            await asyncio.wait_for(
                self.changed.wait(), timeout=max(0.1, deadline - time.perf_counter())
            )


def order(saga_id: str, i: int) -> Envelope[Message]:
    return Envelope(
        payload=OrderPlaced(
            order_id=saga_id, customer_id=f"c-{i % 97}", amount_cents=1200, sku=f"sku-{1 + i % 3}"
        ),
        saga_id=saga_id,
        saga_type="order",
        source="/services/orders",
    )


@dataclass
class Running:
    """The saga system a benchmark drives: its settings, processes and outcomes."""

    config: Settings
    system: LocalSystem
    finished: Finished
    topic: str  # where OrderPlaced goes

    def watched(self) -> list[Watched]:
        return [Watched(name, self.system.running[name][0].pid) for name in PROCESSES]

    def rss_mb(self) -> dict[str, float]:
        return {
            name: psutil.Process(self.system.running[name][0].pid).memory_info().rss / 2**20
            for name in PROCESSES
        }


@asynccontextmanager
async def running_system(
    settings: Settings,
    logdir: Path,
    *,
    trace_memory: bool = False,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Running]:
    """Coordinator and step services as processes, with a database and namespace of their own.

    ``env``: more settings for every process (e.g. tracing, :mod:`tests.benchmarks.hops`).

    ``trace_memory``: each process runs under tracemalloc (:mod:`tests.benchmarks.traced`)
    and writes where its memory grew to ``<logdir>/<process>.memory``.
    ``cwd``: the source tree the processes import (another revision's, for a before/after).
    """
    prefix = f"b{uuid.uuid4().hex[:6]}."
    database = fresh_database(settings.database_url.get_secret_value())
    config = settings.model_copy(
        update={"topic_prefix": prefix, "database_url": SecretStr(database)}
    )
    system = LocalSystem(
        {**system_env(settings, prefix, database), **(env or {})},
        logdir,
        cwd=cwd,
        processes=SYSTEM,
    )
    topic = f"{prefix}orders.events"
    await ensure_topics(config, [topic, f"{prefix}saga.events"])
    finished = Finished(config, f"{prefix}saga.events")
    try:
        for name in PROCESSES:
            traced = ["tests.benchmarks.traced", str(logdir / f"{name}.memory"), *SYSTEM[name]]
            await asyncio.to_thread(
                system.start,
                name,
                module=traced if trace_memory else None,
            )
        await finished.start()
        yield Running(config, system, finished, topic)
    finally:
        await finished.stop()
        system.stop_all()


async def measure(
    settings: Settings,
    logdir: Path,
    count: int,
    rounds: int,
    failures: int,
    *,
    servers: Sequence[Watched] = (),
    idle_s: float = 0,
    cwd: Path = ROOT,
    name: str = "ours: order saga, 4 services + coordinator",
    env: Mapping[str, str] | None = None,
) -> Figures:
    """``servers``: the broker and PostgreSQL processes to meter with the system's own;
    ``env``: more settings for every process."""
    async with running_system(settings, logdir, cwd=cwd, env=env) as running:
        config, finished, topic = running.config, running.finished, running.topic
        meter = Meter(
            [Watched(DRIVER, os.getpid()), *running.watched(), *servers],
            config.database_url.get_secret_value(),
        )
        async with Publisher(config) as publisher:
            warm = {f"warm-{i}" for i in range(50)}
            await publisher.publish_many([(topic, order(s, i)) for i, s in enumerate(warm)])
            await finished.wait_for(warm)
            idle = await meter.idle(idle_s) if idle_s > 0 else {}

            ids = [f"load-{i}" for i in range(count)]
            await meter.start()
            start = time.perf_counter()
            for chunk in range(0, count, 500):
                batch = ids[chunk : chunk + 500]
                await publisher.publish_many(
                    [(topic, order(s, chunk + i)) for i, s in enumerate(batch)]
                )
            await finished.wait_for(set(ids))
            end = max(finished.seen[s][1] for s in ids)
            cost = await meter.stop(count)
            throughput = count / (end - start)
            completed = sum(1 for s in ids if finished.seen[s][0] == "completed")

            samples = []
            for i in range(rounds):
                saga_id = f"one-{i}"
                sent = time.perf_counter()
                await publisher.publish(topic, order(saga_id, i))
                await finished.wait_for({saga_id})
                samples.append(finished.seen[saga_id][1] - sent)

            failing = [f"nowhere-{i}" for i in range(failures)]
            for i, saga_id in enumerate(failing):
                await publisher.publish(topic, order(saga_id, i))
                await finished.wait_for({saga_id})
            rss = running.rss_mb()
            at_once: list[str] = []
            if "def relaxed_parallel" in (cwd / "tests/integration/sagas.py").read_text():
                # The same saga declared compensation="parallel": its undos sent at once
                # (a revision from before it has no such definition).
                await asyncio.to_thread(running.system.stop, "coordinator")
                await asyncio.to_thread(
                    running.system.start,
                    "coordinator",
                    env={"SAGA_DEFINITIONS": "tests.integration.sagas:relaxed_parallel"},
                )
                at_once = [f"nowhere-parallel-{i}" for i in range(failures)]
                for i, saga_id in enumerate(at_once):
                    await publisher.publish(topic, order(saga_id, i))
                    await finished.wait_for({saga_id})
        database = config.database_url.get_secret_value()
        undo_ms = sorted(await _compensation_ms(database, failing))
        parallel_ms = sorted(await _compensation_ms(database, at_once))
    figures = latencies(name, samples, throughput)
    figures.extra = {
        **cost,
        **idle,
        "completed_share": completed / count,
        "compensate_p50_ms": percentile(undo_ms, 50),
        "compensate_p99_ms": percentile(undo_ms, 99),
        **{f"rss_mb_{name}": value for name, value in rss.items()},
    }
    if parallel_ms:
        figures.extra["compensate_parallel_p50_ms"] = percentile(parallel_ms, 50)
        figures.extra["compensate_parallel_p99_ms"] = percentile(parallel_ms, 99)
    return figures


async def _compensation_ms(database: str, saga_ids: list[str]) -> list[float]:
    """From the coordinator taking the shipping failure to the saga compensated."""
    db = await asyncpg.connect(database)
    try:
        rows = await db.fetch(
            "SELECT state FROM saga_instances WHERE saga_id = ANY($1::text[])", saga_ids
        )
    finally:
        await db.close()
    out = []
    for row in rows:
        state: dict[str, Any] = json.loads(row["state"])
        failed_at = _time(state["steps"]["ship"]["finished_at"])
        out.append((_time(state["finished_at"]) - failed_at) * 1000)
    return out


def _time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()
