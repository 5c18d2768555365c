"""Retention: finished sagas are deleted, a batch at a time, once old enough.

A saga that completed or was compensated is kept ``finished`` (7 days by default)
after it finished; one resolved by an operator, ``resolved`` (30 days): its end was
a person's call on a saga the coordinator could not finish, and people may still
need to see what was left undone. Running, compensating and parked sagas are never
deleted, whatever their age: a parked saga waits for an operator.

Deleting a saga deletes its row, its saga log, its timers (a finished saga has
none) and its approval tasks. The operators' entries of its log (retry, skip,
resolve, cancel, task decisions) are copied to ``saga_audit`` first, so the audit
of what people did outlives the sagas they did it to; ``saga_audit`` is never
pruned (it grows with people's actions, not with traffic).

The saga row and its log are also what makes the coordinator ignore a start event
read again: keep ``finished`` at least as long as the topics keep records, as for
the inbox (:mod:`saga.outbox.retention`). An event of a saga read after its saga was
deleted is held and dead-lettered as an orphan (:mod:`saga.coordinator.orphans`).

Several coordinators may prune at once: a saga another one is deleting is skipped,
and so is a saga a decision holds (the per-saga lock of
:func:`saga.coordinator.store.lock_sagas`), whose row that decision may still write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from saga.coordinator.state import FINISHED
from saga.observability import metrics
from saga.settings import Settings

#: How many sagas one statement deletes: a short transaction, brief locks.
BATCH = 500


@dataclass(frozen=True)
class SagaRetention:
    """``SagaRetention(finished=timedelta(days=7), resolved=timedelta(days=30))``;
    ``every``: how often the coordinator prunes."""

    finished: timedelta = timedelta(days=7)
    resolved: timedelta = timedelta(days=30)
    every: timedelta = timedelta(minutes=10)

    @classmethod
    def of(cls, settings: Settings) -> SagaRetention | None:
        """From ``settings``; ``None`` when pruning is off (``prune_interval_ms=0``)."""
        if not settings.prune_interval_ms:
            return None
        return cls(
            finished=timedelta(hours=settings.finished_saga_retention_hours),
            resolved=timedelta(hours=settings.resolved_saga_retention_hours),
            every=timedelta(milliseconds=settings.prune_interval_ms),
        )

    def kept_for(self, status: str) -> timedelta | None:
        """How long a saga of ``status`` is kept after it finished; ``None``: for
        good (it has not finished, or waits for a person)."""
        if status not in FINISHED:
            return None
        return self.resolved if status == "resolved" else self.finished

    def by_status(self) -> dict[str, timedelta]:
        """Each finished status and how long a saga of it is kept."""
        found = {status: self.kept_for(status) for status in sorted(FINISHED)}
        return {status: kept for status, kept in found.items() if kept is not None}


def not_finished(statuses: list[str]) -> list[str]:
    """Those of ``statuses`` that are not a finished saga's (never pruned)."""
    return [status for status in statuses if status not in FINISHED]


# A saga finished when its state says so; created_at (never later) narrows the
# search to a range of the index on (status, created_at). (No index names updated_at,
# which every event changes: the saga row's updates stay HOT.)
_OLD = (
    "status = $1 AND created_at < now() - make_interval(secs => $2)"
    " AND coalesce((state->>'finished_at')::timestamptz, updated_at)"
    "   < now() - make_interval(secs => $2)"
)

_COUNT = f"SELECT count(*) FROM saga_instances WHERE {_OLD}"  # noqa: S608 (fixed text)

# An array, not a join: each table is probed by its index on saga_id, however many
# rows the planner expects.
_DOOMED = "ANY(ARRAY(SELECT saga_id FROM doomed))"

_DELETE = (
    "WITH doomed AS ("  # noqa: S608 (fixed text)
    f" SELECT saga_id FROM saga_instances WHERE {_OLD}"
    # The key lock_sagas takes: not while a decision on the saga is under way.
    "   AND pg_try_advisory_xact_lock(hashtextextended(saga_id, 7))"
    "   LIMIT $3 FOR UPDATE SKIP LOCKED),"
    f" logged AS (DELETE FROM saga_log WHERE saga_id = {_DOOMED}"
    "   RETURNING saga_id, kind, type, actor, detail, at),"
    " audited AS (INSERT INTO saga_audit (at, actor, action, target, detail)"
    "   SELECT at, actor, type, saga_id, detail FROM logged WHERE kind = 'operator'),"
    f" timers AS (DELETE FROM saga_timers WHERE saga_id = {_DOOMED}),"
    f" tasks AS (DELETE FROM saga_tasks WHERE saga_id = {_DOOMED}),"
    f" gone AS (DELETE FROM saga_instances WHERE saga_id = {_DOOMED}"
    "   RETURNING 1)"
    " SELECT count(*) FROM gone"
)


def _checked(older_than: Mapping[str, timedelta]) -> None:
    wrong = not_finished(list(older_than))
    if wrong:
        raise ValueError(f"only finished sagas are pruned, not {', '.join(wrong)}")


async def prunable(connection: Any, older_than: Mapping[str, timedelta]) -> dict[str, int]:
    """How many sagas of each status finished longer than ``older_than[status]`` ago
    (by the database clock): what :func:`prune_sagas` would delete now."""
    _checked(older_than)
    found = {}
    for status, age in older_than.items():
        count: int = await connection.fetchval(_COUNT, status, age.total_seconds())
        found[status] = count
    return found


async def prune_sagas(
    pool: Any, older_than: Mapping[str, timedelta], *, batch: int = BATCH
) -> dict[str, int]:
    """Delete the sagas of each status that finished longer than ``older_than[status]``
    ago (by the database clock), with their log, timers and tasks; how many of each.

    ``pool`` is an asyncpg pool or a connection outside a transaction: each batch is
    a transaction of its own."""
    _checked(older_than)
    pruned = {}
    for status, age in older_than.items():
        total = 0
        while True:
            deleted: int = await pool.fetchval(_DELETE, status, age.total_seconds(), batch)
            total += deleted
            if deleted < batch:
                break
        pruned[status] = total
        if total:
            metrics.sagas_pruned.add(total, {"saga.status": status})
    return pruned
