"""Forward recovery: the pivot, and the steps after it, only go forward.

The pivot is the saga's first step that cannot be undone. The coordinator starts
it (and every step that cannot be undone) itself, by sending its trigger to its
service once it has checked that the saga still runs; so it never starts for a
saga that is compensating, cancelled or finished. Once the pivot started:

* its definite failure compensates the steps before it, as any failure does;
* its timeout leaves its outcome unknown, so nothing is undone blindly: the saga
  parks for an operator (``on_timeout="park"``, the default) or the step is
  started again (``"retry"``);
* a step after it that fails or times out is started again per its retry policy,
  and the saga parks when attempts run out; it is never compensated;
* a cancel is refused and the saga's deadline compensates nothing;
* a step that cannot be undone and completes after compensation began (a parallel
  branch failed meanwhile) parks the saga with the reason once the other steps
  are undone: never "compensated" with an effect that stays.
"""

from __future__ import annotations

from typing import Any

from saga.coordinator import branches, compensate
from saga.coordinator.decision import Builder, CommandToSend, build
from saga.coordinator.state import evolve
from saga.coordinator.timer_keys import STEP_RETRY, STEP_TIMEOUT, TimerKey
from saga.definition.saga import StepDefinition


def pivot_started(b: Builder) -> StepDefinition | None:
    """The pivot, if it started: the saga goes forward only."""
    pivot = b.definition.pivot
    if pivot is None or b.step(pivot.name).status == "pending":
        return None
    return pivot


def start(b: Builder, step: StepDefinition, message_type: str, payload: dict[str, Any]) -> None:
    """Send ``step`` its trigger on its service's commands topic (attempt n + 1)."""
    starts = b.step(step.name).starts + 1
    b.update(step.name, starts=starts, trigger=message_type)
    b.commands.append(
        CommandToSend(step.name, message_type, dict(payload), starts, "start", step.service)
    )
    b.note(f"sent {message_type} to {step.service} to run {step.name} (attempt {starts})")


def timed_out(b: Builder, step: StepDefinition) -> None:
    """``step`` (forward only) timed out: its outcome is unknown, nothing is undone."""
    rule = b.definition.timeout_rule(step)
    if rule == "retry":
        retry_or_park(b, step, f"step {step.name} timed out")
        return
    park(
        b,
        step,
        f"step {step.name} timed out and cannot be undone: its outcome is unknown"
        " (on_timeout='park'); retry starts it again, skip counts it done",
    )


def failed(b: Builder, step: StepDefinition, reason: str) -> bool:
    """A forward-only step failed; ``False`` for the pivot, whose failure compensates."""
    if not b.definition.after_pivot(step):
        if b.state.status == "parked":
            b.state = evolve(b.state, status="running", reason=None)  # parked for its timeout
        return False
    retry_or_park(b, step, reason)
    return True


def retry_or_park(b: Builder, step: StepDefinition, why: str) -> None:
    starts = b.step(step.name).starts
    policy = step.retry
    if policy.gives_up_after(starts):
        park(b, step, f"{why}; started {starts} times: attempts exhausted")
        return
    delay = policy.delay(starts, rand=lambda: 0.5)
    b.set_timer(TimerKey(STEP_RETRY, step.name), b.now + delay)
    b.note(f"{why}; it goes forward: started again in {delay.total_seconds():g}s")


def park(b: Builder, step: StepDefinition, why: str) -> None:
    b.update(step.name, error=why)
    b.state = evolve(b.state, status="parked", reason=why)
    b.note(f"{why}: saga parked for an operator")


def start_again(b: Builder, step: StepDefinition) -> None:
    """The retry timer fired (or an operator retries): its trigger goes again."""
    current = b.step(step.name)
    trigger = next(
        (m for m in step.started_by if m.message_type == current.trigger), step.started_by[0]
    )
    payload, missing = build(trigger, {**b.data(), **current.data})
    if missing:
        park(b, step, f"cannot start {step.name} again: no value for {', '.join(missing)}")
        return
    b.update(step.name, status="running", error=None, finished_at=None)
    if b.state.status == "parked":
        b.state = evolve(b.state, status="running", reason=None)
    start(b, step, trigger.message_type, payload)
    if step.reply_timeout is not None:
        b.set_timer(TimerKey(STEP_TIMEOUT, step.name), b.now + step.reply_timeout)


def late_answer(b: Builder, step: StepDefinition, fields: dict[str, Any]) -> None:
    """A forward-only step that timed out or failed completed after all: the saga goes
    forward, unless compensation began meanwhile (its effect then stays: parked)."""
    b.cancel(TimerKey(STEP_RETRY, step.name))
    b.update(step.name, status="completed", order=b.next_order(), error=None, **fields)
    if b.state.status in ("compensating", "compensated") or _undoing(b):
        b.update(step.name, completed_late=True)
        b.note(f"{step.name} cannot be undone and completed after compensation began")
        compensate.reopen(b)
        compensate.advance(b)
        return
    b.note(f"{step.name} completed after its timeout or failure: the saga goes forward")
    if b.state.status == "parked" and not waiting_to_start(b):
        b.state = evolve(b.state, status="running", reason=None)
    if b.state.status == "running":
        branches.check_joins(b)
        branches.maybe_complete(b)


def waiting_to_start(b: Builder) -> list[StepDefinition]:
    """Forward-only steps of a saga parked on its way forward, that an operator's retry
    starts again: the pivot that timed out, a step after it that timed out or failed.
    None while anything is being undone."""
    if _undoing(b):
        return []
    d = b.definition
    return [
        s
        for s in d.steps
        if d.forward_only(s)
        and (
            b.step(s.name).status == "timed_out"
            or (b.step(s.name).status == "failed" and d.after_pivot(s))
        )
    ]


def _undoing(b: Builder) -> bool:
    """Compensation began: a step is being undone, was undone or could not be."""
    return any(
        b.step(s.name).status in ("compensating", "compensated", "compensation_failed")
        for s in b.definition.steps
    )
