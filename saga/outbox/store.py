"""A step service's inbox and outbox: one transaction per delivery.

Within :meth:`ServiceStore.delivery` the inbox row (message id), the handler's
own writes (on ``delivery.connection``) and the outgoing records (outbox rows)
commit together or not at all. A message already in the inbox is reported as
a duplicate, and the handler is not run again.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import asyncpg

from saga.messages.codec import EncodedRecord
from saga.outbox.schema import migrate
from saga.outbox.send_order import Written


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass
class Delivery:
    """One attempt at one message, inside one transaction (when there is a store)."""

    duplicate: bool
    connection: Any = None
    outgoing: list[tuple[str, EncodedRecord]] = field(default_factory=list)
    #: The outbox rows written for ``outgoing``, once the block is done.
    written: list[Written] = field(default_factory=list)
    #: When every write was done, before the commit (wall clock ns; for tracing).
    written_ns: int | None = None

    def emit(self, topic: str, record: EncodedRecord) -> None:
        self.outgoing.append((topic, record))


@dataclass(frozen=True, slots=True)
class Claim:
    """What the inbox records for one message of a batch."""

    message_id: str
    message_type: str
    saga_id: str


_SAVEPOINT = "delivery"


class UndoNeedsSavepoints(Exception):
    """A delivery of a batch without savepoints must be undone: only the whole
    transaction can be. The batch is rolled back and run again with savepoints.

    ``message_id`` and ``error``: the delivery whose handler failed, and how; its
    first attempt has failed so, and is not made again in the batch run again.
    ``error`` is ``None`` when the failure may be another handler's doing (the
    transaction was found aborted): then that delivery runs again too.
    """

    def __init__(self, message_id: str, error: Exception | None) -> None:
        super().__init__(message_id)
        self.message_id = message_id
        self.error = error


@dataclass
class DeliveryBatch:
    """Several deliveries in one transaction, each within a savepoint of its own.

    The inbox rows of every message are claimed at the start (outcome
    ``completed``, one attempt). A delivery runs between :meth:`begin` and
    :meth:`end`; :meth:`undo` throws away its writes. What the batch does not
    get to is handed back (:meth:`give_back`), and outcomes other than
    ``completed`` are recorded with :meth:`record`.

    ``savepoints=False``: no savepoint per delivery (a round trip each saved); a
    delivery that must be undone then undoes the whole batch
    (:class:`UndoNeedsSavepoints`).
    """

    connection: Any
    claimed: set[str]
    savepoints: bool = True
    outgoing: list[tuple[str, EncodedRecord]] = field(default_factory=list)
    written: list[Written] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    returned: list[str] = field(default_factory=list)
    #: When every write was done, before the commit (wall clock ns; for tracing).
    written_ns: int | None = None
    _open: bool = False

    def emit(self, topic: str, record: EncodedRecord) -> None:
        self.outgoing.append((topic, record))

    async def begin(self) -> None:
        """A savepoint for the next delivery (the previous one's is released first)."""
        if self.savepoints and not self._open:
            await self.connection.execute(f"SAVEPOINT {_SAVEPOINT}")
            self._open = True

    async def end(self, last: bool) -> None:
        """The delivery's writes are kept; raises if its handler left the transaction
        aborted (``asyncpg.InFailedSQLTransactionError``), and then the savepoint
        is still there to :meth:`undo`. Not ``last``: the next savepoint is taken in
        the same round trip."""
        if not self.savepoints:
            return
        if last:
            await self.connection.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            self._open = False
        else:
            await self.connection.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}; SAVEPOINT {_SAVEPOINT}")

    async def undo(self) -> None:
        """Throw away the current delivery's writes; its savepoint stays for the next."""
        if not self.savepoints:
            raise RuntimeError("no savepoint to undo to: this batch runs without them")
        await self.connection.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")

    async def close(self) -> None:
        """No further delivery runs in this batch."""
        if self._open:
            await self.connection.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            self._open = False

    def record(self, message_id: str, outcome: str) -> None:
        self.outcomes[message_id] = outcome

    def give_back(self, message_ids: Sequence[str]) -> None:
        """These were claimed but not handled here: their inbox rows are removed."""
        self.returned.extend(m for m in message_ids if m in self.claimed)


class DeliveryStore(Protocol):
    """Where a service records what it handled and what it must publish."""

    def delivery(
        self, message_id: str, message_type: str, saga_id: str, outcome: str, attempts: int
    ) -> AbstractAsyncContextManager[Delivery]: ...


