"""The coordinator's tables: saga rows, the saga log, timers, events held for their
saga's start event (SQL only, no decisions).

Every function takes a connection inside the caller's transaction, so one
batch of events is appended, decided, persisted and its commands put in the
outbox in ONE transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pydantic_core

from saga.coordinator.decision import TaskChange
from saga.coordinator.orphans import HeldEvent
from saga.coordinator.state import SagaState
from saga.errors import SagaError
from saga.messages.codec import RawRecord
from saga.outbox.store import _headers_from_json, _headers_json


@dataclass(frozen=True)
class LogEntry:
    saga_id: str
    kind: str  # event | decision | timer | operator | ignored
    type: str
    actor: str
    detail: dict[str, Any]
    message_id: str | None = None


class ConcurrentUpdate(SagaError):
    """A saga row changed under us (version check failed): the batch is retried."""


def _json(value: Any) -> str:
    """JSON text for a jsonb column (pydantic-core's encoder: the coordinator's hot path)."""
    return pydantic_core.to_json(value, fallback=str).decode()


def _columns(entries: Sequence[LogEntry]) -> list[list[Any]]:
    return [
        [e.saga_id for e in entries],
        [e.kind for e in entries],
        [e.message_id for e in entries],
        [e.type for e in entries],
        [e.actor for e in entries],
        [_json(e.detail) for e in entries],
    ]


async def append_events(connection: Any, entries: Sequence[LogEntry]) -> set[str]:
    """Append events; returns the message ids that were new (duplicates are skipped)."""
    if not entries:
        return set()
    rows = await connection.fetch(
        "INSERT INTO saga_log (saga_id, kind, message_id, type, actor, detail)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
        " $5::text[], $6::jsonb[]) ON CONFLICT (message_id) WHERE kind = 'event' DO NOTHING"
        " RETURNING message_id",
        *_columns(entries),
    )
    return {row["message_id"] for row in rows}


async def lock_sagas(connection: Any, saga_ids: Sequence[str]) -> datetime:
    """Serialize decisions per saga across instances and the timer loop; the
    transaction's time (``now()``), read in the same round trip.

    Transaction-scoped advisory locks, taken in sorted order (no deadlocks), so
    at most one transaction decides for a saga at a time, even before its row
    exists.
    """
    now: datetime = await connection.fetchval(
        "SELECT now() FROM (SELECT count(pg_advisory_xact_lock(hashtextextended(id, 7)))"
        " FROM (SELECT id FROM unnest($1::text[]) AS id ORDER BY id) AS ordered) AS locked",
        sorted(set(saga_ids)),
    )
    return now


async def load_sagas(
    connection: Any, saga_ids: Sequence[str], known: Mapping[str, SagaState] | None = None
) -> dict[str, SagaState]:
    """The sagas' rows. A saga in ``known`` at the version it has in the database is
    taken from there: its state is neither sent nor parsed again."""
    known = known or {}
    ids = list(set(saga_ids))
    cached = [known[i] for i in ids if i in known]
    rows = await connection.fetch(
        "SELECT s.saga_id, s.version,"
        " CASE WHEN c.version = s.version THEN NULL ELSE s.state END AS state"
        " FROM saga_instances s LEFT JOIN unnest($2::text[], $3::int[]) AS c(id, version)"
        "   ON c.id = s.saga_id"
        " WHERE s.saga_id = ANY($1::text[])",
        ids,
        [state.saga_id for state in cached],
        [state.version for state in cached],
    )
    return {
        row["saga_id"]: (
            known[row["saga_id"]]
            if row["state"] is None
            else SagaState.from_json(pydantic_core.from_json(row["state"]), row["version"])
        )
        for row in rows
    }


async def persist(
    connection: Any,
    changed: Sequence[tuple[SagaState, int | None]],
    timers: Mapping[tuple[str, str], datetime | None],
    log: Sequence[LogEntry],
) -> None:
    """What a batch decided, in one statement: changed sagas inserted or updated,
    fenced by the version each was read at; timers set (due time) or cancelled
    (``None``; the last change per timer wins); entries appended to the log."""
    if not changed and not timers and not log:
        return
    cancel = [key for key, due in timers.items() if due is None]
    upsert = [(key, due) for key, due in timers.items() if due is not None]
    rows = await connection.fetch(
        "WITH saved AS ("
        " INSERT INTO saga_instances (saga_id, saga_type, status, version, state)"
        " SELECT t.id, t.type, t.status, t.version, t.state"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::jsonb[])"
        "   AS t(id, type, status, version, state)"
        " ON CONFLICT (saga_id) DO UPDATE SET status = EXCLUDED.status,"
        "   version = EXCLUDED.version, state = EXCLUDED.state, updated_at = now()"
        " WHERE saga_instances.version = EXCLUDED.version - 1"
        " RETURNING saga_id),"
        # Each timer is either cancelled or set here, never both (one change per key).
        " cancelled AS ("
        " DELETE FROM saga_timers t USING unnest($6::text[], $7::text[]) AS c(id, name)"
        " WHERE t.saga_id = c.id AND t.name = c.name),"
        " timed AS ("
        " INSERT INTO saga_timers (saga_id, name, due_at)"
        " SELECT * FROM unnest($8::text[], $9::text[], $10::timestamptz[])"
        " ON CONFLICT (saga_id, name) DO UPDATE SET due_at = EXCLUDED.due_at),"
        " logged AS ("
        " INSERT INTO saga_log (saga_id, kind, message_id, type, actor, detail)"
        " SELECT * FROM unnest($11::text[], $12::text[], $13::text[], $14::text[],"
        " $15::text[], $16::jsonb[]))"
        " SELECT saga_id FROM saved",
        [s.saga_id for s, _ in changed],
        [s.saga_type for s, _ in changed],
        [s.status for s, _ in changed],
        [(read or 0) + 1 for _, read in changed],
        [_json(s.to_json()) for s, _ in changed],
        [k[0] for k in cancel],
        [k[1] for k in cancel],
        [k[0] for k, _ in upsert],
        [k[1] for k, _ in upsert],
        [due for _, due in upsert],
        *_columns(log),
    )
    if len(rows) != len(changed):
        written = {row["saga_id"] for row in rows}
        lost = [s.saga_id for s, _ in changed if s.saga_id not in written]
        raise ConcurrentUpdate(f"sagas changed concurrently: {lost}")


async def due_timers(connection: Any, limit: int) -> list[tuple[str, str, datetime]]:
    """Timers due by the database clock, locked so no other instance fires them."""
    rows = await connection.fetch(
        "SELECT saga_id, name, due_at FROM saga_timers WHERE due_at <= now()"
        " ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [(row["saga_id"], row["name"], row["due_at"]) for row in rows]


async def delete_timers(connection: Any, fired: Sequence[tuple[str, str, datetime]]) -> None:
    if fired:
        await connection.execute(
            "DELETE FROM saga_timers t USING unnest($1::text[], $2::text[], $3::timestamptz[])"
            " AS f(id, name, due) WHERE t.saga_id = f.id AND t.name = f.name AND t.due_at = f.due",
            [f[0] for f in fired],
            [f[1] for f in fired],
            [f[2] for f in fired],
        )


async def apply_tasks(
    connection: Any, saga_id: str, saga_type: str, changes: Sequence[TaskChange], at: datetime
) -> None:
    """Open, escalate or close approval tasks; every change is kept in the task's history."""
    for change in changes:
        entry = json.dumps(
            [
                {
                    "change": change.change,
                    "assignee": change.assignee,
                    "by": change.by,
                    "reason": change.reason,
                    "at": at.isoformat(),
                }
            ]
        )
        if change.change == "opened":
            await connection.execute(
                "INSERT INTO saga_tasks (task_id, saga_id, saga_type, step, status, assignee,"
                " sla_due, deadline, history, created_at)"
                " VALUES ($1, $2, $3, $4, 'open', $5, $6, $7, $8::jsonb, $9)"
                " ON CONFLICT (task_id) DO NOTHING",
                change.task_id,
                saga_id,
                saga_type,
                change.step,
                change.assignee,
                change.sla_due,
                change.deadline,
                entry,
                at,
            )
        elif change.change == "escalated":
            await connection.execute(
                "UPDATE saga_tasks SET assignee = $2, sla_due = $3, escalations = escalations + 1,"
                " history = history || $4::jsonb WHERE task_id = $1",
                change.task_id,
                change.assignee,
                change.sla_due,
                entry,
            )
        else:
            await connection.execute(
                "UPDATE saga_tasks SET status = $2, decided_by = $3, decided_at = $4,"
                " reason = $5, history = history || $6::jsonb WHERE task_id = $1",
                change.task_id,
                change.change,
                change.by,
                at,
                change.reason,
                entry,
            )


