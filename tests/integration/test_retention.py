"""Old inbox rows and sent outbox rows are deleted; unsent and parked ones are kept."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from saga.kafka.publisher import Publisher
from saga.messages.codec import EncodedRecord
from saga.outbox.relay import OutboxRelay
from saga.outbox.retention import Pruned, Retention, prune
from saga.outbox.store import PostgresServiceStore
from saga.settings import Settings
from tests.conftest import Infra
from tests.kafka_helpers import eventually

WEEK = Retention(inbox=timedelta(days=7), outbox=timedelta(days=1))


async def _aged(store: PostgresServiceStore, other: str) -> dict[str, int]:
    """Inbox and outbox rows of several ages; their ids by name."""
    pool = store.pool
    for service, message_id, age in (
        (store.service, "old", timedelta(days=8)),
        (store.service, "recent", timedelta(hours=1)),
        (other, "other-old", timedelta(days=8)),  # another service's rows are not ours to prune
    ):
        await pool.execute(
            "INSERT INTO saga_inbox (service, message_id, message_type, saga_id, outcome,"
            " attempts, handled_at) VALUES ($1, $2, 't', 's', 'completed', 1,"
            " now() - $3::interval)",
            service,
            message_id,
            age,
        )
    async with pool.acquire() as connection, connection.transaction():
        written = await store.write_outbox(
            connection, [("t", EncodedRecord(b"k", name.encode(), [])) for name in "ABCD"]
        )
    ids = dict(zip(("sent long ago", "sent lately", "never sent", "parked"), written, strict=True))
    await pool.execute(
        "UPDATE saga_outbox SET created_at = now() - interval '9 days' WHERE id = ANY($1)",
        [w.id for w in written],
    )
    await pool.execute(
        "UPDATE saga_outbox SET sent_at = now() - interval '2 days' WHERE id = $1",
        ids["sent long ago"].id,
    )
    await pool.execute(
        "UPDATE saga_outbox SET sent_at = now() - interval '1 hour' WHERE id = $1",
        ids["sent lately"].id,
    )
    await pool.execute(
        "UPDATE saga_outbox SET parked_reason = 'too large' WHERE id = $1", ids["parked"].id
    )
    return {name: w.id for name, w in ids.items()}


async def _left(
    store: PostgresServiceStore, other: str, ids: dict[str, int]
) -> tuple[set[str], set[str]]:
    inbox = await store.pool.fetch(
        "SELECT message_id FROM saga_inbox WHERE service = ANY($1)", [store.service, other]
    )
    outbox = await store.pool.fetch(
        "SELECT id FROM saga_outbox WHERE id = ANY($1)", list(ids.values())
    )
    names = {v: k for k, v in ids.items()}
    return {r["message_id"] for r in inbox}, {names[r["id"]] for r in outbox}


async def test_pruning_deletes_only_rows_past_retention(infra: Infra) -> None:
    store = PostgresServiceStore(infra.database_url, f"keep{uuid.uuid4().hex[:6]}", keep_sent=True)
    other = f"other{uuid.uuid4().hex[:6]}"
    await store.start()
    try:
        ids = await _aged(store, other)
        # Batches of one: the delete goes on until a batch comes back short.
        assert await prune(store.pool, store.service, WEEK, batch=1) == Pruned(1, 1)
        inbox, outbox = await _left(store, other, ids)
        assert await prune(store.pool, store.service, WEEK) == Pruned(0, 0)
    finally:
        await store.stop()
    assert inbox == {"recent", "other-old"}
    assert outbox == {"sent lately", "never sent", "parked"}


async def test_the_relay_loop_prunes_on_its_interval(infra: Infra, settings: Settings) -> None:
    store = PostgresServiceStore(infra.database_url, f"loop{uuid.uuid4().hex[:6]}", keep_sent=True)
    other = f"other{uuid.uuid4().hex[:6]}"
    await store.start()
    try:
        ids = await _aged(store, other)
        await store.pool.execute(
            "UPDATE saga_outbox SET parked_reason = 'kept out of the way' WHERE id = $1",
            ids["never sent"],
        )
        async with Publisher(settings) as publisher:
            retention = Retention(inbox=WEEK.inbox, outbox=WEEK.outbox, every=timedelta(hours=1))
            relay = OutboxRelay(store, publisher, interval_s=0.05, retention=retention)
            loop = asyncio.create_task(relay.run())
            try:

                async def pruned() -> bool:
                    return (await _left(store, other, ids))[0] == {"recent", "other-old"}

                await eventually(pruned, timeout_s=10, what="the first pruning pass")
                # Once per interval: rows aged now stay until the next pass.
                await store.pool.execute(
                    "UPDATE saga_inbox SET handled_at = now() - interval '8 days'"
                    " WHERE service = $1",
                    store.service,
                )
                await asyncio.sleep(0.5)
                inbox, outbox = await _left(store, other, ids)
            finally:
                relay.stop()
                await loop
    finally:
        await store.stop()
    assert inbox == {"recent", "other-old"}
    assert outbox == {"sent lately", "never sent", "parked"}
