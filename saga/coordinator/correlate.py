"""Which step an event is about, and what its start, completion or failure does.

A saga's events come on several topics (one per service), so in any order: an event of
a step not started yet proves that the steps which start it completed (inferred).
"""

from __future__ import annotations

import functools
from typing import Any

from saga.coordinator import approvals, branches, cancel, compensate, forward
from saga.coordinator.decision import Builder, EventToPublish, Incoming
from saga.coordinator.state import evolve
from saga.coordinator.timer_keys import (
    COMPENSATION_RETRY,
    COMPENSATION_TIMEOUT,
    STEP_TIMEOUT,
    TimerKey,
)
from saga.definition.saga import StepDefinition
from saga.messages.steps import CompensationFailed, StepFailed
from saga.messages.topics import COORDINATOR_OWNER, owner_of


def on_event(b: Builder, incoming: Incoming) -> None:
    d = b.definition
    kind = incoming.type
    matched = False
    for step in d.steps:
        if kind in _types(step.completed_by):
            matched = True
            _completed(b, step, incoming)
        elif kind in _types(step.failed_by):
            matched = True
            _failed(b, step, incoming)
        elif kind in _types(step.compensated_by):
            matched = True
            _compensated(b, step, incoming)
    for step in d.steps:
        if kind in _types(step.started_by):
            matched = True
            _started(b, step, incoming)
    if kind == StepFailed.message_type:
        failing = _step_of(b, incoming, want=("running", "pending", "timed_out"))
        if failing is not None:
            matched = True
            _failed(b, failing, incoming)
    cancelled_by = d.cancelled_by
    if cancelled_by is not None and kind == cancelled_by.message_type:
        matched = True
        who = incoming.payload.get("requested_by") or incoming.service or "its starter"
        cancel.request(b, by=str(who), reason=incoming.payload.get("reason"), announce=True)
    if kind == CompensationFailed.message_type:
        undoing = _step_of(b, incoming, want=("compensating",))
        if undoing is not None:
            matched = True
            _compensation_failed(b, undoing, incoming)
    if not matched:
        b.note(f"{kind}: not part of saga {d.name!r}; recorded only")
    # While compensating, what the event settled (a confirmation, a branch's outcome)
    # may let the next compensation go.
    compensate.advance(b)


def publish(b: Builder, kind: str, payload: dict[str, Any], step: str | None) -> None:
    """Publish a coordinator event, and start the steps it starts (it never comes back)."""
    b.events.append(EventToPublish(kind, payload, step))
    fact = Incoming(
        kind="event",
        message_id=f"{b.state.saga_id}:{kind}",
        type=kind,
        saga_id=b.state.saga_id,
        saga_type=b.state.saga_type,
        at=b.now,
        payload=payload,
    )
    for started in b.definition.steps:
        if kind in _types(started.started_by):
            _started(b, started, fact)
    if kind == b.definition.end.message_type and b.state.status == "running":
        branches.complete(b)


def _started(b: Builder, step: StepDefinition, incoming: Incoming) -> None:
    current = b.step(step.name)
    if current.inferred or current.status != "pending":
        # Its start event, read late (its own events came first, from another topic):
        # the data its compensation or a join may need.
        b.update(step.name, data={**incoming.payload, **current.data})
        if current.inferred:
            compensate.resume_waiting(b, step)
        branches.data_arrived(b)
        return
    if b.state.status != "running":
        b.note(f"{step.name}: not started, the saga is {b.state.status}")
        return
    by_coordinator = step.started_by_coordinator or (
        b.mode == "orchestration" and owner_of(incoming.type) != COORDINATOR_OWNER
    )
    b.update(
        step.name,
        status="running",
        started_at=incoming.at,
        data=dict(incoming.payload),
        trigger=incoming.type,
        starts=0 if by_coordinator else 1,  # its service started it from the event
    )
    b.note(f"{step.name} started")
    if step.approval is not None:
        approvals.open_task(b, step)
        return
    if step.reply_timeout is not None:
        b.set_timer(TimerKey(STEP_TIMEOUT, step.name), incoming.at + step.reply_timeout)
    if by_coordinator:
        # Central control (orchestration), or a step that cannot be undone: its service
        # hears of it from the coordinator only, which has just checked that the saga runs.
        forward.start(b, step, incoming.type, incoming.payload)


def _infer_predecessors(b: Builder, step: StepDefinition, incoming: Incoming) -> None:
    """An event of a step not yet started proves the steps that start it completed.

    Events of one saga travel on several topics (one per service), so the
    coordinator may read a later step's event before an earlier one's. The
    later step could only have run after its trigger, so that trigger's step
    completed: record it now (flagged as inferred), in causal order, so
    compensation order stays right. Its own event, when it comes, adds data.
    """
    if b.step(step.name).status != "pending":
        return
    triggers = _types(step.started_by)
    for earlier in b.definition.steps:
        if earlier is step or not triggers & _types(earlier.completed_by):
            continue
        if b.step(earlier.name).status in ("pending", "running"):
            _infer_predecessors(b, earlier, incoming)
            current = b.step(earlier.name)
            b.update(
                earlier.name,
                status="completed",
                order=b.next_order(),
                inferred=True,
                started_at=current.started_at or incoming.at,
                finished_at=incoming.at,
                data=current.data or dict(incoming.payload),
            )
            b.note(f"{earlier.name} completed (inferred from {incoming.type}, read first)")
    if b.state.status == "running":
        b.update(step.name, status="running", started_at=incoming.at)


