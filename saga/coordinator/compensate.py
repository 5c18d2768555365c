"""Compensation: completed steps undone one at a time, latest completion first, or
all at once when the definition says ``compensation="parallel"``.

A compensation that fails or goes unconfirmed is sent again with backoff (the step's
compensation retry policy); when attempts run out the saga is parked for an operator.
"""

from __future__ import annotations

from datetime import timedelta

from saga.coordinator import approvals, branches
from saga.coordinator.decision import Builder, CommandToSend, build
from saga.coordinator.state import evolve
from saga.coordinator.timer_keys import (
    COMPENSATION_RETRY,
    COMPENSATION_TIMEOUT,
    DEADLINE,
    STEP_RETRY,
    TimerKey,
)
from saga.definition.saga import StepDefinition


def begin(b: Builder, reason: str) -> None:
    """The saga fails: what is still open is closed, and the undoing starts."""
    b.state = evolve(b.state, status="compensating", reason=reason)
    b.cancel(TimerKey(DEADLINE))
    b.note(f"compensating: {reason}")
    for step in b.definition.steps:
        current = b.step(step.name)
        b.cancel(TimerKey(STEP_RETRY, step.name))  # nothing starts again while undoing
        if step.approval is not None and current.status == "running":
            approvals.close_task(
                b, step, "cancelled", by="coordinator", reason="the saga compensates"
            )
            b.update(step.name, status="failed", finished_at=b.now, error="cancelled")
        elif current.status == "running" and current.waiting_for_data:
            branches.never_sent(b, step, "the saga compensates")
    advance(b)


def reopen(b: Builder) -> None:
    """A compensated saga has something to undo again (a completion read late)."""
    if b.state.status == "compensated":
        b.state = evolve(b.state, status="compensating", finished_at=None)


def advance(b: Builder) -> None:
    """Send the next compensation, or finish: one at a time, latest completion first
    (or every one at once, ``compensation="parallel"``)."""
    if b.state.status not in ("compensating",):
        return
    steps = b.definition.steps
    if any(b.step(s.name).status == "compensating" for s in steps):
        return  # in flight: wait for their confirmation
    in_flight = [s.name for s in steps if b.step(s.name).status == "running"]
    if in_flight:
        # A parallel branch still running: its outcome decides what to undo.
        b.note(f"waiting for {', '.join(in_flight)} (in flight) before compensating further")
        return
    d = b.definition
    due = [
        s
        for s in steps
        if b.step(s.name).status in ("completed", "timed_out")
        and s.needs_compensation
        and not d.forward_only(s)
    ]
    if not due:
        stays = [
            s.name
            for s in steps
            if d.forward_only(s) and b.step(s.name).status in ("completed", "timed_out")
        ]
        if stays:
            # Never "compensated" with an effect that stays (or may): an operator sees it,
            # and decides what it needs (an apology, a refund by hand), then resolves.
            why = (
                f"{', '.join(stays)} cannot be undone and completed (or may have) after"
                f" compensation began ({b.state.reason}): its effect stays, the other"
                " steps are compensated"
            )
            b.state = evolve(b.state, status="parked", reason=why)
            b.note(f"{why}: saga parked for an operator")
            return
        b.state = evolve(b.state, status="compensated", finished_at=b.now)
        b.note("saga compensated")
        return
    if d.compensation == "parallel":
        # Every undo at once; one whose outcome is unknown and must not be guessed
        # parks the saga once the others are done, as in reverse order.
        now = sorted(
            (s for s in due if not _parks(b, s)),
            key=lambda s: b.step(s.name).order or 0,
            reverse=True,  # sent latest completion first all the same
        )
        for step in now:
            if b.state.status == "compensating":  # not parked by an undo it cannot build
                _start(b, step)
        if now:
            return
    step = max(due, key=lambda s: b.step(s.name).order or 0)
    if _parks(b, step):
        # Its outcome is unknown and the definition says not to guess: an operator
        # retries (undo it) or skips (nothing to undo). Reached from every timeout:
        # the step's own, and the saga's deadline.
        why = f"step {step.name} timed out: its outcome is unknown (on_timeout='park')"
        b.update(step.name, status="compensation_failed", error=why)
        b.state = evolve(b.state, status="parked", reason=why)
        b.note(f"{why}: saga parked for an operator")
        return
    _start(b, step)


def _parks(b: Builder, step: StepDefinition) -> bool:
    """``step`` timed out and its definition says to park rather than guess."""
    return b.step(step.name).status == "timed_out" and b.definition.timeout_rule(step) == "park"


def _start(b: Builder, step: StepDefinition) -> None:
    b.update(
        step.name, status="compensating", compensation_attempts=0, compensation_started_at=b.now
    )
    send(b, step)


def send(b: Builder, step: StepDefinition) -> None:
    """Send ``step`` its compensation (attempt n + 1), or wait for the data it needs."""
    assert step.compensation is not None
    current = b.step(step.name)
    attempt = current.compensation_attempts + 1
    command = step.compensation
    payload, missing = build(command, current.data)
    if missing and current.inferred and not current.waiting_for_data:
        # Its own events are still on their way (another topic): wait for them,
        # with a timer as a safety net.
        b.update(step.name, waiting_for_data=True)
        due = b.now + (step.reply_timeout or timedelta(seconds=30))
        b.set_timer(TimerKey(COMPENSATION_RETRY, step.name), due)
        b.note(f"{step.name}: waiting for its events to build {command.message_type}")
        return
    rule = b.definition.timeout_rule(step)
    if missing and isinstance(rule, type):
        # No completion seen (it timed out): undo it the way the definition says.
        command = rule
        payload, missing = build(command, current.data)
    if missing:
        why = f"cannot build {command.message_type}: no value for {', '.join(missing)}"
        b.update(step.name, status="compensation_failed", error=why)
        b.state = evolve(b.state, status="parked", reason=why)
        b.note(f"{why}: saga parked for an operator")
        return
    b.update(step.name, compensation_attempts=attempt)
    b.commands.append(CommandToSend(step.name, command.message_type, payload, attempt))
    b.note(f"sent {command.message_type} for {step.name} (attempt {attempt})")
    if step.reply_timeout is not None:
        b.set_timer(TimerKey(COMPENSATION_TIMEOUT, step.name), b.now + step.reply_timeout)


def resume_waiting(b: Builder, step: StepDefinition) -> None:
    """The events ``step``'s compensation waited for came: send it now."""
    if b.step(step.name).waiting_for_data:
        b.update(step.name, waiting_for_data=False)
        b.cancel(TimerKey(COMPENSATION_RETRY, step.name))
        send(b, step)


def retry_or_park(b: Builder, step: StepDefinition, why: str) -> None:
    current = b.step(step.name)
    policy = step.compensation_retry
    if not policy.gives_up_after(current.compensation_attempts):
        delay: timedelta = policy.delay(current.compensation_attempts, rand=lambda: 0.5)
        b.set_timer(TimerKey(COMPENSATION_RETRY, step.name), b.now + delay)
        b.note(f"{why}; sent again in {delay.total_seconds():g}s")
        return
    b.update(step.name, status="compensation_failed", error=why)
    b.state = evolve(b.state, status="parked", reason=why)
    b.note(f"{why}; attempts exhausted: saga parked for an operator")
