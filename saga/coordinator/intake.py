"""Facts in: an event read, a timer due or an operator's action, as the
:class:`~saga.coordinator.decision.Incoming` that the decision takes.
"""

from __future__ import annotations

from datetime import datetime

from saga.coordinator.decision import Incoming
from saga.definition.saga import SagaDefinition
from saga.messages.base import Message
from saga.messages.envelope import Envelope


def from_event(envelope: Envelope[Message], definition: SagaDefinition, now: datetime) -> Incoming:
    # A service's events name it in their source: how a generic StepFailed finds its step.
    source = envelope.source
    service = source.rsplit("/", 1)[-1] if source.startswith("/services/") else None
    return Incoming(
        kind="event",
        message_id=envelope.id,
        type=envelope.type,
        saga_id=envelope.saga_id,
        saga_type=definition.name,
        at=now,
        service=service,
        step_hint=envelope.step,
        attempt=envelope.attempt,
        payload=envelope.payload.model_dump(mode="json"),
        traceparent=envelope.traceparent,
        tracestate=envelope.tracestate,
    )


def from_timer(saga_id: str, saga_type: str, name: str, due: datetime, now: datetime) -> Incoming:
    """Timer ``name`` (as stored: ``step-timeout:charge``) due at ``due``; its message id
    holds the due time, so a timer set again later is another fact."""
    return Incoming(
        kind="timer",
        message_id=f"timer:{saga_id}:{name}:{due.isoformat()}",
        type=name,
        saga_id=saga_id,
        saga_type=saga_type,
        at=now,
    )


def from_operator(
    saga_id: str, saga_type: str, action: str, *, actor: str, reason: str | None, now: datetime
) -> Incoming:
    return Incoming(
        kind="operator",
        message_id=f"operator:{saga_id}:{now.isoformat()}",
        type=action,
        saga_id=saga_id,
        saga_type=saga_type,
        at=now,
        actor=actor,
        reason=reason,
    )
