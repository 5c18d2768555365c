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
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self

from saga.errors import DevStackError

try:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
except ImportError:  # pragma: no cover - depends on the installed extras
    raise DevStackError(
        "the OTLP receiver needs the 'otlp' extra: pip install 'kafka-saga[otlp]'"
    ) from None

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

Scalar = str | int | float | bool
AttributeValue = Scalar | tuple[Scalar, ...]
"""A flattened OTLP ``AnyValue``: arrays of scalars become tuples, other
composite values (nested arrays, key-value lists) their ``str``, bytes their hex."""

SpanKind = Literal["unspecified", "internal", "server", "client", "producer", "consumer"]
StatusCode = Literal["unset", "ok", "error"]
PointKind = Literal["sum", "gauge", "histogram"]

_SPAN_KINDS: dict[int, SpanKind] = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
_STATUS_CODES: dict[int, StatusCode] = {0: "unset", 1: "ok", 2: "error"}

TRACES_PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
_PROTOBUF = "application/x-protobuf"
_MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class CollectedSpan:
    """One span as received from an OTLP exporter."""

    trace_id: str
    """32 lowercase hex characters."""
    span_id: str
    """16 lowercase hex characters."""
    parent_span_id: str | None
    """16 lowercase hex characters, ``None`` for a root span."""
    name: str
    kind: SpanKind
    service: str
    """The ``service.name`` resource attribute, ``""`` if absent."""
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue] = field(hash=False)
    status_code: StatusCode
    links: tuple[tuple[str, str], ...]
    """``(trace_id, span_id)`` of every linked span."""

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1_000_000


@dataclass(frozen=True)
class CollectedPoint:
    """One metric data point as received from an OTLP exporter.

    Exporters resend cumulative values at every export; the receiver keeps every
    point, so the last one received for a metric and attribute set is current.
    """

    service: str
    name: str
    attributes: dict[str, AttributeValue] = field(hash=False)
    kind: PointKind
    value: float
    """The sum or gauge value; for histograms the sum of the recorded values."""
    count: int
    """For histograms the number of recorded values, else 0."""


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
            trace_request = ExportTraceServiceRequest()
            _parse(trace_request, body)
            spans = list(_spans_of(trace_request))
            with self._lock:
                self._spans.extend(spans)
                self._requests += 1
            response: Any = ExportTraceServiceResponse()
        else:
            metrics_request = ExportMetricsServiceRequest()
            _parse(metrics_request, body)
            points = list(_points_of(metrics_request))
            with self._lock:
                self._points.extend(points)
                self._requests += 1
            response = ExportMetricsServiceResponse()
        serialized: bytes = response.SerializeToString()
        return serialized


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


# -- decoding ---------------------------------------------------------------


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def _parse(message: Any, body: bytes) -> None:
    try:
        message.ParseFromString(body)
    except Exception as exc:  # google.protobuf.message.DecodeError, untyped
        raise ValueError(f"undecodable {type(message).__name__}: {exc}") from exc


def _scalar_or_str(value: AttributeValue) -> Scalar:
    return value if not isinstance(value, tuple) else str(value)


def _flatten(value: AnyValue) -> AttributeValue:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bytes_value":
        return value.bytes_value.hex()
    if which == "array_value":
        return tuple(_scalar_or_str(_flatten(item)) for item in value.array_value.values)
    if which == "kvlist_value":
        return str({kv.key: _flatten(kv.value) for kv in value.kvlist_value.values})
    return ""


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, AttributeValue]:
    return {kv.key: _flatten(kv.value) for kv in pairs}


def _service(resource: Resource) -> str:
    name = _attributes(resource.attributes).get("service.name", "")
    return name if isinstance(name, str) else str(name)


def _spans_of(request: ExportTraceServiceRequest) -> Iterable[CollectedSpan]:
    for resource_spans in request.resource_spans:
        service = _service(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield CollectedSpan(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex() or None,
                    name=span.name,
                    kind=_SPAN_KINDS.get(int(span.kind), "unspecified"),
                    service=service,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    attributes=_attributes(span.attributes),
                    status_code=_STATUS_CODES.get(int(span.status.code), "unset"),
                    links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                )


def _points_of(request: ExportMetricsServiceRequest) -> Iterable[CollectedPoint]:
    for resource_metrics in request.resource_metrics:
        service = _service(resource_metrics.resource)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                which = metric.WhichOneof("data")
                if which in ("sum", "gauge"):
                    kind: PointKind = "sum" if which == "sum" else "gauge"
                    numbers = metric.sum.data_points if which == "sum" else metric.gauge.data_points
                    for number in numbers:
                        value = (
                            float(number.as_int)
                            if number.WhichOneof("value") == "as_int"
                            else number.as_double
                        )
                        yield CollectedPoint(
                            service=service,
                            name=metric.name,
                            attributes=_attributes(number.attributes),
                            kind=kind,
                            value=value,
                            count=0,
                        )
                elif which in ("histogram", "exponential_histogram"):
                    histograms: Iterable[Any] = (
                        metric.histogram.data_points
                        if which == "histogram"
                        else metric.exponential_histogram.data_points
                    )
                    for histogram in histograms:
                        yield CollectedPoint(
                            service=service,
                            name=metric.name,
                            attributes=_attributes(histogram.attributes),
                            kind="histogram",
                            value=float(histogram.sum),
                            count=int(histogram.count),
                        )
                # summaries are not produced by the Python SDK: ignored


# -- rendering --------------------------------------------------------------


def render_tree(
    spans: Sequence[CollectedSpan],
    *,
    attributes: Sequence[str] = ("saga.step", "saga.outcome", "saga.status"),
) -> str:
    """Render one trace as an indented text tree, one span per line.

    Roots are the spans whose parent is not among ``spans``; children follow
    their parent, sorted by start time, drawn with ``├ ``/``└ `` connectors and
    ``│ `` guides (two columns per level, so deep saga traces stay readable). Each line reads
    ``name  [service]  12.3 ms  key=value ...`` showing only the listed
    ``attributes`` the span has.
    """
    ids = {span.span_id for span in spans}
    children: dict[str, list[CollectedSpan]] = {}
    roots: list[CollectedSpan] = []
    for span in spans:
        if span.parent_span_id is not None and span.parent_span_id in ids:
            children.setdefault(span.parent_span_id, []).append(span)
        else:
            roots.append(span)
    lines: list[str] = []
    seen: set[str] = set()

    def by_start(items: list[CollectedSpan]) -> list[CollectedSpan]:
        return sorted(items, key=lambda s: (s.start_ns, s.end_ns))

    def visit(span: CollectedSpan, prefix: str, connector: str, below: str) -> None:
        if span.span_id in seen:  # duplicate ids or a cycle: print once
            return
        seen.add(span.span_id)
        lines.append(prefix + connector + _describe(span, attributes))
        kids = by_start(children.get(span.span_id, []))
        for index, kid in enumerate(kids):
            last = index == len(kids) - 1
            visit(kid, prefix + below, "└ " if last else "├ ", "  " if last else "│ ")

    for root in by_start(roots):
        visit(root, "", "", "")
    return "\n".join(lines)


def _describe(span: CollectedSpan, keys: Sequence[str]) -> str:
    text = f"{span.name}  [{span.service}]  {span.duration_ms:.1f} ms"
    shown = _format_attributes(span.attributes, keys)
    return f"{text}  {shown}" if shown else text


def _format_attributes(values: Mapping[str, AttributeValue], keys: Sequence[str]) -> str:
    return " ".join(f"{key}={values[key]}" for key in keys if key in values)
