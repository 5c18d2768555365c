"""Retention: old inbox rows and sent outbox rows are deleted, a batch at a time.

An inbox row is what drops a redelivered message, so it must outlive every
redelivery: keep ``inbox`` at least as long as the topics keep records (Kafka's
default is 7 days). Sent outbox rows are kept ``outbox`` for inspection.
Unsent and parked outbox rows are never deleted. Several replicas may prune at
once: rows another one is deleting are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from saga.settings import Settings


@dataclass(frozen=True)
class Retention:
    """``Retention(inbox=timedelta(days=7), outbox=timedelta(days=1))``; ``every``: how
    often the relay loop prunes."""

    inbox: timedelta = timedelta(days=7)
    outbox: timedelta = timedelta(days=1)
    every: timedelta = timedelta(minutes=10)

    @classmethod
    def of(cls, settings: Settings) -> Retention | None:
        """From ``settings``; ``None`` when pruning is off (``prune_interval_ms=0``)."""
        if not settings.prune_interval_ms:
            return None
        return cls(
            inbox=timedelta(hours=settings.inbox_retention_hours),
            outbox=timedelta(hours=settings.outbox_retention_hours),
            every=timedelta(milliseconds=settings.prune_interval_ms),
        )


@dataclass(frozen=True)
class Pruned:
    inbox: int
    outbox: int


async def prune(pool: Any, service: str, retention: Retention, *, batch: int = 5_000) -> Pruned:
    """Delete ``service``'s rows older than ``retention`` (by the database clock)."""
    inbox = await _repeat(
        pool,
        "WITH gone AS (DELETE FROM saga_inbox WHERE (service, message_id) IN ("
        "   SELECT service, message_id FROM saga_inbox WHERE service = $1"
        "   AND handled_at < now() - make_interval(secs => $2) LIMIT $3"
        "   FOR UPDATE SKIP LOCKED) RETURNING 1)"
        " SELECT count(*) FROM gone",
        service,
        retention.inbox.total_seconds(),
        batch,
    )
    outbox = await _repeat(
        pool,
        # Oldest first along the primary key: the rows to delete are at its start.
        "WITH gone AS (DELETE FROM saga_outbox WHERE id IN ("
        "   SELECT id FROM saga_outbox WHERE service = $1"
        "   AND sent_at < now() - make_interval(secs => $2) ORDER BY id LIMIT $3"
        "   FOR UPDATE SKIP LOCKED) RETURNING 1)"
        " SELECT count(*) FROM gone",
        service,
        retention.outbox.total_seconds(),
        batch,
    )
    return Pruned(inbox, outbox)


async def _repeat(pool: Any, statement: str, service: str, seconds: float, batch: int) -> int:
    """Run the batched delete until a batch comes back short; the rows deleted.
    Each batch is a transaction of its own: locks are held briefly."""
    total = 0
    while True:
        deleted: int = await pool.fetchval(statement, service, seconds, batch)
        total += deleted
        if deleted < batch:
            return total
