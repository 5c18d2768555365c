"""A service's HTTP port, on a real socket: keep-alive, pipelining, chunked bodies, limits,
bad input as 4xx, and tokens and roles before any route."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import h11
import pytest

from saga.http.app import Endpoint, http_app
from saga.http.server import HttpServer
from saga.messages.codec import EncodedRecord
from saga.participant.request_runner import RequestRunner
from saga.participant.routes import HttpRequest, HttpResponse, RequestContext
from saga.participant.service import Service
from saga.security.auth import Principal, StaticTokens

TOKENS = StaticTokens(
    {
        "viewer-token": Principal("vera", frozenset({"viewer"})),
        "operator-token": Principal("olga", frozenset({"operator"})),
    }
)


def _service() -> Service:
    service = Service("orders")

    @service.route("GET", "/orders")
    async def listing(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
        return HttpResponse(200, {"caller": ctx.principal.subject, "q": request.query})

    @service.route("POST", "/orders", role="operator")
    async def place(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
        return HttpResponse(202, {"got": request.json(), "by": ctx.principal.subject})

    @service.route("POST", "/hooks/bank", public=True)
    async def hook(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
        return HttpResponse(200, {"anonymous": ctx.principal.subject == ""})

    @service.route("DELETE", "/hooks/bank")
    async def unhook(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
        return HttpResponse(200, {"by": ctx.principal.subject})

    return service


@pytest.fixture
async def port() -> AsyncIterator[int]:
    service = _service()

    async def emit(records: list[tuple[str, EncodedRecord]]) -> None:
        pass

    runner = RequestRunner(service, store=None, emit=emit, after_commit=None)

    def endpoint(route: Any) -> Endpoint:
        async def answer(request: HttpRequest, principal: Principal) -> tuple[int, Any]:
            return await runner.run(route, request, principal)

        return Endpoint(route.method, route.pattern, answer, route.role, route.public)

    app = http_app(
        lambda: (True, {"service": "orders"}),
        [endpoint(r) for r in service.routes],
        TOKENS,
    )
    server = HttpServer(app, host="127.0.0.1", port=0)
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop()


def _exchange(port: int, raw: bytes, responses: int) -> list[tuple[int, dict[str, str], Any]]:
    """Send ``raw`` on one connection; read ``responses`` answers (status, headers, JSON)."""
    client = h11.Connection(h11.CLIENT)
    answers: list[tuple[int, dict[str, str], Any]] = []
    # The client's side of h11 reads the answers; it is told of each request (sent raw).
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "test")]))
    client.send(h11.EndOfMessage())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        status, headers, body = 0, {}, b""
        while len(answers) < responses:
            event = client.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                client.receive_data(data)
                if not data:
                    break
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
                body = b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                try:
                    decoded = json.loads(body or b"null")
                except ValueError:
                    decoded = body.decode()
                answers.append((status, headers, decoded))
                if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
                    break
                client.start_next_cycle()
                client.send(h11.Request(method="GET", target="/", headers=[("Host", "test")]))
                client.send(h11.EndOfMessage())
    return answers


VIEWER = "viewer-token"


def _request(
    method: str, path: str, *, token: str | None = VIEWER, body: bytes = b"", **more: str
) -> bytes:
    headers = {"Host": "test", **more}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body and "Transfer-Encoding" not in headers:
        headers["Content-Length"] = str(len(body))
    head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + body


async def exchange(port: int, raw: bytes, responses: int = 1) -> list[tuple[int, Any]]:
    answers = await asyncio.to_thread(_exchange, port, raw, responses)
    return [(status, body) for status, _, body in answers]


async def test_keep_alive_and_pipelined_requests_are_all_answered(port: int) -> None:
    pipelined = b"".join(_request("GET", f"/orders?n={n}") for n in range(3)) + _request(
        "GET", "/healthz", token=None
    )
    answers = await exchange(port, pipelined, responses=4)
    assert [status for status, _ in answers] == [200, 200, 200, 200]
    assert [body["q"]["n"] for _, body in answers[:3]] == ["0", "1", "2"], "in order"
    assert answers[3][1]["status"] == "alive"


async def test_a_chunked_body_is_read(port: int) -> None:
    chunks = [b'{"sku": ', b'"sku-1", "quantity"', b": 2}"]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    raw = _request(
        "POST",
        "/orders",
        token="operator-token",
        body=body,
        Transfer_Encoding="chunked",
        Content_Type="application/json",
    )
    [(status, answer)] = await exchange(port, raw)
    assert (status, answer) == (202, {"got": {"sku": "sku-1", "quantity": 2}, "by": "olga"})


async def test_a_70_kb_header_line_gets_431_and_the_server_goes_on(port: int) -> None:
    raw = _request("GET", "/orders", X_Big="a" * 70_000)
    answers = await asyncio.to_thread(_exchange, port, raw, 1)
    assert [status for status, _, _ in answers] == [431]
    assert (await exchange(port, _request("GET", "/orders")))[0][0] == 200


def _drip(port: int, parts: list[bytes]) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for part in parts:
            sock.sendall(part)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


async def test_a_header_sent_slowly_past_the_limit_gets_431_and_the_connection_closes(
    port: int,
) -> None:
    head = b"GET /orders HTTP/1.1\r\nHost: test\r\nX-Big: "
    answer = await asyncio.to_thread(_drip, port, [head, b"a" * 8192, b"a" * 8192])
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"sku": "a\x00b"}', "NUL byte"),
        (b'{"sku": "a\\u0000b"}', "NUL character"),
        (b'{"a\\u0000": 1}', "NUL character"),
        (b'{"reason": "\\ud800"}', "lone surrogate"),
        (b"[" * 33 + b"]" * 33, "deeper than 32"),
        (b"[" * 200_000 + b"]" * 200_000, "deeper than 32"),
        (b'{"amount": NaN}', "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
    ],
)
async def test_a_nul_or_deep_or_malformed_json_body_gets_400(
    port: int, body: bytes, why: str
) -> None:
    raw = _request(
        "POST", "/orders", token="operator-token", body=body, Content_Type="application/json"
    )
    [(status, answer)] = await exchange(port, raw)
    assert status == 400 and why in answer["error"], answer


async def test_wrong_paths_methods_content_and_sizes_get_4xx(port: int) -> None:
    cases = [
        (_request("GET", "/nowhere"), 404),
        (_request("DELETE", "/orders"), 405),
        (_request("GET", "/orders?x=%00"), 400),
        (
            _request(
                "POST", "/orders", token="operator-token", body=b"a=1", Content_Type="text/plain"
            ),
            400,
        ),
        (
            _request(
                "POST",
                "/orders",
                token="operator-token",
                body=b"[" + b"1," * 600_000 + b"1]",
                Content_Type="application/json",
            ),
            413,
        ),
    ]
    for raw, expected in cases:
        [(status, answer)] = await exchange(port, raw)
        assert status == expected and "error" in answer, (raw[:40], status, answer)


async def test_no_token_gets_401_a_wrong_role_403_and_health_is_open(port: int) -> None:
    [(status, answer)] = await exchange(port, _request("GET", "/orders", token=None))
    assert status == 401 and "no bearer token" in answer["error"]
    [(status, answer)] = await exchange(port, _request("GET", "/orders", token="guessed"))
    assert (status, answer) == (401, {"error": "unknown bearer token"})
    [(status, answer)] = await exchange(port, _request("GET", "/nowhere", token=None))
    assert status == 401, "closed before routing: no token learns which paths exist"
    raw = _request("POST", "/orders", body=b"{}", Content_Type="application/json")
    [(status, answer)] = await exchange(port, raw)
    assert (status, answer) == (403, {"error": "this needs the operator role"})
    [(status, answer)] = await exchange(port, _request("GET", "/orders", token="operator-token"))
    assert (status, answer["caller"]) == (200, "olga"), "operator implies viewer"
    for path in ("/healthz", "/readyz"):
        assert (await exchange(port, _request("GET", path, token=None)))[0][0] == 200
    raw = _request("POST", "/hooks/bank", token=None, body=b"{}")
    assert await exchange(port, raw) == [(200, {"anonymous": True})]
    # A public POST opens no other method on its path.
    [(status, _)] = await exchange(port, _request("DELETE", "/hooks/bank", token=None))
    assert status == 401
    raw = _request("DELETE", "/hooks/bank", token="viewer-token")
    assert await exchange(port, raw) == [(200, {"by": "vera"})]


async def test_the_answer_to_401_names_the_bearer_scheme(port: int) -> None:
    [(status, headers, _)] = await asyncio.to_thread(
        _exchange, port, _request("GET", "/orders", token=None), 1
    )
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
