"""Coordinator throughput: events/s decided and persisted, from a pre-loaded backlog.

Publishes every event of N happy-path order sagas (4 events each) to the
events topics, then starts a coordinator and times how long it takes until all
N sagas are completed in PostgreSQL. Prints figures; asserts nothing.
``make bench-coordinator`` runs it on the embedded broker and database.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import asyncpg

from contracts.envelope import Envelope
from contracts.messages import Message
from saga.coordinator.runtime import CoordinatorRuntime, load_definitions
from saga.dev import DevStack
from saga.provisioning import ensure_topics
from saga.publisher import Publisher
from saga.settings import Settings
from tests.system_helpers import happy_events


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sagas", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        stack = DevStack(Path(tmp), detached=False)
        info = stack.up(kafka_port=None, postgres_port=None)
        try:
            settings = Settings(
                bootstrap_servers=info.bootstrap_servers,
                database_url=info.database_url,  # type: ignore[arg-type]
                enable_idempotence=False,
                fetch_max_wait_ms=5,
                health_port=None,
                topic_partitions=6,
            )
            topics = ["orders.events", "inventory.events", "payment.events", "shipping.events"]
            await ensure_topics(settings, topics)
            async with Publisher(settings) as publisher:
                batch: list[tuple[str, Envelope[Message]]] = []
                for n in range(args.sagas):
                    batch.extend(happy_events(f"bench-{n}"))
                    if len(batch) >= 2000:
                        await publisher.publish_many(batch)
                        batch = []
                await publisher.publish_many(batch)
            total = 4 * args.sagas
            print(f"{args.sagas} sagas, {total} events in the backlog, 6 partitions per topic")

            runtime = CoordinatorRuntime(load_definitions(settings.definitions), settings)
            start = time.perf_counter()
            await runtime.start()
            serving = asyncio.create_task(runtime.run())
            db = await asyncpg.connect(info.database_url)
            try:
                while True:
                    done = await db.fetchval(
                        "SELECT count(*) FROM saga_instances WHERE status = 'completed'"
                    )
                    if done >= args.sagas:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await db.close()
            elapsed = time.perf_counter() - start
            runtime.consumer.stop()
            await serving
            print(
                f"coordinator: {total / elapsed:,.0f} events/s, {args.sagas / elapsed:,.0f} "
                f"sagas/s ({elapsed:.1f} s including start-up and group join)"
            )
        finally:
            stack.down()


if __name__ == "__main__":
    asyncio.run(main())
