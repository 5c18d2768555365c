"""A saga definition as text (``saga definition show``) and as a Mermaid flowchart."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from saga.messages.base import Message

if TYPE_CHECKING:
    from saga.definition.saga import SagaDefinition


def describe(d: SagaDefinition) -> str:
    """The definition as plain text."""

    def names(models: Iterable[type[Message]]) -> str:
        return ", ".join(m.message_type for m in models) or "-"

    lines = [f"saga {d.name}" + (f": {d.description}" if d.description else "")]
    lines.append(f"  starts with  {d.starts_with.message_type}")
    lines.append(f"  ends with    {d.end.message_type}")
    if d.deadline:
        lines.append(f"  deadline     {d.deadline}")
    for number, s in enumerate(d.steps, 1):
        lines.append(f"  {number}. {s.name} ({s.service})")
        lines.append(f"       started by    {names(s.started_by)}")
        lines.append(f"       completed by  {names(s.completed_by)}")
        lines.append(f"       failed by     {names(s.failed_by)}")
        if s.approval is not None:
            a = s.approval
            lines.append(
                f"       approval      by {' > '.join(a.assignees)}, SLA {a.sla} each,"
                f" deadline {a.deadline}"
            )
        elif d.pivot is not None and s.name == d.pivot.name:
            lines.append("       pivot         (cannot be undone: the saga goes forward after it)")
        elif s.irreversible:
            lines.append("       irreversible  (after the pivot: retried, never compensated)")
        else:
            assert s.compensation is not None
            lines.append(
                f"       compensation  {s.compensation.message_type} -> "
                f"{names(s.compensated_by)} "
                f"(up to {s.compensation_retry.maximum_attempts or 'unlimited'} tries)"
            )
        if s.reply_timeout:
            lines.append(f"       reply timeout {s.reply_timeout}")
            rule = d.timeout_rule(s)
            if rule != "compensate":
                undo = rule if isinstance(rule, str) else rule.message_type
                lines.append(f"       on timeout    {undo}")
        if s.optional:
            lines.append("       optional      (its failure does not fail the saga)")
        if s.alternative:
            lines.append(f"       on failure    try {s.alternative} before compensating")
    for join in d.joins:
        lines.append(f"  join {join.event.message_type} after {', '.join(join.after)}")
    if d.version != 1:
        lines.append(f"  version {d.version}")
    return "\n".join(lines)


def mermaid(d: SagaDefinition) -> str:
    """The definition as a Mermaid flowchart: forward path and compensations."""
    lines = ["flowchart LR", f"  start([{d.starts_with.message_type}])"]
    previous = "start"
    for s in d.steps:
        label = f"{s.name}<br/>{s.service}" + ("<br/>irreversible" if s.irreversible else "")
        lines.append(f"  {s.name}[{label}]")
        trigger = ", ".join(m.__name__ for m in s.started_by)
        lines.append(f"  {previous} -->|{trigger}| {s.name}")
        if s.compensation is not None:
            lines.append(f"  undo_{s.name}[/{s.compensation.__name__}/]")
            lines.append(f"  {s.name} -.->|on failure| undo_{s.name}")
        previous = s.name
    lines.append(f"  done([{d.end.message_type}])")
    lines.append(f"  {previous} -->|{d.end.__name__}| done")
    return "\n".join(lines)
