"""A throw-away HTTP server on loopback for tests that need a real HTTP peer."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Bearer tokens of the tests' processes (SAGA_AUTH_TOKENS): who each one is.
TOKENS: dict[str, dict[str, Any]] = {
    "test-operator": {"sub": "operator", "roles": ["operator"]},
    "test-viewer": {"sub": "viewer", "roles": ["viewer"]},
    "test-manager": {"sub": "manager", "roles": ["approver"]},
    "test-director": {"sub": "director", "roles": ["approver"]},
    # Customers: no staff role, they act as themselves.
    "test-alice": {"sub": "alice", "roles": []},
    "test-bob": {"sub": "bob", "roles": []},
    "test-carol": {"sub": "carol", "roles": []},
    "test-mallory": {"sub": "mallory", "roles": []},
}
AUTH_TOKENS = json.dumps(TOKENS)
#: The token ``call_json`` sends unless told otherwise.
OPERATOR = "test-operator"


def customer(name: str) -> str:
    """The bearer token of customer ``name`` (alice, bob, carol, mallory)."""
    return f"test-{name}"


class QuietHandler(BaseHTTPRequestHandler):
    """Base for test handlers: no access log on stderr."""

    def log_message(self, *args: object) -> None:
        pass

    def send_json(self, status: int, answer: object) -> None:
        """Answer with ``answer`` as a JSON body."""
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """Serve ``handler`` on 127.0.0.1 (a free port, yielded); stopped on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def call_json(
    url: str, method: str = "GET", body: object = None, *, token: str | None = OPERATOR
) -> tuple[int, Any]:
    """``method url`` with ``body`` as JSON and ``token`` as the bearer token: the status
    and the decoded answer (any status)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 (loopback http)
        url, data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
