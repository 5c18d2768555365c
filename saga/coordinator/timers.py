"""What a firing timer does: the deadline or a step timeout fails the saga (an outcome
unknown is compensated too, before the pivot), an approval's SLA escalates it, a
compensation is retried, a step that must go forward is started again.

A timer firing after the fact (the saga finished, the step moved on) does nothing.
"""

from __future__ import annotations

from saga.coordinator import approvals, branches, compensate, forward
from saga.coordinator.decision import Builder, Incoming
from saga.coordinator.timer_keys import (
    APPROVAL_DEADLINE,
    APPROVAL_SLA,
    COMPENSATION_RETRY,
    COMPENSATION_TIMEOUT,
    DEADLINE,
    STEP_RETRY,
    STEP_TIMEOUT,
    TimerKey,
)
from saga.definition.saga import StepDefinition


def on_timer(b: Builder, incoming: Incoming) -> None:
    if b.state.finished:
        b.note(f"timer {incoming.type} fired after the saga finished: nothing to do")
        return
    key = TimerKey.parse(incoming.type)
    if key is None:
        # Set by another version of the coordinator, say: noted, never a failed decision.
        b.note(f"timer {incoming.type}: not a timer this coordinator knows, nothing to do")
        return
    if key.kind == DEADLINE:
        pivot = forward.pivot_started(b)
        if b.state.status == "running" and pivot is not None:
            b.note(
                f"saga deadline passed after the pivot {pivot.name} started: nothing is"
                " undone, the saga goes forward"
            )
        elif b.state.status == "running":
            b.note("saga deadline passed")
            for step in b.definition.steps:
                if b.step(step.name).status == "running":
                    _time_out(b, step)
            compensate.begin(b, "saga deadline passed")
        return
    assert key.step is not None  # every kind but the deadline's names its step
    step = b.definition.step(key.step)
    current = b.step(step.name)
    if key.kind in (APPROVAL_SLA, APPROVAL_DEADLINE) and current.status == "running":
        if key.kind == APPROVAL_SLA:
            approvals.escalate(b, step)
        else:
            approvals.decide_task(b, step, approved=False, by="deadline", reason="deadline passed")
    elif key.kind == STEP_TIMEOUT and current.status == "running":
        _time_out(b, step)
        if b.state.status == "running" and b.definition.forward_only(step) and not step.optional:
            forward.timed_out(b, step)
        elif b.state.status == "running":
            branches.after_failure(b, step, f"step {step.name} timed out", timed_out=True)
        else:
            compensate.advance(b)  # a branch in flight settled: compensation goes on
    elif key.kind == STEP_RETRY and current.status in ("timed_out", "failed"):
        if b.state.status == "running":
            forward.start_again(b, step)
        else:
            b.note(f"{step.name}: not started again, the saga is {b.state.status}")
    elif key.kind == COMPENSATION_TIMEOUT and current.status == "compensating":
        compensate.retry_or_park(b, step, f"no confirmation of {step.name}'s compensation in time")
    elif key.kind == COMPENSATION_RETRY and current.status == "compensating":
        compensate.send(b, step)
    else:
        b.note(f"timer {incoming.type}: nothing to do, step is {current.status}")


def _time_out(b: Builder, step: StepDefinition) -> None:
    if b.step(step.name).waiting_for_data:
        branches.never_sent(b, step, "the data for its command never arrived")
        return
    b.update(
        step.name,
        status="timed_out",
        finished_at=b.now,
        order=b.next_order(),
        error="timed out: outcome unknown",
    )
    if b.definition.forward_only(step):
        b.note(f"{step.name} timed out (outcome unknown: it cannot be undone)")
    else:
        b.note(f"{step.name} timed out (outcome unknown: it will be compensated)")
