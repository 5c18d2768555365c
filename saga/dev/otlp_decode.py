"""OTLP export requests (protobuf) decoded into plain values: spans and metric points.

The protobuf definitions come from ``opentelemetry-exporter-otlp-proto-http``
(the ``otlp`` extra). Attribute values are flattened to scalars and tuples, so
that what was collected can be compared and printed without protobuf.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

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
    events: tuple[tuple[str, int], ...] = ()
    """``(name, time in ns)`` of every span event, in the order sent."""

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


def decode_traces(body: bytes) -> list[CollectedSpan]:
    """The spans of an ``ExportTraceServiceRequest``; :class:`ValueError` if it is not one."""
    request = ExportTraceServiceRequest()
    _parse(request, body)
    return list(_spans_of(request))


def decode_metrics(body: bytes) -> list[CollectedPoint]:
    """The points of an ``ExportMetricsServiceRequest``; :class:`ValueError` if it is not one."""
    request = ExportMetricsServiceRequest()
    _parse(request, body)
    return list(_points_of(request))


def traces_response() -> bytes:
    """The answer to an accepted trace export (no partial rejection)."""
    response: Any = ExportTraceServiceResponse()
    serialized: bytes = response.SerializeToString()
    return serialized


def metrics_response() -> bytes:
    """The answer to an accepted metrics export (no partial rejection)."""
    response: Any = ExportMetricsServiceResponse()
    serialized: bytes = response.SerializeToString()
    return serialized


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
                    events=tuple((event.name, event.time_unix_nano) for event in span.events),
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