async def find_task(connection: Any, task_id: str) -> dict[str, Any] | None:
    row = await connection.fetchrow("SELECT * FROM saga_tasks WHERE task_id = $1", task_id)
    return dict(row) if row is not None else None


async def list_tasks(
    connection: Any, *, status: str | None = "open", assignee: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        "SELECT * FROM saga_tasks WHERE ($1::text IS NULL OR status = $1)"
        " AND ($2::text IS NULL OR assignee = $2) ORDER BY created_at LIMIT $3",
        status,
        assignee,
        limit,
    )
    return [dict(row) for row in rows]


# --- events held for their saga's start event (saga.coordinator.orphans) ---------------


async def hold_events(connection: Any, held: Sequence[HeldEvent]) -> None:
    """Keep ``held`` in this order (a message id held already is kept once)."""
    if not held:
        return
    await connection.execute(
        'INSERT INTO saga_held_events (saga_id, message_id, topic, partition, "offset",'
        " key, value, headers, timestamp_ms, traceparent, tracestate, held_at, held_until,"
        " reason, error_type)"
        ' SELECT t.saga_id, t.message_id, t.topic, t.partition, t."offset", t.key, t.value,'
        " t.headers::jsonb, t.timestamp_ms, t.traceparent, t.tracestate, t.held_at,"
        " t.held_until, t.reason, t.error_type"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[],"
        " $6::bytea[], $7::bytea[], $8::text[], $9::bigint[], $10::text[], $11::text[],"
        " $12::timestamptz[], $13::timestamptz[], $14::text[], $15::text[]) WITH ORDINALITY"
        ' AS t(saga_id, message_id, topic, partition, "offset", key, value, headers,'
        " timestamp_ms, traceparent, tracestate, held_at, held_until, reason, error_type, n)"
        " ORDER BY t.n ON CONFLICT (message_id) DO NOTHING",
        [h.saga_id for h in held],
        [h.message_id for h in held],
        [h.record.topic for h in held],
        [h.record.partition for h in held],
        [h.record.offset for h in held],
        [h.record.key for h in held],
        [h.record.value for h in held],
        [_headers_json(h.record.headers) for h in held],
        [h.record.timestamp_ms for h in held],
        [h.traceparent for h in held],
        [h.tracestate for h in held],
        [h.held_at for h in held],
        [h.held_until for h in held],
        [h.reason for h in held],
        [h.error_type for h in held],
    )


