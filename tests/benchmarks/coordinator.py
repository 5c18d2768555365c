"""Coordinator throughput: events/s decided and persisted, from a pre-loaded backlog.

Publishes every event of N happy-path order sagas (5 events each) to the
events topics, then starts a coordinator in this process and times how long
it takes until all N sagas are completed in PostgreSQL (start-up and group
join included). ``python -m tests.benchmarks.coordinator`` runs it alone on
the embedded stack; ``make bench`` runs it as one row of the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from pydantic import SecretStr

from saga.coordinator.runtime import CoordinatorRuntime, load_definitions
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Publisher
from saga.messages.base import Message
from saga.messages.envelope import Envelope
from saga.settings import Settings
from tests.benchmarks.stack import embedded
from tests.system_helpers import fresh_database, happy_events

EVENTS_PER_SAGA = 5


async def events_per_second(base: Settings, sagas: int) -> float:
    """Events/s one coordinator decides and persists, from a backlog of ``sagas`` sagas."""
    database = fresh_database(base.database_url.get_secret_value())
    settings = base.model_copy(
        update={
            "topic_prefix": f"c{uuid.uuid4().hex[:6]}.",
            "database_url": SecretStr(database),
            "health_port": None,
            "definitions": "tests.integration.sagas:relaxed",
        }
    )
    prefix = settings.topic_prefix
    topics = [f"{prefix}{s}.events" for s in ("orders", "inventory", "payment", "shipping")]
    await ensure_topics(settings, [*topics, f"{prefix}notification.events"])
    async with Publisher(settings) as publisher:
        batch: list[tuple[str, Envelope[Message]]] = []
        for n in range(sagas):
            batch.extend((prefix + topic, e) for topic, e in happy_events(f"bench-{n}"))
            if len(batch) >= 2000:
                await publisher.publish_many(batch)
                batch = []
        await publisher.publish_many(batch)
    runtime = CoordinatorRuntime(load_definitions(settings.definitions), settings)
    start = time.perf_counter()
    await runtime.start()
    serving = asyncio.create_task(runtime.run())
    db = await asyncpg.connect(database)
    try:
        done = 0
        while done < sagas:
            await asyncio.sleep(0.1)
            done = await db.fetchval(
                "SELECT count(*) FROM saga_instances WHERE status = 'completed'"
            )
    finally:
        await db.close()
    elapsed = time.perf_counter() - start
    runtime.consumer.stop()
    await serving
    return EVENTS_PER_SAGA * sagas / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sagas", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp, embedded(Path(tmp)) as settings:
        rate = await events_per_second(settings, args.sagas)
        print(f"coordinator: {rate:,.0f} events/s ({args.sagas} sagas in the backlog)")


if __name__ == "__main__":
    asyncio.run(main())