@runtime_checkable
class BatchStore(DeliveryStore, Protocol):
    """A store that also runs several deliveries in one transaction."""

    def batch(
        self, claims: Sequence[Claim], *, savepoints: bool = True
    ) -> AbstractAsyncContextManager[DeliveryBatch]: ...


class PostgresServiceStore:
    """Inbox/outbox in PostgreSQL for service ``service``."""

    def __init__(
        self,
        database_url: str,
        service: str,
        *,
        schema: Sequence[str] = (),
        pool_size: int = 10,
        command_timeout_s: float = 60.0,
        components: Sequence[str] = ("service",),
        keep_sent: bool = False,
    ) -> None:
        self.database_url = database_url
        #: Sent rows are kept (``sent_at`` set, pruned after the retention) rather than
        #: deleted once the broker has them.
        self.keep_sent = keep_sent
        self.service = service
        self._schema = schema
        self._command_timeout_s = command_timeout_s
        self._components = components
        self._pool_size = pool_size
        self._pool: Any = None

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the store is not started")
        return self._pool

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.database_url,
            min_size=1,
            max_size=self._pool_size,
            # A database that stops answering fails the statement instead of hanging
            # the partition; the delivery is then retried.
            command_timeout=self._command_timeout_s,
            # Every delivery runs in a transaction (SET LOCAL, transaction-scoped
            # advisory locks): skip the reset query (RESET ALL, UNLISTEN, CLOSE ALL,
            # unlock) asyncpg runs on each release, a round trip per delivery. An open
            # transaction is still rolled back on release.
            reset=_keep_session,
        )
        async with self._pool.acquire() as connection:
            for component in self._components:
                await migrate(connection, component)
            await migrate(connection, "service", extra=self._schema)

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def delivery(
        self, message_id: str, message_type: str, saga_id: str, outcome: str, attempts: int
    ) -> AsyncIterator[Delivery]:
        """A transaction that claims ``message_id`` in the inbox, or reports a duplicate.

        ``outcome`` and ``attempts`` are what the inbox records if the block
        succeeds; the outbox rows for ``delivery.emit``-ed records are written
        before commit. Any error rolls everything back.
        """
        async with self.pool.acquire() as connection, connection.transaction():
            claimed = await connection.fetchval(
                "INSERT INTO saga_inbox (service, message_id, message_type, saga_id, outcome,"
                " attempts) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (service, message_id) DO NOTHING RETURNING true",
                self.service,
                message_id,
                message_type,
                saga_id,
                outcome,
                attempts,
            )
            delivery = Delivery(duplicate=not claimed, connection=connection)
            yield delivery
            if delivery.outgoing and not delivery.duplicate:
                delivery.written = await self.write_outbox(connection, delivery.outgoing)
            delivery.written_ns = time.time_ns()

    @asynccontextmanager
    async def batch(
        self, claims: Sequence[Claim], *, savepoints: bool = True
    ) -> AsyncIterator[DeliveryBatch]:
        """One transaction for several deliveries: :class:`DeliveryBatch` (with a
        savepoint per delivery, or none).

        A message already in the inbox (or twice in ``claims``) is not in
        ``claimed`` after its first occurrence: a duplicate.
        """
        async with self.pool.acquire() as connection, connection.transaction():
            unique = list({claim.message_id: claim for claim in reversed(claims)}.values())
            rows = await connection.fetch(
                "INSERT INTO saga_inbox (service, message_id, message_type, saga_id, outcome,"
                " attempts) SELECT $1, t.id, t.type, t.saga, 'completed', 1"
                " FROM unnest($2::text[], $3::text[], $4::text[]) AS t(id, type, saga)"
                " ON CONFLICT (service, message_id) DO NOTHING RETURNING message_id",
                self.service,
                [claim.message_id for claim in unique],
                [claim.message_type for claim in unique],
                [claim.saga_id for claim in unique],
            )
            batch = DeliveryBatch(
                connection, claimed={row["message_id"] for row in rows}, savepoints=savepoints
            )
            yield batch
            await batch.close()
            if batch.returned:
                await connection.execute(
                    "DELETE FROM saga_inbox WHERE service = $1 AND message_id = ANY($2::text[])",
                    self.service,
                    batch.returned,
                )
            if batch.outcomes:
                await connection.execute(
                    "UPDATE saga_inbox i SET outcome = t.outcome"
                    " FROM unnest($2::text[], $3::text[]) AS t(id, outcome)"
                    " WHERE i.service = $1 AND i.message_id = t.id",
                    self.service,
                    list(batch.outcomes),
                    list(batch.outcomes.values()),
                )
            if batch.outgoing:
                batch.written = await self.write_outbox(connection, batch.outgoing)
            batch.written_ns = time.time_ns()

    async def write_outbox(
        self, connection: Any, outgoing: Sequence[tuple[str, EncodedRecord]]
    ) -> list[Written]:
        """Insert ``outgoing`` in order; each row with the older unsent rows of its key
        (see :class:`Written`), for the publish after commit."""
        rows = await connection.fetch(
            "WITH written AS ("
            " INSERT INTO saga_outbox (service, topic, key, value, headers)"
            " SELECT $1, t.topic, t.key, t.value, t.headers::jsonb"
            " FROM unnest($2::text[], $3::bytea[], $4::bytea[], $5::text[])"
            " WITH ORDINALITY AS t(topic, key, value, headers, n) ORDER BY t.n"
            " RETURNING id, key)"
            # The statement's own rows are not seen here: they go out in order anyway.
            " SELECT w.id, ARRAY(SELECT p.id FROM saga_outbox p WHERE p.service = $1"
            "   AND p.key = w.key AND p.sent_at IS NULL AND p.parked_reason IS NULL"
            "   AND p.id < w.id ORDER BY p.id) AS waits_for"
            " FROM written w ORDER BY w.id",
            self.service,
            [topic for topic, _ in outgoing],
            [record.key for _, record in outgoing],
            [record.value for _, record in outgoing],
            [_headers_json(record.headers) for _, record in outgoing],
        )
        return [
            Written(row["id"], topic, record, tuple(row["waits_for"]))
            for row, (topic, record) in zip(rows, outgoing, strict=True)
        ]

    async def unsent(
        self,
        connection: Any,
        ids: Sequence[int] | None,
        limit: int,
        *,
        settled_s: float = 0.0,
        skip: Collection[int] = (),
    ) -> list[OutboxRow]:
        """Lock unsent rows (all, or ``ids``) in id order, skipping rows locked elsewhere.

        All: only rows written ``settled_s`` ago or earlier, and not in ``skip``.
        """
        if ids is None:
            rows = await connection.fetch(
                "SELECT id, topic, key, value, headers FROM saga_outbox"
                " WHERE service = $1 AND sent_at IS NULL AND parked_reason IS NULL"
                " AND created_at <= clock_timestamp() - make_interval(secs => $3)"
                " AND NOT id = ANY($4::bigint[])"
                " ORDER BY id LIMIT $2"
                " FOR UPDATE SKIP LOCKED",
                self.service,
                limit,
                settled_s,
                list(skip),
            )
        else:
            rows = await connection.fetch(
                "SELECT id, topic, key, value, headers FROM saga_outbox"
                " WHERE id = ANY($1::bigint[]) AND sent_at IS NULL AND parked_reason IS NULL"
                " ORDER BY id FOR UPDATE SKIP LOCKED",
                list(ids),
            )
        return [
            OutboxRow(
                id=row["id"],
                topic=row["topic"],
                key=row["key"],
                value=row["value"],
                headers=_headers_from_json(row["headers"]),
            )
            for row in rows
        ]

    async def mark_sent(self, connection: Any, ids: Sequence[int]) -> None:
        """The broker has these rows: deleted, or kept with ``sent_at`` set (``keep_sent``).
        ``connection``: within a transaction, or the pool (a statement of its own).

        A delete writes a few bytes of WAL; an update writes the whole row again (its
        value and headers) and a new entry in its primary key.
        """
        if self.keep_sent:
            await connection.execute(
                "UPDATE saga_outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", list(ids)
            )
        else:
            await connection.execute(
                "DELETE FROM saga_outbox WHERE id = ANY($1::bigint[])", list(ids)
            )

    async def park(self, connection: Any, row_id: int, reason: str) -> None:
        await connection.execute(
            "UPDATE saga_outbox SET parked_reason = $2 WHERE id = $1", row_id, reason
        )

    async def outcome(self, message_id: str) -> str | None:
        return await self.pool.fetchval(  # type: ignore[no-any-return]
            "SELECT outcome FROM saga_inbox WHERE service = $1 AND message_id = $2",
            self.service,
            message_id,
        )


def _headers_json(headers: Sequence[tuple[str, bytes | None]]) -> str:
    return json.dumps(
        [
            [name, None if value is None else base64.b64encode(value).decode()]
            for name, value in headers
        ]
    )


def _headers_from_json(raw: str | list[Any]) -> list[tuple[str, bytes | None]]:
    data = json.loads(raw) if isinstance(raw, str) else raw
    return [(name, None if value is None else base64.b64decode(value)) for name, value in data]


async def _keep_session(connection: Any) -> None:
    """Pool reset hook: nothing to undo between deliveries (see ``start``)."""
