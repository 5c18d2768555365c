"""The saga log's entries: each fact as it came (an event, a timer, an operator's
action), each decision with what it sent, and the facts ignored or refused, with why.
"""

from __future__ import annotations

from datetime import datetime

from saga.coordinator.decision import Decision, Incoming
from saga.coordinator.outgoing import COORDINATOR
from saga.coordinator.refusals import DecisionError
from saga.coordinator.store import LogEntry
from saga.messages.base import Message
from saga.messages.envelope import Envelope


def event(envelope: Envelope[Message]) -> LogEntry:
    """An event read; its message id makes a duplicate a no-op (see ``store.append_events``)."""
    return LogEntry(
        envelope.saga_id,
        "event",
        envelope.type,
        envelope.source,
        {
            "payload": envelope.payload.model_dump(mode="json"),
            "step": envelope.step,
            "attempt": envelope.attempt,
            "time": envelope.time.isoformat(),
            "traceparent": envelope.traceparent,
        },
        envelope.id,
    )


def timer(incoming: Incoming, due: datetime) -> LogEntry:
    return LogEntry(
        incoming.saga_id,
        "timer",
        incoming.type,
        COORDINATOR,
        {"due": due.isoformat()},
        incoming.message_id,
    )


def operator(incoming: Incoming) -> LogEntry:
    return LogEntry(
        incoming.saga_id,
        "operator",
        incoming.type,
        incoming.actor or "",
        {"reason": incoming.reason},
        incoming.message_id,
    )


def decided(incoming: Incoming, decision: Decision) -> LogEntry:
    """What the decision on ``incoming`` did (``ignored`` when it changed nothing,
    ``held`` when it waits for its saga's start event)."""
    return LogEntry(
        incoming.saga_id,
        "decision" if decision.applied else "held" if decision.hold else "ignored",
        incoming.type,
        COORDINATOR,
        {
            "notes": decision.notes,
            "commands": [
                {
                    "type": c.message_type,
                    "step": c.step,
                    "attempt": c.attempt,
                    "payload": c.payload,
                    **({"purpose": "start", "to": c.service} if c.purpose == "start" else {}),
                }
                for c in decision.commands
            ],
            "events": [e.message_type for e in decision.events],
            "tasks": [f"{t.change} {t.task_id} ({t.assignee})" for t in decision.tasks],
            "status": decision.state.status if decision.state else None,
            "cause": incoming.message_id,
        },
    )


def ignored(envelope: Envelope[Message], why: str) -> LogEntry:
    return LogEntry(
        envelope.saga_id,
        "ignored",
        envelope.type,
        COORDINATOR,
        {"why": why, "message_id": envelope.id},
    )


def refused(saga_id: str, fact: str, error: DecisionError) -> LogEntry:
    return LogEntry(
        saga_id, "refused", fact, COORDINATOR, {"why": str(error), "cause": error.message_id}
    )
