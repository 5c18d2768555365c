"""The outbox relay: publish committed outbox rows, then mark them sent.

Rows are published right after their transaction commits (:meth:`publish`),
from memory: the transaction that wrote them also found which older rows of
the same saga were still unsent, and :class:`SendOrder` holds a row back until
the broker has acknowledged those. A background loop (:meth:`run`)
publishes what is left, e.g. after a crash between commit and publish, once it
has been unsent for ``settled_s``. A row is marked sent only after the broker
acknowledged it, so a crash at any point means a row is sent again, never lost.

What the broker acknowledged is marked sent (deleted, see
:meth:`PostgresServiceStore.mark_sent`) by the loop's next pass, in one statement
for everything acknowledged since the last, not by a statement of its own after
every publish: a crash in between sends those rows again (consumers drop the copies
by message id), as one between publish and marking always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from saga.errors import MessageTooLarge
from saga.kafka.dead_letter import describe_error
from saga.kafka.publisher import Publisher
from saga.outbox.retention import Retention, prune
from saga.outbox.send_order import SendOrder, Written
from saga.outbox.store import OutboxRow, PostgresServiceStore
from saga.settings import Settings

log = logging.getLogger(__name__)


class OutboxRelay:
    """``settled_s``: how long a row stays unsent before the loop takes it over
    from the publish after commit (which normally sends it within milliseconds).
    ``retention``: the loop also deletes old inbox and sent outbox rows."""

    def __init__(
        self,
        store: PostgresServiceStore,
        publisher: Publisher,
        *,
        interval_s: float = 0.5,
        batch: int = 500,
        settled_s: float | None = None,
        retention: Retention | None = None,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._interval_s = interval_s
        self._batch = batch
        self._settled_s = max(1.0, 2 * interval_s) if settled_s is None else settled_s
        self._stopping = asyncio.Event()
        self.order = SendOrder(hold_s=10 * self._settled_s)
        self._retention = retention
        #: Rows the broker acknowledged, to be marked sent by the next pass.
        self._acked: list[int] = []

    @classmethod
    def of(
        cls, store: PostgresServiceStore, publisher: Publisher, settings: Settings
    ) -> OutboxRelay:
        """The relay a service or coordinator process runs, as ``settings`` say."""
        return cls(
            store,
            publisher,
            interval_s=settings.relay_interval_ms / 1000,
            retention=Retention.of(settings),
        )

    async def publish(self, written: Sequence[Written]) -> int:
        """Publish just-committed rows now, unless an older row of the same saga is
        still to be sent (then the row is held for later); count sent. Held rows
        that waited for the ones acknowledged here go next, from here."""
        total = 0
        ready = self.order.admit(written)
        while ready:
            total += await self._hand_over(ready)
            ready = self.order.admit()
        return total

    async def _hand_over(self, ready: Sequence[Written]) -> int:
        ids = [row.id for row in ready]
        try:
            await self._publisher.publish_raw_many(
                [(row.topic, row.record.key, row.record.value, row.record.headers) for row in ready]
            )
        except BaseException:
            self.order.unsent(ids)  # still in the outbox: the relay loop sends them
            raise
        self._acked.extend(ids)
        self.order.sent(ids)
        return len(ids)

    async def mark_acknowledged(self) -> int:
        """Mark what the broker acknowledged since the last call as sent, in one
        statement; how many rows. On failure they stay to be marked next time."""
        if not self._acked:
            return 0
        ids, self._acked = self._acked, []
        try:
            await self._store.mark_sent(self._store.pool, ids)
        except BaseException:
            self._acked = ids + self._acked
            raise
        return len(ids)

    async def publish_pending(self, *, settled_s: float = 0.0) -> int:
        """Mark what was acknowledged, then publish every unsent row of this service
        (unsent for ``settled_s`` at least), oldest first; count sent."""
        await self.mark_acknowledged()
        total = 0
        while True:
            sent = await self._publish_locked(settled_s)
            total += sent
            if sent < self._batch:
                return total

    async def run(self) -> None:
        """Publish left-over rows every ``interval_s`` (and prune) until :meth:`stop`."""
        prune_at = time.monotonic()
        while not self._stopping.is_set():
            try:
                sent = await self.publish_pending(settled_s=self._settled_s)
                if sent:
                    log.info("relay published %d left-over outbox row(s)", sent)
            except Exception as exc:
                log.warning("outbox relay pass failed (%s); retrying", describe_error(exc))
            if self._retention is not None and time.monotonic() >= prune_at:
                prune_at = time.monotonic() + self._retention.every.total_seconds()
                await self._prune(self._retention)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)

    def stop(self) -> None:
        self._stopping.set()

    async def _prune(self, retention: Retention) -> None:
        try:
            pruned = await prune(self._store.pool, self._store.service, retention)
        except Exception as exc:
            log.warning("pruning old inbox/outbox rows failed (%s)", describe_error(exc))
            return
        if pruned.inbox or pruned.outbox:
            log.info(
                "pruned %d inbox and %d sent outbox row(s) past retention",
                pruned.inbox,
                pruned.outbox,
            )

    async def _publish_locked(self, settled_s: float) -> int:
        # Locked while they are sent: another process's relay skips them.
        async with self._store.pool.acquire() as connection, connection.transaction():
            rows = await self._store.unsent(
                connection,
                None,
                self._batch,
                settled_s=settled_s,
                # Acknowledged meanwhile (by a publish after commit), not marked yet.
                skip=[*self.order.in_flight, *self._acked],
            )
            if not rows:
                return 0
            ids = [row.id for row in rows]
            self.order.taken(ids)
            try:
                try:
                    await self._send(rows)
                except MessageTooLarge:
                    # One bad row must not hold up the others: send one by one, park it.
                    await self._send_one_by_one(connection, rows)
                else:
                    await self._store.mark_sent(connection, ids)
            except BaseException:
                self.order.unsent(ids)
                raise
            self.order.sent(ids)  # sent or parked: nothing waits for them any more
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
