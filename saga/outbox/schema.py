"""The database schema: numbered, append-only migrations per component.

Never edit a migration that has shipped; add the next number. ``migrate``
applies what is missing under an advisory lock, so several processes starting
at once apply each migration exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

#: component -> ordered migrations (index + 1 = version).
MIGRATIONS: Final[dict[str, tuple[str, ...]]] = {
    "service": (
        # 1: inbox (one row per handled message) and outbox (events to publish).
        """
        CREATE TABLE saga_inbox (
            service      text        NOT NULL,
            message_id   text        NOT NULL,
            message_type text        NOT NULL,
            saga_id      text        NOT NULL,
            outcome      text        NOT NULL,
            attempts     integer     NOT NULL,
            handled_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (service, message_id)
        );
        CREATE TABLE saga_outbox (
            id         bigserial   PRIMARY KEY,
            service    text        NOT NULL,
            topic      text        NOT NULL,
            key        bytea,
            value      bytea,
            headers    jsonb       NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            sent_at    timestamptz
        );
        CREATE INDEX saga_outbox_unsent ON saga_outbox (service, id) WHERE sent_at IS NULL;
        """,
        # 2: rows the broker will never take are parked with the reason, not retried.
        """
        ALTER TABLE saga_outbox ADD COLUMN parked_reason text;
        DROP INDEX saga_outbox_unsent;
        CREATE INDEX saga_outbox_unsent ON saga_outbox (service, id)
            WHERE sent_at IS NULL AND parked_reason IS NULL;
        """,
        # 3: the publish-after-commit check for older unsent rows of the same saga
        # (key) is an index probe, not a walk over every unsent row of the service.
        """
        CREATE INDEX saga_outbox_unsent_key ON saga_outbox (service, key, id)
            WHERE sent_at IS NULL AND parked_reason IS NULL;
        """,
        # 4: pruning finds old inbox rows (saga.outbox.retention). BRIN: rows are
        # appended in time order, and it costs inserts next to nothing.
        """
        CREATE INDEX saga_inbox_handled_at ON saga_inbox USING brin (handled_at);
        """,
    ),
    "coordinator": (
        # 1: saga instances, the saga log (audit trail) and durable timers.
        """
        CREATE TABLE saga_instances (
            saga_id    text        PRIMARY KEY,
            saga_type  text        NOT NULL,
            status     text        NOT NULL,
            version    integer     NOT NULL,
            state      jsonb       NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX saga_instances_status ON saga_instances (status, updated_at);
        CREATE TABLE saga_log (
            id         bigserial   PRIMARY KEY,
            saga_id    text        NOT NULL,
            kind       text        NOT NULL,
            message_id text,
            type       text        NOT NULL,
            actor      text        NOT NULL,
            detail     jsonb       NOT NULL DEFAULT '{}',
            at         timestamptz NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX saga_log_event ON saga_log (message_id) WHERE kind = 'event';
        CREATE INDEX saga_log_saga ON saga_log (saga_id, id);
        CREATE TABLE saga_timers (
            saga_id text        NOT NULL,
            name    text        NOT NULL,
            due_at  timestamptz NOT NULL,
            PRIMARY KEY (saga_id, name)
        );
        CREATE INDEX saga_timers_due ON saga_timers (due_at);
        """,
        # 2: approval tasks (see saga.definition.saga.Approval), with their audit trail.
        """
        CREATE TABLE saga_tasks (
            task_id     text        PRIMARY KEY,
            saga_id     text        NOT NULL,
            saga_type   text        NOT NULL,
            step        text        NOT NULL,
            status      text        NOT NULL,
            assignee    text,
            escalations integer     NOT NULL DEFAULT 0,
            sla_due     timestamptz,
            deadline    timestamptz,
            decided_by  text,
            decided_at  timestamptz,
            reason      text,
            history     jsonb       NOT NULL DEFAULT '[]',
            created_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX saga_tasks_open ON saga_tasks (status, assignee);
        """,
        # 3: events of sagas not started yet (saga.coordinator.orphans): the record as
        # read, held for the start event until held_until, then dead-lettered.
        """
        CREATE TABLE saga_held_events (
            seq          bigserial   PRIMARY KEY,
            saga_id      text        NOT NULL,
            message_id   text        NOT NULL UNIQUE,
            topic        text        NOT NULL,
            partition    integer     NOT NULL,
            "offset"     bigint      NOT NULL,
            key          bytea,
            value        bytea,
            headers      jsonb       NOT NULL,
            timestamp_ms bigint,
            traceparent  text,
            tracestate   text,
            held_at      timestamptz NOT NULL,
            held_until   timestamptz NOT NULL,
            reason       text,
            error_type   text
        );
        CREATE INDEX saga_held_events_saga ON saga_held_events (saga_id, seq);
        CREATE INDEX saga_held_events_until ON saga_held_events (held_until);
        """,
        # 4: what people did from the console and the CLI beyond the saga log:
        # dead letters redriven, bulk actions (who, when, what, on what).
        """
        CREATE TABLE saga_audit (
            id     bigserial   PRIMARY KEY,
            at     timestamptz NOT NULL DEFAULT now(),
            actor  text        NOT NULL,
            action text        NOT NULL,
            target text        NOT NULL,
            detail jsonb       NOT NULL DEFAULT '{}'
        );
        CREATE INDEX saga_audit_at ON saga_audit (at);
        """,
        # 5: a saga row is rewritten for every event it takes. No index names a column
        # that changes then (updated_at did), and each page keeps room for the next
        # version: the update is HOT, written beside the old one with no index entry.
        # Lists by state are newest first by created_at, which this index serves.
        """
        DROP INDEX saga_instances_status;
        CREATE INDEX saga_instances_status ON saga_instances (status, created_at);
        ALTER TABLE saga_instances SET (fillfactor = 70);
        """,
        # 6: pruning finished sagas (saga.coordinator.retention) deletes their tasks
        # by saga id, not by a walk over every task.
        """
        CREATE INDEX saga_tasks_saga ON saga_tasks (saga_id);
        """,
    ),
    "vault": (
        # 1: users' connect tokens, AES-GCM ciphertext only (see saga.security.vault).
        """
        CREATE TABLE saga_connections (
            handle       text        PRIMARY KEY,
            owner        text        NOT NULL,
            provider     text        NOT NULL,
            key_id       text        NOT NULL,
            access_ct    bytea,
            refresh_ct   bytea,
            expires_at   timestamptz NOT NULL,
            revoked_at   timestamptz,
            refreshed_at timestamptz,
            created_at   timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
}

_LOCK_KEY = 0x5A6A  # advisory lock for migrations


async def migrate(connection: Any, component: str, *, extra: Sequence[str] = ()) -> int:
    """Bring ``component``'s tables up to date; returns the resulting version.

    ``extra`` statements (a service's own idempotent DDL) run after, under the
    same lock, so concurrent starts do not race on ``CREATE ... IF NOT EXISTS``.
    """
    steps = MIGRATIONS[component]
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS saga_schema_version ("
            " component text PRIMARY KEY, version integer NOT NULL)"
        )
        current = await connection.fetchval(
            "SELECT version FROM saga_schema_version WHERE component = $1", component
        )
        current = current or 0
        for version in range(current + 1, len(steps) + 1):
            await connection.execute(steps[version - 1])
        if len(steps) > current:
            await connection.execute(
                "INSERT INTO saga_schema_version VALUES ($1, $2) "
                "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
                component,
                len(steps),
            )
        for statement in extra:
            await connection.execute(statement)
    return len(steps)
