"""HTTP routes of a service: how sagas are started from outside Kafka.

A route is registered on the :class:`~saga.participant.service.Service` and served by its
process on the health port, next to ``/healthz`` and ``/readyz`` (Starlette on uvicorn:
:mod:`saga.http`). Every route needs a bearer token; ``role=`` asks for a role too
(``viewer``, ``operator``, ``approver``), and ``ctx.principal`` is the verified caller::

    @service.route("POST", "/orders", role="operator")
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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from saga.errors import SagaError
from saga.messages.base import Event, Message
from saga.messages.codec import unstorable
from saga.messages.envelope import Envelope
from saga.messages.lifecycle import CancelRequested
from saga.participant.context import NoDatabase
from saga.security.auth import Principal

if TYPE_CHECKING:
    from saga.security.vault import Vault


#: How deeply a request's JSON body may nest (objects and lists); deeper is a 400.
MAX_JSON_DEPTH = 32

#: Nobody unauthenticated: the caller of a ``public=True`` route.
ANONYMOUS = Principal("", frozenset())


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    body: bytes = b""
    #: Request headers, names in lower case.
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body as JSON; :class:`BadRequest` when it is not JSON, holds a NUL
        character or nests deeper than :data:`MAX_JSON_DEPTH`. (Whatever its
        Content-Type says: ``curl -d`` labels JSON as a form.)"""
        return parse_json(self.body)


def parse_json(body: bytes) -> Any:
    """``body`` as JSON (empty: None); :class:`BadRequest` saying why it cannot be.

    Refused as well as malformed JSON: a NUL anywhere and a lone surrogate (no database
    stores them in text), nesting deeper than :data:`MAX_JSON_DEPTH`, and
    ``NaN``/``Infinity`` (not JSON).
    """
    if not body:
        return None
    if b"\x00" in body:
        raise BadRequest("the body holds a NUL byte")
    try:
        found = json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    except RecursionError:
        raise BadRequest(f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    _check_tree(found)
    return found


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_tree(value: Any) -> None:
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            problem = unstorable(item)
            if problem is not None:
                raise BadRequest(f"the body holds {problem}")
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise BadRequest(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: Any = None


class BadRequest(SagaError):
    """Raise from a route to answer 400 (or ``status``, a 4xx) with this message."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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
    #: The verified caller (from the bearer token); :data:`ANONYMOUS` on a public route.
    principal: Principal = ANONYMOUS

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
    #: The role a caller needs; None: any authenticated caller.
    role: str | None = None
    #: Served without a token (for what must be open, e.g. a provider's webhook).
    public: bool = False

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
