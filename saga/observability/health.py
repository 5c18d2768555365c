"""A minimal HTTP health endpoint for container orchestrators.

``GET /healthz`` (liveness) answers 200 while the process runs its loop;
``GET /readyz`` answers 200 once the service consumes and 503 before, or
while stopping. Both return a JSON body with details (consumer state, circuit
breakers). Any other request goes to the service's routes (:mod:`saga.participant.routes`),
when it has some. No framework: a few lines of asyncio streams.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from saga.errors import ConfigurationError

log = logging.getLogger(__name__)

Report = Callable[[], tuple[bool, dict[str, Any]]]
#: Serves any other request: (method, path with query, headers (lower-case names), body)
#: -> (status, JSON body).
Dispatch = Callable[[str, str, dict[str, str], bytes], Awaitable[tuple[int, Any]]]

MAX_BODY = 1 << 20
MAX_HEADERS = 100
_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def check_port_free(host: str, port: int) -> None:
    """Fail now, in one line naming the setting, if ``port`` cannot be bound: before a
    process opens its broker and database connections, not after."""
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigurationError(
            f"SAGA_HEALTH_HOST={host!r} is not an address of this machine ({exc.strerror})"
        ) from None
    for family, kind, protocol, _, address in found:
        with socket.socket(family, kind, protocol) as probe:
            # As asyncio's server binds: address reuse, and IPv6 sockets for IPv6 only.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise _in_use(host, port) from None


def _in_use(host: str, port: int) -> ConfigurationError:
    return ConfigurationError(
        f"port {port} on {host} is in use: set SAGA_HEALTH_PORT to a free port"
        " (each process of a system on one machine needs its own)"
    )


class HealthServer:
    def __init__(
        self,
        report: Report,
        *,
        host: str = "0.0.0.0",
        port: int = 8080,
        dispatch: Dispatch | None = None,
    ) -> None:
        self._report = report
        self._host = host
        self._port = port
        self._dispatch = dispatch
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise _in_use(self._host, self._port) from None
        log.info("health endpoint on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                method, path, headers, body = await asyncio.wait_for(_read_request(reader), 5)
            except _BadRequest as bad:
                status, answer = bad.status, {"error": bad.reason}
            else:
                status, answer = await self._answer(method, path, headers, body)
            payload = json.dumps(answer, default=str).encode()
            reason = _REASONS.get(status, "Unknown")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a slow or vanished client: nothing to answer
        finally:
            writer.close()

    async def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        route = path.split("?", 1)[0]
        if method == "GET" and route in ("/healthz", "/readyz"):
            ready, details = self._report()
            if route == "/healthz":
                return 200, {"status": "alive", **details}
            status = 200 if ready else 503
            return status, {"status": "ready" if ready else "not ready", **details}
        if self._dispatch is not None:
            try:
                return await self._dispatch(method, path, headers, body)
            except Exception:
                log.exception("%s %s failed", method, path)
                return 500, {"error": "internal error (see the service's log)"}
        return 404, {"status": "not found"}


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes]:
    parts = (await reader.readline()).decode("latin-1").split()
    if len(parts) < 2:
        raise _BadRequest(400, "not an HTTP request")
    headers: dict[str, str] = {}
    while True:
        line = (await reader.readline()).decode("latin-1").strip()
        if not line:
            break
        if len(headers) >= MAX_HEADERS:
            raise _BadRequest(431, f"more than {MAX_HEADERS} headers")
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _BadRequest(400, "Content-Length is not a number") from None
    if length < 0:
        raise _BadRequest(400, "Content-Length is negative")
    if length > MAX_BODY:
        raise _BadRequest(413, f"body over {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    return parts[0].upper(), parts[1], headers, body
