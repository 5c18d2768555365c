"""The outbox relay: publish committed outbox rows, then mark them sent.

Rows are published right after their transaction commits (:meth:`publish`),
and a background loop (:meth:`run`) publishes whatever is left, e.g. after a
crash between commit and publish. A row is marked sent only after the broker
acknowledged it, so a crash at any point means a row is sent again, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from saga.dead_letter import describe_error
from saga.errors import MessageTooLarge
from saga.publisher import Publisher
from saga.store.service_store import OutboxRow, PostgresServiceStore

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        store: PostgresServiceStore,
        publisher: Publisher,
        *,
        interval_s: float = 0.5,
        batch: int = 500,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._interval_s = interval_s
        self._batch = batch
        self._stopping = asyncio.Event()

    async def publish(self, ids: Sequence[int]) -> int:
        """Publish these rows now if nothing older of the same saga waits; count sent."""
        if not ids:
            return 0
        return await self._publish_locked(ids)

    async def publish_pending(self) -> int:
        """Publish every unsent row of this service, oldest first; count sent."""
        total = 0
        while True:
            sent = await self._publish_locked(None)
            total += sent
            if sent < self._batch:
                return total

    async def run(self) -> None:
        """Publish left-over rows every ``interval_s`` until :meth:`stop`."""
        while not self._stopping.is_set():
            try:
                sent = await self.publish_pending()
                if sent:
                    log.info("relay published %d left-over outbox row(s)", sent)
            except Exception as exc:
                log.warning("outbox relay pass failed (%s); retrying", describe_error(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)

    def stop(self) -> None:
        self._stopping.set()

    async def _publish_locked(self, ids: Sequence[int] | None) -> int:
        async with self._store.pool.acquire() as connection, connection.transaction():
            rows = await self._store.unsent(connection, ids, self._batch)
            if not rows:
                return 0
            try:
                await self._send(rows)
            except MessageTooLarge:
                # One bad row must not hold up the others: send one by one, park it.
                await self._send_one_by_one(connection, rows)
                return len(rows)
            await self._store.mark_sent(connection, [row.id for row in rows])
            return len(rows)

    async def _send(self, rows: list[OutboxRow]) -> None:
        await self._publisher.publish_raw_many(
            [(row.topic, row.key, row.value, row.headers) for row in rows]
        )

    async def _send_one_by_one(self, connection: Any, rows: list[OutboxRow]) -> None:
        for row in rows:
            try:
                await self._send([row])
            except MessageTooLarge as exc:
                log.error("outbox row %d parked: %s", row.id, exc)
                await self._store.park(connection, row.id, str(exc))
                continue
            await self._store.mark_sent(connection, [row.id])
