"""The in-process OTLP/HTTP receiver decodes what the real SDK exporters send."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from saga.dev.otlp import CollectedSpan, OtlpReceiver, render_tree


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def tracer_provider(
    receiver: OtlpReceiver, service: str, compression: Compression | None = None
) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(
        endpoint=f"{receiver.endpoint}/v1/traces", timeout=5, compression=compression
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def emit_parent_and_child(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("test_otlp_receiver")
    with tracer.start_as_current_span(
        "orders publish",
        kind=SpanKind.PRODUCER,
        attributes={"saga.step": "reserve", "messaging.system": "kafka"},
    ) as parent:
        parent_ctx = parent.get_span_context()
        with tracer.start_as_current_span(
            "payments process",
            kind=SpanKind.CONSUMER,
            attributes={
                "saga.step": "charge",
                "saga.outcome": "failed",
                "attempt": 2,
                "amount": 12.5,
                "retry": True,
                "tags": ["a", "b"],
            },
            links=[Link(parent_ctx)],
        ) as child:
            child.add_event("saga.decoded", timestamp=child.start_time + 1_000)  # type: ignore[attr-defined]
            child.add_event("saga.committed")
            child.set_status(Status(StatusCode.ERROR, "declined"))


def test_spans_are_decoded_with_ids_kind_service_and_attributes(receiver: OtlpReceiver) -> None:
    provider = tracer_provider(receiver, "orders")
    try:
        emit_parent_and_child(provider)
    finally:
        provider.shutdown()

    assert receiver.requests == 2  # SimpleSpanProcessor: one export per span
    spans = {s.name: s for s in receiver.spans()}
    parent, child = spans["orders publish"], spans["payments process"]

    assert len(parent.trace_id) == 32 and len(parent.span_id) == 16
    assert int(parent.trace_id, 16) != 0
    assert parent.parent_span_id is None
    assert child.trace_id == parent.trace_id
    assert child.parent_span_id == parent.span_id
    assert child.links == ((parent.trace_id, parent.span_id),)
    assert (parent.kind, child.kind) == ("producer", "consumer")
    assert parent.service == child.service == "orders"
    assert parent.status_code == "unset" and child.status_code == "error"
    assert parent.attributes == {"saga.step": "reserve", "messaging.system": "kafka"}
    assert child.attributes == {
        "saga.step": "charge",
        "saga.outcome": "failed",
        "attempt": 2,
        "amount": 12.5,
        "retry": True,
        "tags": ("a", "b"),
    }
    assert parent.start_ns <= child.start_ns <= child.end_ns <= parent.end_ns
    assert 0 <= child.duration_ms <= parent.duration_ms
    assert parent.events == ()
    assert [name for name, _ in child.events] == ["saga.decoded", "saga.committed"]
    assert child.events[0][1] == child.start_ns + 1_000
    assert child.start_ns <= child.events[1][1] <= child.end_ns

    traces = receiver.traces()
    assert list(traces) == [parent.trace_id]
    assert traces[parent.trace_id] == [parent, child]

    lines = render_tree(traces[parent.trace_id]).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("orders publish  [orders]  ")
    assert lines[0].endswith(" ms  saga.step=reserve")
    assert lines[1].startswith("└ payments process  [orders]  ")
    assert lines[1].endswith(" ms  saga.step=charge saga.outcome=failed")


def test_render_tree_nests_and_orders_children() -> None:
    def span(span_id: str, parent: str | None, start: int, name: str) -> CollectedSpan:
        return CollectedSpan(
            trace_id="0" * 31 + "1",
            span_id=span_id * 16,
            parent_span_id=None if parent is None else parent * 16,
            name=name,
            kind="internal",
            service="svc",
            start_ns=start,
            end_ns=start + 2_500_000,
            attributes={"saga.status": "done", "other": 1},
            status_code="ok",
            links=(),
        )

    spans = [
        span("c", "a", 30, "second"),
        span("b", "a", 10, "first"),
        span("d", "b", 20, "grandchild"),
        span("a", "f", 0, "root"),  # parent not in the set: a root
    ]
    assert render_tree(spans, attributes=("saga.status", "missing")).splitlines() == [
        "root  [svc]  2.5 ms  saga.status=done",
        "├ first  [svc]  2.5 ms  saga.status=done",
        "│ └ grandchild  [svc]  2.5 ms  saga.status=done",
        "└ second  [svc]  2.5 ms  saga.status=done",
    ]
    assert render_tree(spans[:1], attributes=()) == "second  [svc]  2.5 ms"
    assert render_tree([]) == ""


def test_gzip_compressed_exports_are_decoded(receiver: OtlpReceiver) -> None:
    provider = tracer_provider(receiver, "payments", Compression.Gzip)
    try:
        emit_parent_and_child(provider)
    finally:
        provider.shutdown()

    spans = receiver.spans()
    assert sorted(s.name for s in spans) == ["orders publish", "payments process"]
    assert {s.service for s in spans} == {"payments"}


def test_metric_points_are_decoded_and_latest_wins(receiver: OtlpReceiver) -> None:
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{receiver.endpoint}/v1/metrics", timeout=5),
        export_interval_millis=60_000,  # exports only on force_flush / shutdown
    )
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "coordinator"})
    )
    try:
        meter = provider.get_meter("test_otlp_receiver")
        counter = meter.create_counter("saga.steps")
        histogram = meter.create_histogram("saga.step.duration", unit="ms")
        counter.add(2, {"saga.step": "reserve"})
        counter.add(1, {"saga.step": "charge"})
        histogram.record(10.0, {"saga.step": "reserve"})
        assert provider.force_flush(timeout_millis=5_000)
        counter.add(3, {"saga.step": "reserve"})
        histogram.record(30.0, {"saga.step": "reserve"})
        assert provider.force_flush(timeout_millis=5_000)
    finally:
        provider.shutdown()

    assert receiver.requests >= 2
    reserve = receiver.latest("saga.steps", **{"saga.step": "reserve"})
    assert reserve is not None
    assert (reserve.kind, reserve.value, reserve.count) == ("sum", 5.0, 0)
    assert reserve.service == "coordinator"
    assert reserve.attributes == {"saga.step": "reserve"}
    charge = receiver.latest("saga.steps", **{"saga.step": "charge"})
    assert charge is not None and charge.value == 1.0

    duration = receiver.latest("saga.step.duration")
    assert duration is not None
    assert (duration.kind, duration.value, duration.count) == ("histogram", 40.0, 2)

    first = next(p for p in receiver.points() if p.name == "saga.step.duration")
    assert (first.value, first.count) == (10.0, 1)  # earlier cumulative points are kept
    assert receiver.latest("saga.steps", **{"saga.step": "refund"}) is None
    assert receiver.latest("nope") is None


def post(url: str, body: bytes) -> int:
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(  # noqa: S310
        url, data=body, method="POST", headers={"Content-Type": "application/x-protobuf"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_bad_requests_are_rejected(receiver: OtlpReceiver) -> None:
    assert post(f"{receiver.endpoint}/v1/traces", b"not a protobuf") == 400
    assert post(f"{receiver.endpoint}/v1/metrics", b"\xff\xff\xff") == 400
    assert post(f"{receiver.endpoint}/v1/logs", b"") == 404
    assert post(f"{receiver.endpoint}/v1/traces", b"") == 200  # an empty export is valid
    assert receiver.requests == 1
    assert receiver.spans() == [] and receiver.points() == []


def test_wait_for_polls_until_true_or_timeout(receiver: OtlpReceiver) -> None:
    assert receiver.wait_for(lambda r: r.requests == 0, timeout_s=0.0)
    assert not receiver.wait_for(lambda r: r.requests > 0, timeout_s=0.1)


def test_stop_closes_the_port() -> None:
    receiver = OtlpReceiver().start()
    port = receiver.port
    assert receiver.endpoint == f"http://127.0.0.1:{port}"
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    receiver.stop()
    receiver.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(RuntimeError):
        _ = receiver.endpoint
