"""A small in-process OTLP/HTTP receiver that collects real OpenTelemetry exports.

Tests and the example's demo use it when no collector (Jaeger, an
OpenTelemetry Collector, ...) is configured: point the SDK's OTLP/HTTP
exporters at :attr:`OtlpReceiver.endpoint` (``f"{endpoint}/v1/traces"`` for
span exporters, ``f"{endpoint}/v1/metrics"`` for metric exporters, or the bare
endpoint as ``OTEL_EXPORTER_OTLP_ENDPOINT``) and the receiver decodes what the
exporters send into plain :class:`CollectedSpan` and :class:`CollectedPoint`
values that can be asserted on or printed with :func:`render_tree`.

Only the protobuf encoding is supported (``application/x-protobuf``, optionally
``gzip`` or ``deflate`` compressed), which is what the
``opentelemetry-exporter-otlp-proto-http`` exporters send. That package (the
``otlp`` extra) provides the protobuf definitions used here.

The requests are decoded in :mod:`saga.dev.otlp_decode`; :func:`render_tree`
lives in :mod:`saga.dev.trace_tree`.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from saga.dev.otlp_decode import (
    AttributeValue,
    CollectedPoint,
    CollectedSpan,
    PointKind,
    SpanKind,
    StatusCode,
    decode_metrics,
    decode_traces,
    metrics_response,
    traces_response,
)
from saga.dev.trace_tree import render_tree

__all__ = [
    "AttributeValue",
    "CollectedPoint",
    "CollectedSpan",
    "OtlpReceiver",
    "PointKind",
    "SpanKind",
    "StatusCode",
    "render_tree",
]

TRACES_PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
_PROTOBUF = "application/x-protobuf"
_MAX_BODY = 64 * 1024 * 1024


class OtlpReceiver:
    """An OTLP/HTTP (protobuf) receiver on ``127.0.0.1`` at a free port.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. The
    server runs on a daemon thread; every accessor is thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[CollectedSpan] = []
        self._points: list[CollectedPoint] = []
        self._requests = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Bind a free port and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("OtlpReceiver is already running")
        server = _Server(self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otlp-receiver-{server.server_port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down, close its socket and join its thread (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("OtlpReceiver is not running")
        return self._server.server_port

    @property
    def endpoint(self) -> str:
        """The base URL, ``http://127.0.0.1:<port>`` (no signal path)."""
        return f"http://127.0.0.1:{self.port}"

    # -- collected data ----------------------------------------------------

    @property
    def requests(self) -> int:
        """How many export requests were decoded and stored."""
        with self._lock:
            return self._requests

    def spans(self) -> list[CollectedSpan]:
        """Every span received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    def traces(self) -> dict[str, list[CollectedSpan]]:
        """The spans received so far grouped by trace id, each sorted by start."""
        grouped: dict[str, list[CollectedSpan]] = {}
        for span in self.spans():
            grouped.setdefault(span.trace_id, []).append(span)
        for trace in grouped.values():
            trace.sort(key=lambda s: s.start_ns)
        return grouped

    def points(self) -> list[CollectedPoint]:
        """Every metric data point received so far, in arrival order."""
        with self._lock:
            return list(self._points)

    def latest(self, name: str, **attributes: AttributeValue) -> CollectedPoint | None:
        """The last point received for metric ``name`` whose attributes include ``attributes``."""
        for point in reversed(self.points()):
            if point.name == name and all(
                key in point.attributes and point.attributes[key] == value
                for key, value in attributes.items()
            ):
                return point
        return None

    def wait_for(self, predicate: Callable[[OtlpReceiver], bool], timeout_s: float) -> bool:
        """Poll ``predicate(self)`` every 50 ms until it holds or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            if predicate(self):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def clear(self) -> None:
        """Forget everything collected so far."""
        with self._lock:
            self._spans.clear()
            self._points.clear()
            self._requests = 0

    # -- called by the request handler -------------------------------------

    def _receive(self, path: str, body: bytes) -> bytes:
        """Decode and store one export request; return the serialized response.

        Raises :class:`ValueError` when ``body`` is not a valid request.
        """
        if path == TRACES_PATH:
            spans = decode_traces(body)
            with self._lock:
                self._spans.extend(spans)
                self._requests += 1
            return traces_response()
        points = decode_metrics(body)
        with self._lock:
            self._points.extend(points)
            self._requests += 1
        return metrics_response()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-request (e.g. an exporter timing out) is not news.
        return


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "saga-otlp-receiver"

    def log_message(self, format: str, *args: Any) -> None:
        return  # no request logging on stderr

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in (TRACES_PATH, METRICS_PATH):
            self._reply(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            return
        content_type = self.headers.get("Content-Type", _PROTOBUF).split(";", 1)[0].strip()
        if content_type.lower() == "application/json":
            self._reply(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, b"only application/x-protobuf", "text/plain"
            )
            return
        try:
            body = _decompress(self._read_body(), self.headers.get("Content-Encoding", ""))
            response = self.server.receiver._receive(path, body)
        except (ValueError, OSError, EOFError, zlib.error) as exc:
            self._reply(HTTPStatus.BAD_REQUEST, str(exc).encode(), "text/plain")
            return
        self._reply(HTTPStatus.OK, response, _PROTOBUF)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length", "0"))
        if not 0 <= length <= _MAX_BODY:
            raise ValueError(f"bad Content-Length {length}")
        return self.rfile.read(length)

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")
