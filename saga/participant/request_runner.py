"""Runs one HTTP request through its route: span, transaction, outbox, answer.

The counterpart of :mod:`saga.participant.step_runner` for :mod:`saga.participant.routes`. With a
store, the route's writes and the events it starts sagas with commit in one
transaction and are then published (the outbox relay retries if publishing
fails) in the background, so the answer does not wait for the broker; without
one, the events are published before the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import ValidationError

from saga.kafka.dead_letter import describe_error
from saga.messages.codec import encode
from saga.messages.topics import prefixed, topic_for_type
from saga.observability import tracing
from saga.outbox.send_order import Written
from saga.outbox.store import PostgresServiceStore
from saga.participant.routes import (
    ANONYMOUS,
    BadRequest,
    HttpRequest,
    NoVault,
    RequestContext,
    Route,
)
from saga.participant.service import Service
from saga.participant.step_runner import AfterCommit, Emit
from saga.security.auth import Forbidden, Principal

if TYPE_CHECKING:
    from saga.security.vault import Vault

log = logging.getLogger(__name__)


class RequestRunner:
    def __init__(
        self,
        service: Service,
        *,
        store: PostgresServiceStore | None,
        emit: Emit,
        after_commit: AfterCommit | None,
        topic_prefix: str = "",
        vault: Vault | None = None,
    ) -> None:
        self.service = service
        self._vault = vault
        self._store = store
        self._emit = emit
        self._after_commit = after_commit
        self._prefix = topic_prefix
        self._publishing: set[asyncio.Task[None]] = set()

    async def __call__(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        principal: Principal = ANONYMOUS,
    ) -> tuple[int, Any]:
        """Answer ``method target`` by the route it matches (404: none)."""
        path, _, query = target.partition("?")
        for route in self.service.routes:
            params = route.match(method, path)
            if params is not None:
                request = HttpRequest(method, path, params, dict(parse_qsl(query)), body, headers)
                return await self.run(route, request, principal)
        return 404, {"error": f"no route for {path}"}

    async def run(
        self, route: Route, request: HttpRequest, principal: Principal
    ) -> tuple[int, Any]:
        """Answer ``request`` by ``route`` for ``principal``; a caller's W3C
        ``traceparent`` header is continued."""
        headers = request.headers
        with tracing.tracer().start_as_current_span(
            f"{request.method} {route.pattern}",
            context=tracing.context_of(headers.get("traceparent"), headers.get("tracestate")),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "http.route": route.pattern,
                "url.path": request.path,
                "service": self.service.name,
            },
        ) as span:
            status, answer = await self._run(route.handler, request, principal, span)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return status, answer

    async def _run(
        self, handler: Any, request: HttpRequest, principal: Principal, span: trace.Span
    ) -> tuple[int, Any]:
        traceparent, tracestate = tracing.context_headers(span)
        try:
            async with self._transaction() as connection:
                ctx = RequestContext(
                    self.service.name,
                    self.service.source,
                    connection,
                    traceparent=traceparent,
                    tracestate=tracestate,
                    _vault=self._vault,
                    principal=principal,
                )
                response = await handler(request, ctx)
                records = [
                    (
                        prefixed(self._prefix, topic_for_type(e.type, e.payload.kind)),
                        encode(e),
                    )
                    for e in ctx.started
                ]
                written = (
                    await self._store.write_outbox(connection, records)
                    if self._store is not None and records
                    else []
                )
        except BadRequest as exc:
            return exc.status, {"error": str(exc)}
        except Forbidden as exc:
            return 403, {"error": str(exc)}
        except NoVault as exc:
            return 503, {"error": str(exc)}
        except ValidationError as exc:
            return 400, {
                "error": "invalid request",
                "details": exc.errors(include_url=False, include_input=False),
            }
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path)
            span.record_exception(exc)
            return 500, {"error": "internal error (see the service's log)"}
        for envelope in ctx.started:
            span.set_attribute("saga.id", envelope.saga_id)
        if self._store is None:
            await self._emit(records)  # nothing else would publish them: answer after
        elif written and self._after_commit is not None:
            # Committed: answer now, publish in the background (the relay retries).
            task = asyncio.create_task(self._publish(written))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)
        return response.status, response.body

    async def _publish(self, written: list[Written]) -> None:
        assert self._after_commit is not None
        try:
            await self._after_commit(written)
        except Exception as exc:
            log.warning("publish after commit failed (%s); relay will retry", describe_error(exc))

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        if self._store is None:
            yield None
            return
        async with self._store.pool.acquire() as connection, connection.transaction():
            yield connection
