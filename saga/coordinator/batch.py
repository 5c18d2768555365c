"""What one transaction accumulates: for each decision, the saga as it now is, the
timers set or cancelled, task changes, outgoing records, a log entry and spans; and
the events held for their saga's start event.
Spans and metrics are let out only once the transaction committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from opentelemetry import metrics, trace
from opentelemetry.trace import Span

from saga.coordinator import saga_log, store
from saga.coordinator.decision import Decision, Incoming, TaskChange
from saga.coordinator.observe import observe
from saga.coordinator.orphans import HeldEvent
from saga.coordinator.outgoing import Outgoing
from saga.coordinator.state import SagaState
from saga.messages.codec import EncodedRecord
from saga.observability import tracing

_meter = metrics.get_meter("saga")
_ignored = _meter.create_counter(
    "saga.coordinator.ignored", description="Facts recorded but not acted on (unknown saga, ...)"
)
_decisions = _meter.create_counter("saga.coordinator.decisions", description="Decisions made")
_held = _meter.create_counter(
    "saga.coordinator.held", description="Events held for their saga's start event"
)
_OUTCOMES = frozenset({"completed", "compensated", "parked", "resolved"})


@dataclass
class Batch:
    """What one transaction accumulates."""

    states: dict[str, SagaState]
    read_versions: dict[str, int | None]
    changed: set[str] = field(default_factory=set)
    log: list[store.LogEntry] = field(default_factory=list)
    #: (saga id, timer name) -> due, or ``None`` to cancel; the last change wins.
    timers: dict[tuple[str, str], datetime | None] = field(default_factory=dict)
    outgoing: list[tuple[str, EncodedRecord]] = field(default_factory=list)
    decisions: list[tuple[Incoming, Decision]] = field(default_factory=list)
    #: Ended (so exported) only once the transaction committed.
    spans: list[Span] = field(default_factory=list)
    #: (state before, state after) per decision, for the metrics after commit.
    changes: list[tuple[SagaState | None, SagaState | None]] = field(default_factory=list)
    #: Events of no known saga (recorded, not decided on).
    ignored: int = 0
    #: Approval task changes: (saga id, saga type, changes).
    tasks: list[tuple[str, str, list[TaskChange]]] = field(default_factory=list)
    #: Events of sagas not started yet, to keep for their start event, in order.
    held: list[HeldEvent] = field(default_factory=list)
    #: Where the transaction's time went: (span event, wall clock ns), see ``Applied``.
    marks: list[tuple[str, int]] = field(default_factory=list)

    def record(self, incoming: Incoming, decision: Decision, outgoing: Outgoing) -> None:
        """Add what ``decision`` (on ``incoming``) does to the batch, in its own span."""
        saga_id = incoming.saga_id
        before = self.states.get(saga_id)
        span = _decision_span(incoming, before, decision)
        self.spans.append(span)
        if decision.state is not None and decision.applied:
            self.states[saga_id] = decision.state
            self.changed.add(saga_id)
            self.changes.append((before, decision.state))
            if _outcome_changed(before, decision.state):
                self.outgoing.append(outgoing.announce(incoming, span, decision.state))
        for name in decision.cancel_timers:
            self.timers[(saga_id, name)] = None
        for timer in decision.set_timers:
            self.timers[(saga_id, timer.name)] = timer.due
        if decision.tasks:
            self.tasks.append((saga_id, incoming.saga_type, decision.tasks))
        for event in decision.events:
            self.outgoing.append(outgoing.event(incoming, span, event))
        for command in decision.commands:
            compensate = tracing.tracer().start_span(
                f"{'dispatch' if command.purpose == 'start' else 'compensate'} {command.step}",
                context=trace.set_span_in_context(span),
                attributes={
                    "saga.id": saga_id,
                    "saga.type": incoming.saga_type,
                    "saga.step": command.step,
                    "saga.compensation.attempt": command.attempt,
                    "saga.message.type": command.message_type,
                },
            )
            self.spans.append(compensate)
            self.outgoing.append(outgoing.command(incoming, compensate, command))
        self.log.append(saga_log.decided(incoming, decision))

    def committed(self) -> None:
        tracing.end_spans(self.spans)
        for before, after in self.changes:
            observe(before, after)
        for _, decision in self.decisions:
            _decisions.add(1, {"applied": str(decision.applied).lower()})
            if decision.hold:
                _held.add(1)
            elif not decision.applied:
                _ignored.add(1, {"reason": "no effect"})
        if self.ignored:
            _ignored.add(self.ignored, {"reason": "unknown saga type"})


def _decision_span(incoming: Incoming, before: SagaState | None, decision: Decision) -> Span:
    """``decide <saga type>``: child of the event, or of the saga's trace for
    a timer or an operator, so that what it sends stays in the saga's trace."""
    traceparent, tracestate = incoming.traceparent, incoming.tracestate
    if traceparent is None and before is not None:
        traceparent, tracestate = before.traceparent, before.tracestate
    after = decision.state
    return tracing.tracer().start_span(
        f"decide {incoming.saga_type}",
        context=tracing.context_of(traceparent, tracestate),
        attributes={
            "saga.id": incoming.saga_id,
            "saga.type": incoming.saga_type,
            "saga.trigger": incoming.kind,
            "saga.fact": incoming.type,
            "saga.applied": decision.applied,
            "saga.status": after.status if after is not None else "",
            "saga.decision.notes": list(decision.notes),
            **({"saga.step": incoming.step_hint} if incoming.step_hint else {}),
        },
    )


def _outcome_changed(before: SagaState | None, after: SagaState) -> bool:
    return after.status in _OUTCOMES and (before is None or before.status != after.status)
