"""What the coordinator sends, as records for its outbox: commands on a service's
commands topic, its own events and saga outcomes on the lifecycle topic; each one in
the trace of the decision that sent it.
"""

from __future__ import annotations

from typing import cast

from opentelemetry.trace import Span

from saga.coordinator.decision import CommandToSend, EventToPublish, Incoming
from saga.coordinator.state import SagaState
from saga.messages.base import Message
from saga.messages.codec import EncodedRecord, encode
from saga.messages.envelope import Envelope
from saga.messages.lifecycle import SagaFinished, SagaOutcome
from saga.messages.registry import MessageRegistry
from saga.messages.topics import commands_topic, events_topic, owner_of, prefixed
from saga.observability import tracing

#: The coordinator's name: its outbox's owner, the actor of its saga log entries.
COORDINATOR = "coordinator"
SOURCE = "/coordinator"
#: Where saga outcomes are announced (:class:`~saga.messages.lifecycle.SagaFinished`).
LIFECYCLE_TOPIC = events_topic(owner_of(SagaFinished.message_type))


class Outgoing:
    """Builds the records of one coordinator: its message types, its topic prefix."""

    def __init__(self, registry: MessageRegistry, prefix: str) -> None:
        self.registry = registry
        self.prefix = prefix

    def command(
        self, incoming: Incoming, span: Span, command: CommandToSend
    ) -> tuple[str, EncodedRecord]:
        """A step's compensation, or its start (orchestration, an alternative)."""
        model = self.registry.model_for(command.message_type)
        # In the compensate (or dispatch) span: timers and restarts stay in the saga's trace.
        envelope = _from_coordinator(
            incoming,
            span,
            model.model_validate(command.payload),
            step=command.step,
            attempt=command.attempt,
        )
        service = command.service or owner_of(command.message_type)
        return prefixed(self.prefix, commands_topic(service)), encode(envelope)

    def event(
        self, incoming: Incoming, span: Span, event: EventToPublish
    ) -> tuple[str, EncodedRecord]:
        """A join, an approval outcome or an escalation, on ``saga.events``."""
        model = self.registry.model_for(event.message_type)
        envelope = _from_coordinator(
            incoming, span, model.model_validate(event.payload), step=event.step
        )
        return prefixed(self.prefix, LIFECYCLE_TOPIC), encode(envelope)

    def announce(
        self, incoming: Incoming, span: Span, state: SagaState
    ) -> tuple[str, EncodedRecord]:
        """``saga.SagaFinished`` on ``saga.events``, for whoever waits on the outcome."""
        traceparent, tracestate = tracing.context_headers(span)
        envelope: Envelope[Message] = Envelope(
            payload=SagaFinished(
                saga_type=state.saga_type,
                status=cast(SagaOutcome, state.status),
                reason=state.reason,
            ),
            saga_id=state.saga_id,
            saga_type=state.saga_type,
            source=SOURCE,
            causation_id=incoming.message_id,
            traceparent=traceparent,
            tracestate=tracestate,
        )
        return prefixed(self.prefix, LIFECYCLE_TOPIC), encode(envelope)


def _from_coordinator(
    incoming: Incoming, span: Span, payload: Message, *, step: str | None, attempt: int = 1
) -> Envelope[Message]:
    """An envelope the coordinator sends because of ``incoming``, in ``span``'s trace."""
    traceparent, tracestate = tracing.context_headers(span)
    return Envelope(
        payload=payload,
        saga_id=incoming.saga_id,
        saga_type=incoming.saga_type,
        source=SOURCE,
        step=step,
        causation_id=incoming.message_id,
        attempt=attempt,
        traceparent=traceparent,
        tracestate=tracestate,
    )
