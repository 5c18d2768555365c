"""uvicorn serving an ASGI app as a task of the process's event loop.

The process binds the port itself (so a port in use is a one-line error naming
``SAGA_HEALTH_PORT``, and port 0 picks a free one) and hands the socket to uvicorn.
uvicorn's h11 protocol gives keep-alive, pipelining and chunked bodies; a request
head over :data:`MAX_HEAD_BYTES` (a 70 KB header line, say) is answered 431, not
uvicorn's generic 400. Signals stay the process's: uvicorn does not install handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from saga.observability.health import bound

log = logging.getLogger(__name__)

#: The most bytes of a request line plus headers; more is answered 431.
MAX_HEAD_BYTES = 16 * 1024


class HttpServer:
    """Serves ``app`` on ``host:port`` until :meth:`stop`."""

    def __init__(self, app: Any, *, host: str = "0.0.0.0", port: int = 8080) -> None:
        self._host = host
        self._port = port
        self._config = uvicorn.Config(
            _LimitHead(app),
            http=_Protocol,
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(self._config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self._socket is not None
        port: int = self._socket.getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind, and return once uvicorn accepts connections."""
        self._socket = _bind(self._host, self._port)
        self._task = asyncio.create_task(
            self._server.serve(sockets=[self._socket]), name="http server"
        )
        while not self._server.started:
            if self._task.done():
                self._task.result()  # its error
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("HTTP on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (5 s at most), close."""
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await self._task
        self._task = None
        if self._socket is not None:
            self._socket.close()


def _bind(host: str, port: int) -> socket.socket:
    family, kind, protocol, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = bound(family, kind, protocol, address, host, port)
    sock.set_inheritable(True)
    return sock


class _LimitHead:
    """431 for a request whose head came whole in one read but is over the limit
    (h11 bounds only a head still incomplete)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > MAX_HEAD_BYTES:
                body = f"request header fields over {MAX_HEAD_BYTES} bytes".encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # SIGTERM/SIGINT belong to the process (saga.shutdown), which stops us.
        yield


class _Connection(h11.Connection):
    """Remembers the status h11 suggests for the request it refused (431 for a head
    over the limit)."""

    refused_with = 400

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.refused_with = exc.error_status_hint
            raise


class _Protocol(H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _Connection(h11.SERVER, MAX_HEAD_BYTES)

    def send_400_response(self, msg: str) -> None:
        if getattr(self.conn, "refused_with", 400) != 431:
            super().send_400_response(msg)
            return
        body = f"request header fields over {MAX_HEAD_BYTES} bytes".encode()
        for event in (
            h11.Response(
                status_code=431,
                reason=b"Request Header Fields Too Large",
                headers=[
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"connection", b"close"),
                ],
            ),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            output = self.conn.send(event)
            if output:
                self.transport.write(output)
        self.transport.close()
