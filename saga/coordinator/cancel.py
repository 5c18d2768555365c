"""Cancellation: whoever started a saga, or an operator, asks to stop it.

A running saga whose pivot has not started is compensated: what completed is
undone in reverse order, what is in flight is waited for, and a step that cannot
be undone never starts. Too late (the saga finished, is compensating or parked,
or its pivot started: it only goes forward) the cancel is refused with the
reason; the requester hears of it (``saga.CancelRefused``). Both are in the saga
log with who asked and why.
"""

from __future__ import annotations

from saga.coordinator import compensate, forward
from saga.coordinator.decision import Builder, EventToPublish
from saga.messages.lifecycle import CancelRefused


def refusal(b: Builder) -> str | None:
    """Why a cancel of this saga is refused; ``None`` when it is cancelled."""
    status = b.state.status
    if b.state.finished:
        return f"saga is {status} already"
    pivot = forward.pivot_started(b)
    if pivot is not None:  # the reason that stays, whether it waits, runs or is parked
        return f"its pivot {pivot.name} started (it cannot be undone): the saga only goes forward"
    if status in ("compensating", "parked"):
        return f"saga is {status} already ({b.state.reason})"
    return None


def request(b: Builder, *, by: str, reason: str | None, announce: bool) -> None:
    """Cancel the saga, or refuse and say why (``announce``: as ``saga.CancelRefused``)."""
    who = by + (f" ({reason})" if reason else "")
    refused = refusal(b)
    if refused is not None:
        b.note(f"cancel by {who} refused: {refused}")
        if announce:
            payload = CancelRefused(
                saga_type=b.state.saga_type, reason=refused, requested_by=by
            ).model_dump(mode="json")
            b.events.append(EventToPublish(CancelRefused.message_type, payload))
        return
    compensate.begin(b, f"cancelled by {who}")
