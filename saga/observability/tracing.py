"""Tracing: one saga is one trace, across processes.

Every record carries the W3C ``traceparent`` / ``tracestate`` headers. The
framework makes the spans that chain them, named and attributed after the
OpenTelemetry messaging semantic conventions:

* ``send <topic>`` (PRODUCER) for every record a :class:`~saga.kafka.publisher.Publisher`
  sends, child of the context in the record's headers; the record leaves with
  the send span's context, so the consumer's span is its child;
* ``process <topic>`` (CONSUMER) for every record a consumer hands to its
  handler, child of the context in the headers, with topic, partition, offset,
  consumer group and message id; the handler sees the envelope in that span's
  context, so what it emits continues the trace;
* the coordinator's ``decide <saga type>`` per fact and ``compensate <step>`` per
  compensation command (see :mod:`saga.coordinator.batch`).

``saga.id``, ``saga.type`` and ``saga.step`` are set wherever they are known.

Where the time of one handling goes is told by span events (a few microseconds
each, made only when the span records) on its ``process <topic>`` span, which
starts when the consumer takes the record up, before decoding it:

* ``saga.decoded``: the record is an envelope;
* a step service: ``saga.inbox.claimed`` (its transaction began and the message id
  was claimed in the inbox), ``saga.handled`` (the handler returned),
  ``saga.outbox.written`` (its records are in the outbox), ``saga.committed``;
* the coordinator: ``saga.loaded`` (its transaction began, the events were
  logged, the sagas locked and read), ``saga.decided``, ``saga.outbox.written``
  (sagas, log and outbox rows written), ``saga.committed``.

Then the records leave in their ``send <topic>`` spans (until the broker's
acknowledgement); the process span ends once they are marked sent.

Nothing here blocks or fails a saga: with no exporter configured the spans are
no-ops; with one, they are batched on a background thread, and an unreachable
collector costs a warning in the log, bounded by ``SAGA_OTLP_TIMEOUT_MS``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from saga.messages import headers as h
from saga.messages.base import Message
from saga.messages.codec import RawRecord
from saga.messages.envelope import Envelope

_tracer = trace.get_tracer("saga")
_propagator = TraceContextTextMapPropagator()

SYSTEM = "kafka"

#: Span events on a ``process <topic>`` span: where the time of one handling went.
DECODED = "saga.decoded"
CLAIMED = "saga.inbox.claimed"
LOADED = "saga.loaded"
HANDLED = "saga.handled"
DECIDED = "saga.decided"
WRITTEN = "saga.outbox.written"
COMMITTED = "saga.committed"


def tracer() -> trace.Tracer:
    return _tracer


def context_of(traceparent: str | None, tracestate: str | None = None) -> otel_context.Context:
    """The context a W3C ``traceparent`` names (an empty one when there is none)."""
    carrier = {"traceparent": traceparent} if traceparent else {}
    if traceparent and tracestate:
        carrier["tracestate"] = tracestate
    return _propagator.extract(carrier)


def context_headers(span: Span) -> tuple[str | None, str | None]:
    """``(traceparent, tracestate)`` naming ``span`` (``None`` for a no-op span)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent"), carrier.get("tracestate")


def saga_attributes(envelope: Envelope[Message]) -> dict[str, Any]:
    attributes: dict[str, Any] = {"saga.id": envelope.saga_id}
    if envelope.saga_type:
        attributes["saga.type"] = envelope.saga_type
    if envelope.step:
        attributes["saga.step"] = envelope.step
    return attributes


def mark(name: str, span: Span | None = None, at_ns: int | None = None) -> None:
    """The span event ``name`` on ``span`` (the current span when ``None``), at
    ``at_ns`` (wall clock, now when ``None``), if the span records."""
    span = trace.get_current_span() if span is None else span
    if span.is_recording():
        span.add_event(name, timestamp=at_ns)


def mark_all(spans: Sequence[Span], marks: Sequence[tuple[str, int]]) -> None:
    """The events ``marks`` (name, wall clock ns) on each of ``spans`` that records."""
    for span in spans:
        if span.is_recording():
            for name, at_ns in marks:
                span.add_event(name, timestamp=at_ns)


def start_process_span(
    raw: RawRecord, envelope: Envelope[Message], group: str, start_ns: int | None = None
) -> Span:
    """The CONSUMER span of one handled record, child of the context in its headers;
    ``start_ns``: when the consumer took the record up (wall clock), if before now."""
    return _tracer.start_span(
        f"process {raw.topic}",
        context=context_of(envelope.traceparent, envelope.tracestate),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": raw.topic,
            "messaging.destination.partition.id": str(raw.partition),
            "messaging.kafka.offset": raw.offset,
            "messaging.consumer.group.name": group,
            "messaging.message.id": envelope.id,
            "messaging.kafka.message.key": envelope.saga_id,
            "saga.message.type": envelope.type,
            **saga_attributes(envelope),
        },
        start_time=start_ns,
    )


def within(span: Span, envelope: Envelope[Message]) -> Envelope[Message]:
    """``envelope`` as seen inside ``span``: what it causes continues from there."""
    if not span.is_recording():
        return envelope
    traceparent, tracestate = context_headers(span)
    return envelope.replace(traceparent=traceparent, tracestate=tracestate)


@contextmanager
def processing(
    raw: RawRecord, envelope: Envelope[Message], group: str, start_ns: int | None = None
) -> Iterator[Span]:
    """``process <topic>`` as the current span around one handler call."""
    span = start_process_span(raw, envelope, group, start_ns)
    with trace.use_span(
        span, end_on_exit=True, record_exception=True, set_status_on_exception=True
    ):
        yield span


def end_spans(spans: Sequence[Span], error: BaseException | None = None) -> None:
    for span in spans:
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()


def start_send_span(
    topic: str, headers: list[tuple[str, bytes | None]]
) -> tuple[Span, list[tuple[str, bytes | None]]]:
    """The PRODUCER span of one record and the headers it leaves with.

    The span is the child of the context already in ``headers`` (the handler or
    decision that made the record; for a record replayed from an outbox after a
    crash, the same one); the record carries the send span's context instead.
    """
    found = {name: value for name, value in headers if name in (h.TRACEPARENT, h.TRACESTATE)}
    parent_header = found.get(h.TRACEPARENT)
    state_header = found.get(h.TRACESTATE)
    parent = (
        context_of(
            parent_header.decode(errors="replace"),
            state_header.decode(errors="replace") if state_header else None,
        )
        if parent_header
        else None
    )
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": topic,
    }
    values = dict(headers)
    for header, attribute in (
        (h.ID, "messaging.message.id"),
        (h.SAGA_ID, "saga.id"),
        (h.SAGA_TYPE, "saga.type"),
        (h.SAGA_STEP, "saga.step"),
        (h.TYPE, "saga.message.type"),
    ):
        value = values.get(header)
        if value:
            attributes[attribute] = value.decode(errors="replace")
    span = _tracer.start_span(
        f"send {topic}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
    )
    if not span.is_recording():
        return span, headers
    traceparent, tracestate = context_headers(span)
    rest = [(n, v) for n, v in headers if n not in (h.TRACEPARENT, h.TRACESTATE)]
    rest.append((h.TRACEPARENT, (traceparent or "").encode()))
    if tracestate:
        rest.append((h.TRACESTATE, tracestate.encode()))
    return span, rest
