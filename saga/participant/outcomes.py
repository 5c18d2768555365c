"""What a delivery ends as: its :class:`Outcome`, and the events it emits.

A handler's result is checked here (events only), each event it returns is
wrapped as caused by the incoming message, and a step that fails gets its
failure event (the step's ``fails_with``, :class:`~saga.messages.steps.StepFailed`,
or :class:`~saga.messages.steps.CompensationFailed` for a compensation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from saga.messages.base import Event, Message
from saga.messages.envelope import Envelope
from saga.messages.steps import CompensationFailed, StepFailed
from saga.participant.service import Step, StepFailure
from saga.resilience.retry import NonRetryableError
from saga.security.redaction import redact

OutcomeKind = Literal[
    "completed", "failed", "compensation_failed", "duplicate", "ignored", "swallowed"
]

#: Longest error message a failure event carries.
MAX_ERROR_MESSAGE = 500

_propagator = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    attempts: int = 0
    emitted: list[Envelope[Message]] = field(default_factory=list)


class InvalidHandlerResult(NonRetryableError):
    """A handler returned something other than events: a defect, not retried."""


class EventTooLarge(NonRetryableError):
    """An event the handler returned exceeds the record size limit; not retried."""


def events(result: object) -> list[Event]:
    """The events a handler returned: an event, a list or tuple of them, or ``None``."""
    if result is None:
        return []
    found = [result] if isinstance(result, Message) else result
    if not isinstance(found, list | tuple) or not all(isinstance(e, Event) for e in found):
        raise InvalidHandlerResult(
            f"handler returned {type(result).__name__}; expected an Event, a list of "
            "Events, or None (commands are sent by the coordinator, not returned)"
        )
    return list(found)


def caused(
    incoming: Envelope[Message], event: Event, *, source: str, step: Step, attempt: int
) -> Envelope[Message]:
    """``event`` as the answer to ``incoming``, in the current trace context."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    out = incoming.caused(event, source=source, step=step.name)
    return out.replace(
        attempt=attempt,
        traceparent=carrier.get("traceparent", out.traceparent),
        tracestate=carrier.get("tracestate", out.tracestate),
    )


def failure_event(step: Step, error: BaseException, attempts: int) -> Event:
    """The event a step's final failure emits (a redacted, shortened error message)."""
    if isinstance(error, StepFailure) and error.event is not None:
        return error.event
    error_type = error.error_type if isinstance(error, StepFailure) else type(error).__name__
    message = redact(" ".join(str(error).split()))[:MAX_ERROR_MESSAGE]
    if step.compensation:
        return CompensationFailed(
            command_type=step.message.message_type,
            error_type=error_type,
            error_message=message,
            attempts=attempts,
        )
    model = step.fails_with or StepFailed
    return model(error_type=error_type, error_message=message, attempts=attempts)


def describe_step(span: Span, step: Step, envelope: Envelope[Message]) -> None:
    span.set_attribute("saga.step", step.name)
    if step.compensation and envelope.step:
        span.set_attribute("saga.compensates", envelope.step)


def reported(span: Span, outcome: Outcome) -> Outcome:
    """``outcome``, recorded on the delivery's span."""
    span.set_attribute("saga.outcome", outcome.kind)
    span.set_attribute("saga.attempt", outcome.attempts)
    if outcome.kind in ("failed", "compensation_failed"):
        span.set_status(Status(StatusCode.ERROR, f"step {outcome.kind}"))
    return outcome
