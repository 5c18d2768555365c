"""Stray events: an event of a saga not started yet is held, never opens one.

A saga's events travel on several topics (one per service), so the coordinator may
read a step's event before the saga's start event; an event may also be a stray, for
a saga nobody started (a bug, a replay, an attacker). Only the start event opens a
saga (:func:`~saga.coordinator.decide.decide` says ``hold`` for any other), so the
shell keeps such an event, record and all, for ``SAGA_ORPHAN_HOLD_MS``: when the start
event comes within it, the held events are decided right after it, in the order they
were held, in the same transaction; when the hold passes, the record goes to its
topic's dead letters as an ``OrphanEvent`` with the reason, and nothing of it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from saga.kafka.dead_letter import DeadLetter, dead_letter
from saga.messages.codec import RawRecord

#: How long an event of a saga not started yet waits for its start event (the
#: default of ``SAGA_ORPHAN_HOLD_MS``).
ORPHAN_HOLD = timedelta(minutes=5)
#: The ``dlq_error_type`` of an orphan's dead letter.
ORPHAN_EVENT = "OrphanEvent"


@dataclass(frozen=True)
class HeldEvent:
    """An event kept for its saga's start event, as the coordinator read it."""

    saga_id: str
    message_id: str
    record: RawRecord
    held_at: datetime
    held_until: datetime
    #: Its context as the coordinator saw it (the ``process`` span), for what it causes.
    traceparent: str | None = None
    tracestate: str | None = None
    #: Set when its decision was refused after the start event came: why, and the
    #: error's type (it is dead-lettered with these instead of as an orphan).
    reason: str | None = None
    error_type: str | None = None


def orphan_reason(held: HeldEvent) -> str:
    seconds = (held.held_until - held.held_at).total_seconds()
    return (
        f"orphan: no saga {held.saga_id} was started within {seconds:g}s of this event"
        " (only a saga's start event opens it)"
    )


def orphan_letter(held: HeldEvent, group: str, now: datetime | None = None) -> DeadLetter:
    """The dead letter of ``held``: its record as read, with why."""
    if held.reason is not None:
        return dead_letter(
            held.record,
            reason=held.reason,
            error_type=held.error_type or "DecisionError",
            group=group,
            now=now,
        )
    return dead_letter(
        held.record, reason=orphan_reason(held), error_type=ORPHAN_EVENT, group=group, now=now
    )
