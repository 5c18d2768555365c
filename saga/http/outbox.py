"""Starting sagas from an ASGI app of your own (FastAPI, Starlette, ...), without our server.

In your endpoint, in your request's own asyncpg transaction: your writes and the
sagas' start events commit together, or not at all (the outbox)::

    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("INSERT INTO orders ...", ...)
        async with saga_transaction(connection, service="orders") as ctx:
            ctx.start_saga("order", OrderPlaced(...), saga_id=order_id)

and relay the outbox to Kafka from your app's lifespan (or let the service's own
step-service process, same name and database, do it)::

    @asynccontextmanager
    async def lifespan(app):
        async with outbox_relay(Settings(), service="orders"):
            yield

``service`` is the outbox's owner: the name of the saga service the events are from.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from opentelemetry import trace

from saga.kafka.publisher import Publisher
from saga.messages.codec import encode
from saga.messages.topics import prefixed, topic_for_type
from saga.observability import tracing
from saga.outbox.relay import OutboxRelay
from saga.outbox.store import PostgresServiceStore
from saga.participant.routes import ANONYMOUS, RequestContext
from saga.security.auth import Principal
from saga.settings import Settings


@asynccontextmanager
async def saga_transaction(
    connection: Any,
    *,
    service: str,
    topic_prefix: str = "",
    principal: Principal = ANONYMOUS,
) -> AsyncIterator[RequestContext]:
    """A :class:`RequestContext` whose ``start_saga``/``cancel_saga`` write to ``service``'s
    outbox on ``connection`` (an asyncpg connection), in its transaction: in yours if one is
    open (a savepoint), else in one of its own. Nothing is written if the block raises,
    and nothing is sent unless the transaction commits. The sagas continue the current
    trace. The outbox tables must exist: :func:`outbox_relay` (or the service's process)
    creates them."""
    traceparent, tracestate = tracing.context_headers(trace.get_current_span())
    async with connection.transaction():
        ctx = RequestContext(
            service,
            f"/services/{service}",
            connection,
            traceparent=traceparent,
            tracestate=tracestate,
            principal=principal,
        )
        yield ctx
        if ctx.started:
            records = [
                (prefixed(topic_prefix, topic_for_type(e.type, e.payload.kind)), encode(e))
                for e in ctx.started
            ]
            await PostgresServiceStore("", service).write_outbox(connection, records)


@asynccontextmanager
async def outbox_relay(settings: Settings, *, service: str) -> AsyncIterator[OutboxRelay]:
    """Publish ``service``'s committed outbox rows to Kafka while the block runs (every
    ``SAGA_RELAY_INTERVAL_MS``); creates the outbox tables in ``SAGA_DATABASE_URL`` first.
    On exit, what is left is published and the connections are closed."""
    store = PostgresServiceStore(
        settings.database_url.get_secret_value(),
        service,
        keep_sent=settings.outbox_retention_hours > 0,
    )
    publisher = Publisher(settings, client_id=f"{service}-outbox")
    relay = OutboxRelay.of(store, publisher, settings)
    await store.start()
    try:
        await publisher.start()
        try:
            task = asyncio.create_task(relay.run(), name=f"{service} outbox relay")
            try:
                yield relay
            finally:
                relay.stop()
                with contextlib.suppress(Exception):
                    await task
                with contextlib.suppress(Exception):
                    await relay.publish_pending()
        finally:
            await publisher.stop()
    finally:
        await store.stop()
