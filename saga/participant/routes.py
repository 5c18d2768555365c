"""HTTP routes of a service: how sagas are started from outside Kafka.

A route is registered on the :class:`~saga.participant.service.Service` and served by its
process on the health port, next to ``/healthz`` and ``/readyz``::

    @service.route("POST", "/orders")
    async def place(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
        order = OrderPlaced(order_id=new_id(), **request.json())
        await ctx.db.execute("INSERT INTO orders ...", ...)
        ctx.start_saga("order", order, saga_id=order.order_id)
        return HttpResponse(202, {"order_id": order.order_id})

With ``store="postgres"`` a request runs in one transaction: the handler's
writes and the events it starts sagas with are committed together (outbox),
then published. Each request is a ``SERVER`` span, the root of the sagas it
starts, so one saga is one trace from the HTTP call on.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from saga.errors import SagaError
from saga.messages.base import Event, Message
from saga.messages.envelope import Envelope
from saga.messages.lifecycle import CancelRequested
from saga.participant.context import NoDatabase

if TYPE_CHECKING:
    from saga.security.vault import Vault


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        """The body as JSON; :class:`BadRequest` when it is not."""
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from exc


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: Any = None


class BadRequest(SagaError):
    """Raise from a route to answer 400 with this message."""


class NoVault(SagaError):
    """A route asked for the vault in a process without vault keys."""


@dataclass
class RequestContext:
    """What a route handler can do: its service's database and starting sagas."""

    service_name: str
    source: str
    _db: Any = None
    started: list[Envelope[Message]] = field(default_factory=list)
    traceparent: str | None = None
    tracestate: str | None = None
    _vault: Vault | None = None

    @property
    def vault(self) -> Vault:
        """The connect-token vault, to store or revoke a user's tokens (in ``ctx.db``)."""
        if self._vault is None:
            raise NoVault(
                f"service {self.service_name!r} has no vault: declare a step connection"
                " and set SAGA_VAULT_KEYS"
            )
        return self._vault

    @property
    def db(self) -> Any:
        """The request's connection, inside its transaction (``store="postgres"``)."""
        if self._db is None:
            raise NoDatabase(f"service {self.service_name!r} has no store: use store='postgres'")
        return self._db

    def start_saga(self, saga_type: str, event: Event, *, saga_id: str) -> Envelope[Message]:
        """Start saga ``saga_type`` with ``event``: published once the request commits."""
        envelope: Envelope[Message] = Envelope(
            payload=event,
            saga_id=saga_id,
            saga_type=saga_type,
            source=self.source,
            traceparent=self.traceparent,
            tracestate=self.tracestate,
        )
        self.started.append(envelope)
        return envelope

    def cancel_saga(
        self, saga_type: str, event: CancelRequested, *, saga_id: str
    ) -> Envelope[Message]:
        """Ask the coordinator to cancel saga ``saga_id`` with ``event`` (the definition's
        ``cancelled_by``): published once the request commits. A saga whose pivot
        started is not cancelled: ``saga.CancelRefused`` says so on ``saga.events``."""
        if not isinstance(event, CancelRequested):
            raise TypeError(
                f"{type(event).__name__} is not a CancelRequested: a saga is cancelled by the"
                " event its definition names in cancelled_by"
            )
        return self.start_saga(saga_type, event, saga_id=saga_id)


RouteHandler = Callable[[HttpRequest, RequestContext], Awaitable[HttpResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: RouteHandler

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters when ``method path`` is this route (``/orders/{id}``)."""
        return match_path(self.pattern, path) if method == self.method else None


def match_path(pattern: str, path: str) -> dict[str, str] | None:
    """Parameters of ``path`` when it fits ``pattern`` (``/orders/{id}``); else None."""
    want = pattern.strip("/").split("/")
    got = path.strip("/").split("/")
    if len(want) != len(got):
        return None
    params: dict[str, str] = {}
    for expected, actual in zip(want, got, strict=True):
        if expected.startswith("{") and expected.endswith("}"):
            if not actual:
                return None
            params[expected[1:-1]] = actual
        elif expected != actual:
            return None
    return params
