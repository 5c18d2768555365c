"""A consumer in its own process, for tests that signal or kill it.

It records every handled message in PostgreSQL (message id, its pid) before
returning, prints ``started <id>`` and ``handled <id>`` lines, and serves until
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import asyncpg

from contracts.catalog import default_registry
from saga.kafka.consumer import Consumer
from saga.messages.base import Message
from saga.messages.envelope import Envelope
from saga.settings import Settings


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--commit-interval-ms", type=int, default=20)
    parser.add_argument("--handle-seconds", type=float, default=0.0)
    parser.add_argument("--fetch-max-wait-ms", type=int, default=5)
    args = parser.parse_args()
    settings = Settings(
        bootstrap_servers=args.bootstrap,
        enable_idempotence=False,
        fetch_max_wait_ms=args.fetch_max_wait_ms,
        commit_interval_ms=args.commit_interval_ms,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
    )
    db = await asyncpg.connect(args.database_url)
    await db.execute(
        f"CREATE TABLE IF NOT EXISTS {args.table} (message_id text, pid int, saga_id text)"
    )

    async def handle(envelope: Envelope[Message]) -> None:
        print(f"started {envelope.id}", flush=True)
        if args.handle_seconds:
            await asyncio.sleep(args.handle_seconds)
        await db.execute(
            f"INSERT INTO {args.table} VALUES ($1, $2, $3)",  # noqa: S608 - test table name
            envelope.id,
            os.getpid(),
            envelope.saga_id,
        )
        print(f"handled {envelope.id}", flush=True)

    consumer = Consumer(
        settings,
        topics=[args.topic],
        group_id=args.group,
        handler=handle,
        registry=default_registry(),
    )
    print("ready", flush=True)
    await consumer.serve()
    await db.close()
    print("stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
