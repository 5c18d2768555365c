"""The ASGI app of a saga process: health, then endpoints behind bearer tokens.

``/healthz`` and ``/readyz`` are open. Every other request is authenticated first
(:mod:`saga.security.auth`): no token or a bad one is 401 before any route is looked
at; an endpoint's role the caller lacks is 403. Bad input is a 4xx, never a 500:
an unknown path 404, a wrong method 405, a body over :data:`MAX_BODY_BYTES` 413,
a NUL in the path or query 400, and the JSON checks of
:func:`saga.participant.routes.parse_json`. Answers are JSON.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from saga.observability.health import Report
from saga.participant.routes import ANONYMOUS, BadRequest, HttpRequest
from saga.security.auth import Authenticator, Forbidden, Principal, Unauthenticated

#: The largest request body taken; more is answered 413.
MAX_BODY_BYTES = 1 << 20

#: Health paths: open to anyone (orchestrators probe them without credentials).
HEALTH_PATHS = ("/healthz", "/readyz")

#: Answers one request: (status, JSON body). Raise BadRequest (4xx) or Forbidden (403).
Handler = Callable[[HttpRequest, Principal], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True)
class Endpoint:
    """``method path`` (Starlette's syntax: ``/orders/{order_id}``, ``{id:path}``) answered
    by ``handler`` for a caller with ``role`` (None: any authenticated caller)."""

    method: str
    path: str
    handler: Handler
    role: str | None = None
    public: bool = False


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, default=str),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def http_app(
    report: Report,
    endpoints: Sequence[Endpoint],
    authenticator: Authenticator,
    *,
    ready: Callable[[], bool] | None = None,
    not_ready: str = "not ready",
) -> ASGIApp:
    """The app: health, ``endpoints`` (503 while ``ready()`` is false), authentication."""

    async def healthz(request: Request) -> Response:
        _, details = report()
        return json_response(200, {"status": "alive", **details})

    async def readyz(request: Request) -> Response:
        is_ready, details = report()
        status = "ready" if is_ready else "not ready"
        return json_response(200 if is_ready else 503, {"status": status, **details})

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    public: list[BaseRoute] = list(routes)
    for endpoint in endpoints:
        route = Route(
            endpoint.path,
            _serve(endpoint, ready, not_ready),
            methods=[endpoint.method],
            include_in_schema=False,
        )
        routes.append(route)
        if endpoint.public:
            public.append(route)
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error},  # 404, 405 as JSON
    )
    return Authenticate(app, authenticator, public)


class Authenticate:
    """ASGI middleware: the caller of every request but the open ones, or 401."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, open_routes: list[BaseRoute]):
        self.app = app
        self.authenticator = authenticator
        self.open_routes = open_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(scope):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.authenticator.principal(
                Headers(scope=scope).get("authorization")
            )
        except Unauthenticated as exc:
            answer = json_response(
                401, {"error": str(exc)}, {"WWW-Authenticate": 'Bearer realm="saga"'}
            )
            await answer(scope, receive, send)
            return
        scope["saga.principal"] = principal
        await self.app(scope, receive, send)

    def _open(self, scope: Scope) -> bool:
        # Path and method: a public POST opens no other method on its path.
        return any(route.matches(scope)[0] is Match.FULL for route in self.open_routes)


def _serve(
    endpoint: Endpoint, ready: Callable[[], bool] | None, not_ready: str
) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        principal: Principal = request.scope.get("saga.principal", ANONYMOUS)
        if endpoint.role is not None and not principal.can(endpoint.role):
            return json_response(403, {"error": f"this needs the {endpoint.role} role"})
        if ready is not None and not ready():
            return json_response(503, {"error": not_ready})
        try:
            body = await _body(request)
            params = {k: str(v) for k, v in request.path_params.items()}
            query = dict(request.query_params)
            if any("\x00" in text for text in (*params.values(), *query, *query.values())):
                raise BadRequest("the path or query holds a NUL character")
            status, answer = await endpoint.handler(
                HttpRequest(
                    request.method,
                    request.url.path,
                    params,
                    query,
                    body,
                    dict(request.headers),
                ),
                principal,
            )
        except BadRequest as exc:
            return json_response(exc.status, {"error": str(exc)})
        except Forbidden as exc:
            return json_response(403, {"error": str(exc)})
        return json_response(status, answer)

    return serve


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(f"the body is over {MAX_BODY_BYTES} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # chunked bodies too
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(f"the body is over {MAX_BODY_BYTES} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no route for {request.url.path}", 405: "method not allowed"}
    return json_response(
        exc.status_code,
        {"error": message.get(exc.status_code, exc.detail)},
        dict(exc.headers or {}),
    )