def _completed(b: Builder, step: StepDefinition, incoming: Incoming) -> None:
    _infer_predecessors(b, step, incoming)
    current = b.step(step.name)
    b.cancel(TimerKey(STEP_TIMEOUT, step.name))
    fields = {
        "finished_at": incoming.at,
        "attempt": incoming.attempt,
        "data": {**current.data, **incoming.payload},
        "started_at": current.started_at or incoming.at,
    }
    if current.inferred:
        b.update(step.name, inferred=False, **fields)
        b.note(f"{step.name}: its completion arrived (already known, inferred earlier)")
        compensate.resume_waiting(b, step)
        branches.data_arrived(b)
    elif current.status in ("pending", "running"):
        b.update(step.name, status="completed", order=b.next_order(), **fields)
        b.note(f"{step.name} completed")
        if b.state.status in ("compensating", "compensated", "parked") and (
            b.definition.forward_only(step)
        ):
            b.update(step.name, completed_late=True)
            b.note(
                f"{step.name} cannot be undone and completed after compensation began:"
                " its effect stays"
            )
            compensate.reopen(b)
            compensate.advance(b)
        elif b.state.status in ("compensating", "compensated", "parked"):
            b.note(f"{step.name} completed after compensation began: it is undone too")
            compensate.reopen(b)
            compensate.advance(b)
        elif b.state.status == "running" and incoming.type == b.definition.end.message_type:
            branches.complete(b)
        elif b.state.status == "running":
            branches.check_joins(b)
            branches.maybe_complete(b)
    elif current.status in ("timed_out", "failed") and b.definition.forward_only(step):
        forward.late_answer(b, step, fields)
    elif current.status == "timed_out":
        # The late answer to a step already being undone: the undo covers it.
        b.update(step.name, **fields)
        b.note(f"{step.name} answered after its timeout; its compensation covers it")
    elif current.status == "compensating":
        b.update(step.name, compensate_again=True, **fields)
        b.note(f"{step.name} completed while its compensation was in flight: undo again after")
    elif current.status == "compensated":
        b.update(step.name, status="completed", order=b.next_order(), **fields)
        b.note(f"{step.name} completed after it was compensated: undo again")
        compensate.reopen(b)
        compensate.advance(b)
    else:
        b.note(f"{step.name}: completion ignored, step is {current.status}")


def _failed(b: Builder, step: StepDefinition, incoming: Incoming) -> None:
    _infer_predecessors(b, step, incoming)
    current = b.step(step.name)
    if current.status not in ("pending", "running", "timed_out"):
        b.note(f"{step.name}: failure ignored, step is {current.status}")
        return
    error = _error(incoming)
    b.cancel(TimerKey(STEP_TIMEOUT, step.name))
    # A step being undone after its timeout stays so; one that cannot be undone failed.
    timed_out = current.status == "timed_out" and not b.definition.forward_only(step)
    b.update(
        step.name,
        status="timed_out" if timed_out else "failed",
        finished_at=incoming.at,
        attempt=incoming.attempt,
        error=error,
        started_at=current.started_at or incoming.at,
    )
    b.note(f"{step.name} failed: {error}")
    reason = f"step {step.name} failed: {error}"
    forward_only = b.definition.forward_only(step) and b.state.status in ("running", "parked")
    if forward_only and forward.failed(b, step, reason):
        return
    branches.after_failure(b, step, reason, timed_out=timed_out)


def _compensated(b: Builder, step: StepDefinition, incoming: Incoming) -> None:
    current = b.step(step.name)
    if current.status not in ("compensating", "compensation_failed"):
        # (A late confirmation of a parked compensation still counts: it succeeded.)
        b.note(f"{step.name}: confirmation ignored, step is {current.status}")
        return
    b.cancel(TimerKey(COMPENSATION_TIMEOUT, step.name), TimerKey(COMPENSATION_RETRY, step.name))
    if current.compensate_again:
        b.update(step.name, status="completed", compensate_again=False, order=b.next_order())
        b.note(f"{step.name} compensated, and undone once more for its late completion")
    else:
        b.update(step.name, status="compensated", compensated_at=incoming.at)
        b.note(f"{step.name} compensated")
    failed = [s.name for s in b.definition.steps if b.step(s.name).status == "compensation_failed"]
    if b.state.status == "parked" and not failed:
        # (With compensation="parallel", another undo may have parked the saga: it stays.)
        b.state = evolve(b.state, status="compensating")
    compensate.advance(b)


def _compensation_failed(b: Builder, step: StepDefinition, incoming: Incoming) -> None:
    error = _error(incoming)
    b.update(step.name, error=f"compensation failed: {error}")
    b.cancel(TimerKey(COMPENSATION_TIMEOUT, step.name))
    compensate.retry_or_park(b, step, f"compensation of {step.name} failed: {error}")


@functools.cache
def _types(models: tuple[type[Any], ...]) -> frozenset[str]:
    return frozenset(m.message_type for m in models)


def _step_of(b: Builder, incoming: Incoming, want: tuple[str, ...]) -> StepDefinition | None:
    """The step a generic event (StepFailed, CompensationFailed) is about."""
    candidates = [s for s in b.definition.steps if s.service == incoming.service]
    if incoming.step_hint:
        named = [s for s in candidates if s.name == incoming.step_hint]
        if named:
            return named[0]
    active = [s for s in candidates if b.step(s.name).status in want]
    return active[0] if active else (candidates[0] if len(candidates) == 1 else None)


def _error(incoming: Incoming) -> str:
    kind = incoming.payload.get("error_type", incoming.type)
    message = incoming.payload.get("error_message", "")
    return f"{kind}: {message}" if message else str(kind)
