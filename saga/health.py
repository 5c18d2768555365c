"""A minimal HTTP health endpoint for container orchestrators.

``GET /healthz`` (liveness) answers 200 while the process runs its loop;
``GET /readyz`` answers 200 once the service consumes and 503 before, or
while stopping. Both return a JSON body with details (consumer state, circuit
breakers). No framework: a few lines of asyncio streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Report = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    def __init__(self, report: Report, *, host: str = "0.0.0.0", port: int = 8080) -> None:
        self._report = report
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info("health endpoint on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            ready, details = self._report()
            if path == "/healthz":
                status, body = 200, {"status": "alive", **details}
            elif path == "/readyz":
                status = 200 if ready else 503
                body = {"status": "ready" if ready else "not ready", **details}
            else:
                status, body = 404, {"status": "not found"}
            payload = json.dumps(body).encode()
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass  # a bad or vanished client: nothing to answer
        finally:
            writer.close()
