"""The console's web application (Starlette): sign-in, roles, pages and actions.

Sign-in: the person pastes a bearer token; it is checked, then kept in an HttpOnly,
``SameSite=Strict`` cookie, so page loads and links carry it and no script can read
it. A request may instead send ``Authorization: Bearer ...`` (scripts, curl). Every
request but health is checked on the server: a viewer reads everything, an operator
acts on sagas and redrives dead letters, an approver decides the tasks assigned to
them. A POST authenticated by the cookie must come from the console's own pages: its
``Origin`` (else ``Referer``) must be the console's, or it is refused (403); with
``SameSite=Strict`` that closes cross-site request forgery.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from aiokafka.errors import KafkaError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from saga.cli.actions import Acted
from saga.console import dead_letters, operations, pages, queries
from saga.console.queries import SagaFilter
from saga.coordinator.apply import Coordinator
from saga.coordinator.runtime import open_store
from saga.coordinator.tasks import TaskError, decide_task
from saga.definition.saga import SagaDefinition
from saga.messages.codec import unstorable
from saga.security.auth import Forbidden, Principal, Unauthenticated, authenticator
from saga.settings import Settings

log = logging.getLogger(__name__)

COOKIE = "saga_console_token"
#: Largest form body taken.
MAX_FORM_BYTES = 65_536

Handler = Callable[[Request, Principal], Awaitable[Response]]


class Console:
    """The console's shared state: settings, the coordinator's logic on its database."""

    def __init__(self, settings: Settings, definitions: Sequence[SagaDefinition]) -> None:
        self.settings = settings
        self.auth = authenticator(settings)
        self.store = open_store(settings)
        self.coordinator = Coordinator(
            definitions, self.store, topic_prefix=settings.topic_prefix, mode=settings.mode
        )
        self.fields = queries.search_fields(definitions)

    @property
    def pool(self) -> Any:
        return self.store.pool

    def definition(self, saga_type: str, version: int | None = None) -> SagaDefinition | None:
        loaded = self.coordinator.loaded
        if version is not None and version in loaded.versions.get(saga_type, {}):
            found: SagaDefinition = loaded.versions[saga_type][version]
            return found
        return self.coordinator.definitions.get(saga_type)


def create_app(settings: Settings, definitions: Sequence[SagaDefinition]) -> Any:
    """The console for the sagas of ``definitions`` in ``settings``' database and broker."""
    console = Console(settings, definitions)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await console.store.start()
        try:
            yield
        finally:
            await console.store.stop()

    def guarded(handler: Handler, role: str = "viewer") -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                who = await _principal(console, request)
            except Unauthenticated as why:
                if request.method == "GET" and not request.query_params.get("fragment"):
                    return RedirectResponse("/sign-in", 303)
                return HTMLResponse(pages.problem("Not signed in", str(why), None), 401)
            try:
                if request.method == "POST":
                    _same_origin(request)
                if not who.can(role):
                    raise Forbidden(f"{who.subject} is not a {role}")
                _text(
                    request.url.path,
                    *(t for pair in request.query_params.multi_items() for t in pair),
                )
                return await handler(request, who)
            except Forbidden as why:
                return HTMLResponse(pages.problem("Forbidden", str(why), who), 403)
            except _Invalid as why:
                return HTMLResponse(pages.problem("Bad request", str(why), who), 400)

        return endpoint

    async def sagas(request: Request, who: Principal) -> Response:
        note: str | None = request.query_params.get("note")
        try:
            wanted = SagaFilter.of(request.query_params)
        except ValueError as bad:
            wanted, note = SagaFilter(), f"filter ignored: {bad}"
        async with console.pool.acquire() as connection:
            rows = await queries.find_sagas(connection, wanted, console.fields)
            found = await queries.count_sagas(connection, wanted, console.fields)
        now = datetime.now(UTC)
        views = [queries.saga_view(r, console.definition(r["saga_type"])) for r in rows]
        live = pages.sagas_live(found, wanted, pages.saga_rows(views, now))
        if request.query_params.get("fragment"):
            return HTMLResponse(live)
        types = sorted(console.coordinator.definitions)
        return HTMLResponse(pages.sagas_page(wanted, live, types, console.fields, who, note))

    async def saga(request: Request, who: Principal) -> Response:
        saga_id = request.path_params["saga_id"]
        async with console.pool.acquire() as connection:
            row = await connection.fetchrow(
                "SELECT saga_type, version, state FROM saga_instances WHERE saga_id = $1", saga_id
            )
            log = await queries.history(connection, saga_id)
            tasks = await queries.tasks(connection, saga_id=saga_id)
        if row is None:
            return HTMLResponse(pages.problem("No such saga", f"no saga {saga_id!r}", who), 404)
        state = queries.state_of(row)
        definition = console.definition(state.saga_type, state.definition_version)
        order = [s.name for s in definition.steps] if definition else []
        trace = (
            queries.trace_id(state),
            queries.trace_url(console.settings.trace_url_template, state),
        )
        live = pages.saga_live(state, queries.timeline(state, order), log, trace, tasks)
        if request.query_params.get("fragment"):
            return HTMLResponse(live)
        letters = [
            letter
            for found in (await _letters(console))[0].values()
            for letter in found
            if letter.saga_id == saga_id
        ]
        src = f"/sagas/{quote(saga_id, safe='')}?fragment=1"
        body = (
            f'<div id="live" data-live="{pages.esc(src)}">{live}</div>'
            + pages.saga_actions(state, order or list(state.steps), who)
            + "<h2>Dead letters</h2>"
            + pages.letter_rows(letters, who, select=False)
        )
        title = f"Saga {saga_id}"
        return HTMLResponse(pages.layout(title, body, who, request.query_params.get("note")))

    async def saga_action(request: Request, who: Principal) -> Response:
        saga_id, action = request.path_params["saga_id"], request.path_params["action"]
        form = await _form(request)
        back = f"/sagas/{quote(saga_id, safe='')}"
        try:
            acted = await operations.act_on_saga(
                console.coordinator,
                saga_id,
                action,
                actor=who.subject,
                step=form.get("step"),
                reason=form.get("reason"),
            )
        except operations.Refused as refused:
            return _back(back, f"refused: {refused}")
        return _back(back, _told(acted, action))

    async def bulk_preview(request: Request, who: Principal) -> Response:
        try:
            wanted = SagaFilter.of(request.query_params)
        except ValueError as bad:
            return HTMLResponse(pages.problem("Bulk action", str(bad), who), 400)
        action = request.query_params.get("action", "")
        if action not in operations.ACTIONS:
            return HTMLResponse(pages.problem("Bulk action", f"no action {action!r}", who), 400)
        async with console.pool.acquire() as connection:
            ids = await queries.matching_ids(connection, wanted, console.fields)
        return HTMLResponse(pages.bulk_page(wanted, action, ids, who, wanted.step))

    async def bulk(request: Request, who: Principal) -> Response:
        form = await _form(request)
        try:
            wanted = SagaFilter.of(form)
        except ValueError as bad:
            return HTMLResponse(pages.problem("Bulk action", str(bad), who), 400)
        shown = form.get("expected", "")
        try:
            done = await operations.act_in_bulk(
                console.coordinator,
                wanted,
                form.get("action", ""),
                actor=who.subject,
                reason=form.get("reason"),
                expected=int(shown) if shown.isdigit() else None,
            )
        except operations.Refused as refused:
            return _back("/sagas?" + urlencode(wanted.query()), f"refused: {refused}")
        note = f"{form.get('action')}: {len(done.applied)} saga(s) acted on"
        if done.refused:
            note += (
                f", {len(done.refused)} refused (e.g. {done.refused[0][0]}: {done.refused[0][1]})"
            )
        return _back("/sagas?" + urlencode(wanted.query()), note)

    async def tasks(request: Request, who: Principal) -> Response:
        async with console.pool.acquire() as connection:
            found = await queries.tasks(connection)
        if request.query_params.get("fragment"):
            return HTMLResponse(pages.tasks_live(found, who))
        return HTMLResponse(pages.tasks_page(found, who, request.query_params.get("note")))

    async def decide(request: Request, who: Principal) -> Response:
        task_id, verb = request.path_params["task_id"], request.path_params["verb"]
        if verb not in ("approve", "reject"):
            return HTMLResponse(pages.problem("Tasks", f"no action {verb!r} on tasks", who), 404)
        form = await _form(request)
        async with console.pool.acquire() as connection:
            task = await connection.fetchrow(
                "SELECT assignee, status FROM saga_tasks WHERE task_id = $1", task_id
            )
        if task is None:
            return HTMLResponse(pages.problem("No such task", f"no task {task_id!r}", who), 404)
        if not who.can("approver") or task["assignee"] != who.subject:
            raise Forbidden(
                f"task {task_id} is assigned to {task['assignee'] or 'nobody'}, not {who.subject}"
            )
        reason = " ".join(form.get("reason", "").split())[:500] or None
        if verb == "reject" and not reason:
            return _back("/tasks", "refused: a rejection needs a reason")
        try:
            done = await decide_task(
                console.coordinator,
                task_id,
                approve=verb == "approve",
                by=who.subject,
                reason=reason,
            )
        except TaskError as refused:
            return _back("/tasks", f"refused: {refused}")
        return _back(
            "/tasks", f"task {task_id} {done.decision}; saga {done.saga_id}: {done.saga_status}"
        )

    async def letters(request: Request, who: Principal) -> Response:
        found, problem = await _letters(console, request.query_params.get("topic"))
        note = request.query_params.get("note") or problem
        return HTMLResponse(pages.letters_page(found, who, note))

    async def redrive(request: Request, who: Principal) -> Response:
        ids = [v for k, v in await _pairs(request) if k == "id"]
        if not ids:
            return _back("/dead-letters", "nothing selected")
        try:
            chosen = await dead_letters.find_letters(console.settings, ids)
            done = await operations.redrive(
                console.settings, console.pool, chosen, actor=who.subject
            )
        except (LookupError, ValueError) as refused:
            return _back("/dead-letters", f"refused: {refused}")
        except (KafkaError, OSError, TimeoutError) as failed:
            return _back("/dead-letters", f"the broker failed: {type(failed).__name__}")
        return _back("/dead-letters", f"{len(done)} dead letter(s) redriven by {who.subject}")

    async def audit(request: Request, who: Principal) -> Response:
        async with console.pool.acquire() as connection:
            entries = await queries.recent_audit(connection)
        return HTMLResponse(pages.audit_page(entries, who))

    async def sign_in_page(request: Request) -> Response:
        return HTMLResponse(pages.sign_in())

    async def sign_in(request: Request) -> Response:
        try:
            _same_origin(request)
        except Forbidden as why:
            return HTMLResponse(pages.sign_in(str(why)), 403)
        token = (await _form(request)).get("token", "").strip()
        try:
            await console.auth.principal(f"Bearer {token}")
        except Unauthenticated as why:
            return HTMLResponse(pages.sign_in(str(why)), 401)
        answer = RedirectResponse("/sagas", 303)
        answer.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return answer

    async def sign_out(request: Request) -> Response:
        try:
            _same_origin(request)  # another site cannot sign anyone out either
        except Forbidden as why:
            return HTMLResponse(pages.problem("Forbidden", str(why), None), 403)
        answer = RedirectResponse("/sign-in", 303)
        answer.delete_cookie(COOKIE, path="/")
        return answer

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def home(request: Request) -> Response:
        return RedirectResponse("/sagas", 303)

    static = StaticFiles(directory=str(resources.files("saga.console") / "static"))
    routes = [
        Route("/", home),
        Route("/healthz", health),
        Route("/readyz", health),
        Route("/sign-in", sign_in_page, methods=["GET"]),
        Route("/sign-in", sign_in, methods=["POST"]),
        Route("/sign-out", sign_out, methods=["POST"]),
        Route("/sagas", guarded(sagas)),
        Route("/sagas/{saga_id}", guarded(saga)),
        Route("/sagas/{saga_id}/{action}", guarded(saga_action, "operator"), methods=["POST"]),
        Route("/bulk", guarded(bulk_preview, "operator"), methods=["GET"]),
        Route("/bulk", guarded(bulk, "operator"), methods=["POST"]),
        Route("/tasks", guarded(tasks)),
        Route(
            "/tasks/{task_id:path}/{verb:str}",
            guarded(decide),
            methods=["POST"],
        ),
        Route("/dead-letters", guarded(letters)),
        Route("/dead-letters/redrive", guarded(redrive, "operator"), methods=["POST"]),
        Route("/audit", guarded(audit)),
        Mount("/static", static, name="static"),
    ]
    return _Hardened(Starlette(routes=routes, lifespan=lifespan))


