"""An operator's actions on a saga: ``retry`` a parked compensation (or a parked step
after the pivot), ``skip:<step>``, ``approve:<step>`` or ``reject:<step>`` a task,
``cancel`` a running saga, ``resolve`` the saga by hand.
"""

from __future__ import annotations

from saga.coordinator import approvals, branches, cancel, compensate, forward
from saga.coordinator.decision import Builder, Incoming
from saga.coordinator.state import evolve
from saga.coordinator.timer_keys import (
    COMPENSATION_RETRY,
    COMPENSATION_TIMEOUT,
    DEADLINE,
    STEP_RETRY,
    STEP_TIMEOUT,
    TimerKey,
)
from saga.definition.saga import StepDefinition


def on_operator(b: Builder, incoming: Incoming) -> None:
    who = f"{incoming.actor or 'unknown'}" + (f" ({incoming.reason})" if incoming.reason else "")
    action, _, name = incoming.type.partition(":")
    if name and name not in {s.name for s in b.definition.steps}:
        b.note(f"{action} {name} by {who}: saga {b.state.saga_type} has no step {name!r}")
        return
    if action == "retry":
        if b.state.status != "parked":
            b.note(f"retry by {who}: nothing to do, saga is {b.state.status}")
            return
        waiting = forward.waiting_to_start(b)
        if waiting:
            # Parked past the pivot: the saga goes forward, its steps start again.
            b.note(f"retry by {who}: starting {', '.join(s.name for s in waiting)} again")
            for step in waiting:
                # One more attempt each: failing again parks again.
                b.cancel(TimerKey(STEP_RETRY, step.name))
                forward.start_again(b, step)
            return
        if not any(b.step(s.name).status == "compensation_failed" for s in b.definition.steps):
            b.note(f"retry by {who}: nothing to retry ({b.state.reason})")
            return
        b.state = evolve(b.state, status="compensating")
        b.note(f"retry by {who}")
        for step in b.definition.steps:
            if b.step(step.name).status == "compensation_failed":
                b.update(step.name, status="completed", compensation_attempts=0)
        compensate.advance(b)
    elif action == "skip":
        step = b.definition.step(name)
        if b.step(name).status not in (
            "compensation_failed",
            "compensating",
            "completed",
            "timed_out",
            "failed",
        ):
            b.note(f"skip {name} by {who}: nothing to do, step is {b.step(name).status}")
            return
        after = _started_by_completion_of(b, step)
        if b.definition.forward_only(step) and after:
            b.note(
                f"skip {name} by {who} refused: {', '.join(after)} start(s) from its"
                " completion; retry it, or resolve the saga"
            )
            return
        b.update(name, status="skipped", error=f"skipped by {who}")
        b.cancel(
            TimerKey(COMPENSATION_TIMEOUT, name),
            TimerKey(COMPENSATION_RETRY, name),
            TimerKey(STEP_RETRY, name),
        )
        b.note(f"{step.name} skipped by {who}")
        if b.definition.forward_only(step) and b.state.status in ("parked", "running"):
            # Counted done: the saga goes forward without it, if nothing waits for it.
            b.state = evolve(b.state, status="running", reason=None)
            branches.maybe_complete(b)
            return
        if b.state.status == "parked":
            b.state = evolve(b.state, status="compensating")
        if b.state.status == "compensating":
            compensate.advance(b)
    elif action in ("approve", "reject"):
        step = b.definition.step(name)
        if step.approval is None or b.step(name).status != "running":
            b.note(f"{action} {name} by {who}: nothing to do, step is {b.step(name).status}")
            return
        approvals.decide_task(
            b,
            step,
            approved=action == "approve",
            by=incoming.actor or "unknown",
            reason=incoming.reason,
        )
    elif action == "cancel":
        cancel.request(b, by=incoming.actor or "unknown", reason=incoming.reason, announce=False)
    elif action == "resolve":
        if b.state.finished:
            # Its outcome is known and announced: a resolve would rewrite it.
            b.note(f"resolve by {who}: nothing to do, saga is {b.state.status} already")
            return
        b.state = evolve(b.state, status="resolved", finished_at=b.now, reason=f"resolved by {who}")
        b.cancel(TimerKey(DEADLINE))
        for step in b.definition.steps:
            b.cancel(
                TimerKey(STEP_TIMEOUT, step.name),
                TimerKey(STEP_RETRY, step.name),
                TimerKey(COMPENSATION_TIMEOUT, step.name),
                TimerKey(COMPENSATION_RETRY, step.name),
            )
        b.note(f"resolved by {who}")
    else:
        b.note(f"unknown operator action {incoming.type!r}")


def _started_by_completion_of(b: Builder, step: StepDefinition) -> list[str]:
    """Steps that only ``step``'s completion (or a join waiting for it) starts."""
    completions = {m.message_type for m in step.completed_by}
    joins = {j.event.message_type for j in b.definition.joins if step.name in j.after}
    return [
        s.name
        for s in b.definition.steps
        if {m.message_type for m in s.started_by} & (completions | joins)
    ]