def _held(row: Any) -> HeldEvent:
    return HeldEvent(
        saga_id=row["saga_id"],
        message_id=row["message_id"],
        record=RawRecord(
            topic=row["topic"],
            partition=row["partition"],
            offset=row["offset"],
            key=row["key"],
            value=row["value"],
            headers=tuple(_headers_from_json(row["headers"])),
            timestamp_ms=row["timestamp_ms"],
        ),
        held_at=row["held_at"],
        held_until=row["held_until"],
        traceparent=row["traceparent"],
        tracestate=row["tracestate"],
        reason=row["reason"],
        error_type=row["error_type"],
    )


async def held_for(connection: Any, saga_ids: Sequence[str]) -> dict[str, list[HeldEvent]]:
    """The events held for any of ``saga_ids``, by saga, in the order held, locked (a row
    the orphan pass is dead-lettering is waited for, then gone). One statement for a
    whole batch; what is taken is deleted with :func:`drop_taken`."""
    if not saga_ids:
        return {}
    rows = await connection.fetch(
        "SELECT * FROM saga_held_events WHERE saga_id = ANY($1::text[]) ORDER BY seq FOR UPDATE",
        sorted(set(saga_ids)),
    )
    held: dict[str, list[HeldEvent]] = {}
    for row in rows:
        held.setdefault(row["saga_id"], []).append(_held(row))
    return held


async def drop_taken(connection: Any, taken: Sequence[HeldEvent]) -> None:
    """Forget held events decided now: their saga's start event came."""
    if taken:
        await connection.execute(
            "DELETE FROM saga_held_events WHERE message_id = ANY($1::text[])",
            [h.message_id for h in taken],
        )


async def expired_held(connection: Any, limit: int) -> list[HeldEvent]:
    """Held events whose hold ended by the database clock, oldest first, locked so that
    no other instance (nor a start event arriving now) takes them meanwhile."""
    rows = await connection.fetch(
        "SELECT * FROM saga_held_events WHERE held_until <= now()"
        " ORDER BY held_until, seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [_held(row) for row in rows]


async def drop_orphans(connection: Any, orphans: Sequence[HeldEvent]) -> None:
    """Forget dead-lettered orphans: their held rows, and their entries in the log (the
    event as read, the decision to hold it) unless a saga of that id exists; so a
    record redriven from the dead letters later is read as new."""
    if not orphans:
        return
    await connection.execute(
        "WITH gone AS (DELETE FROM saga_held_events WHERE message_id = ANY($2::text[])"
        " RETURNING saga_id, message_id)"
        " DELETE FROM saga_log l USING gone"
        " WHERE l.saga_id = gone.saga_id AND l.saga_id = ANY($1::text[])"
        " AND (l.message_id = gone.message_id OR l.detail->>'cause' = gone.message_id)"
        " AND NOT EXISTS (SELECT 1 FROM saga_instances s WHERE s.saga_id = gone.saga_id)",
        sorted({h.saga_id for h in orphans}),
        [h.message_id for h in orphans],
    )