class _Hardened:
    """Every answer forbids framing (no clickjacking of the action buttons) and loads
    scripts and styles from the console only."""

    HEADERS = (
        (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'"),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    )

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


async def _principal(console: Console, request: Request) -> Principal:
    header = request.headers.get("authorization")
    if header is None and request.cookies.get(COOKIE):
        header = f"Bearer {request.cookies[COOKIE]}"
    return await console.auth.principal(header)


def _same_origin(request: Request) -> None:
    """A cookie-authenticated POST comes from the console's own pages, or is refused."""
    if "authorization" in request.headers:
        return
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        raise Forbidden("a form post without Origin or Referer is refused")
    found = urlsplit(source)
    if f"{found.scheme}://{found.netloc}" != f"{request.url.scheme}://{request.url.netloc}":
        raise Forbidden("a form post from another site is refused")


class _Invalid(ValueError):
    """Input no database stores as text (a NUL, a lone surrogate): 400."""


def _text(*values: str) -> None:
    problem = unstorable(list(values))
    if problem is not None:
        raise _Invalid(f"the request holds {problem}")


async def _pairs(request: Request) -> list[tuple[str, str]]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Forbidden("form too large")
    pairs = parse_qsl(body.decode(errors="replace"), keep_blank_values=True)
    _text(*(text for pair in pairs for text in pair))
    return pairs


async def _form(request: Request) -> dict[str, str]:
    return dict(await _pairs(request))


def _back(where: str, note: str) -> Response:
    joiner = "&" if "?" in where else "?"
    return RedirectResponse(f"{where}{joiner}{urlencode({'note': note[:500]})}", 303)


def _told(acted: Acted, action: str) -> str:
    if acted.status is None:
        return f"no saga {acted.saga_id!r}"
    if not acted.applied:
        return "refused: " + ("; ".join(acted.notes) or f"nothing to do, saga is {acted.status}")
    line = f"{action}: saga {acted.saga_id} is {acted.status}"
    return line + (f"; {acted.written} message(s) queued" if acted.written else "")


async def _letters(
    console: Console, topic: str | None = None
) -> tuple[dict[str, list[dead_letters.Letter]], str | None]:
    """The dead letters, or none and why (the broker cannot be reached)."""
    try:
        found = await dead_letters.read_letters(console.settings, [topic] if topic else None)
    except (KafkaError, OSError, TimeoutError) as failed:
        log.warning("dead letters not read: %s", failed)
        return {}, f"dead letters could not be read from the broker: {type(failed).__name__}"
    return found, None


def serve(settings: Settings, definitions: Sequence[SagaDefinition]) -> None:
    """Run the console on ``SAGA_CONSOLE_HOST``:``SAGA_CONSOLE_PORT`` until stopped."""
    import uvicorn

    uvicorn.run(
        create_app(settings, definitions),
        host=settings.console_host,
        port=settings.console_port,
        log_level="warning",
        access_log=False,
    )
