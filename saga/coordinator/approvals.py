"""Approval steps: a task opened for the first assignee, escalated on each SLA breach,
rejected at its deadline, or decided by an operator (``approve:<step>``, ``reject:<step>``).
"""

from __future__ import annotations

from saga.coordinator import branches, correlate
from saga.coordinator.decision import (
    Builder,
    EventToPublish,
    TaskChange,
    TaskChangeKind,
    fill,
    task_id,
)
from saga.coordinator.timer_keys import APPROVAL_DEADLINE, APPROVAL_SLA, TimerKey
from saga.definition.saga import StepDefinition
from saga.messages.lifecycle import TaskEscalated, TaskOpened


def open_task(b: Builder, step: StepDefinition) -> None:
    assert step.approval is not None
    approval = step.approval
    assignee = approval.assignees[0]
    sla_due, deadline = b.now + approval.sla, b.now + approval.deadline
    b.update(step.name, assignee=assignee, escalations=0)
    b.set_timer(TimerKey(APPROVAL_SLA, step.name), sla_due)
    b.set_timer(TimerKey(APPROVAL_DEADLINE, step.name), deadline)
    b.tasks.append(
        TaskChange(
            task_id(b.state.saga_id, step.name),
            step.name,
            "opened",
            assignee,
            sla_due=sla_due,
            deadline=deadline,
        )
    )
    b.events.append(
        EventToPublish(
            TaskOpened.message_type,
            {
                "task_id": task_id(b.state.saga_id, step.name),
                "step": step.name,
                "assignee": assignee,
                "sla_due": sla_due.isoformat(),
                "deadline": deadline.isoformat(),
            },
            step.name,
        )
    )
    b.note(f"{step.name}: approval task opened for {assignee}")


def escalate(b: Builder, step: StepDefinition) -> None:
    assert step.approval is not None
    assignees = step.approval.assignees
    current = b.step(step.name)
    position = assignees.index(current.assignee) if current.assignee in assignees else 0
    if position + 1 >= len(assignees):
        b.note(f"{step.name}: SLA passed, nobody left to escalate to after {current.assignee}")
        return
    to = assignees[position + 1]
    sla_due = b.now + step.approval.sla
    b.update(step.name, assignee=to, escalations=current.escalations + 1)
    b.set_timer(TimerKey(APPROVAL_SLA, step.name), sla_due)
    tid = task_id(b.state.saga_id, step.name)
    b.tasks.append(TaskChange(tid, step.name, "escalated", to, by="coordinator", sla_due=sla_due))
    b.events.append(
        EventToPublish(
            TaskEscalated.message_type,
            {
                "task_id": tid,
                "step": step.name,
                "from_assignee": current.assignee,
                "to_assignee": to,
                "escalations": current.escalations + 1,
            },
            step.name,
        )
    )
    b.note(f"{step.name}: SLA passed, escalated from {current.assignee} to {to}")


def close_task(
    b: Builder, step: StepDefinition, change: TaskChangeKind, *, by: str, reason: str | None
) -> None:
    b.cancel(TimerKey(APPROVAL_SLA, step.name), TimerKey(APPROVAL_DEADLINE, step.name))
    b.tasks.append(
        TaskChange(
            task_id(b.state.saga_id, step.name),
            step.name,
            change,
            b.step(step.name).assignee,
            by=by,
            reason=reason,
        )
    )


def decide_task(
    b: Builder, step: StepDefinition, *, approved: bool, by: str, reason: str | None
) -> None:
    """Approved, the step completes (its completion event is published); rejected, it
    fails like any step (its failure event is published)."""
    close_task(b, step, "approved" if approved else "rejected", by=by, reason=reason)
    decided = {"task_id": task_id(b.state.saga_id, step.name), "decided_by": by, "reason": reason}
    if approved:
        model = step.completed_by[0]
        b.update(
            step.name,
            status="completed",
            order=b.next_order(),
            finished_at=b.now,
            data={**b.step(step.name).data, **decided},
        )
        b.note(f"{step.name} approved by {by}")
        correlate.publish(b, model.message_type, fill(model, b.data()), step.name)
        branches.check_joins(b)
        branches.maybe_complete(b)
        return
    model = step.failed_by[0]
    why = f"rejected by {by}" + (f": {reason}" if reason else "")
    b.update(step.name, status="failed", finished_at=b.now, error=why)
    b.note(f"{step.name} {why}")
    b.events.append(EventToPublish(model.message_type, fill(model, {**b.data(), **decided})))
    branches.after_failure(b, step, f"approval {step.name} {why}", timed_out=False)
