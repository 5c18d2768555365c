"""What changed between two versions of a saga definition (``saga definition diff``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any

from saga.definition.saga import Approval, Join, SagaDefinition, StepDefinition


def diff(old: SagaDefinition, new: SagaDefinition) -> list[str]:
    """One line per change: ``+`` added, ``-`` removed, ``~`` changed; empty if equal."""
    lines: list[str] = []
    for name in ("name", "version", "starts_with", "ends_with", "deadline"):
        before, after = _show(getattr(old, name)), _show(getattr(new, name))
        if before != after:
            lines.append(f"~ {name}: {before} -> {after}")
    old_steps = {s.name: s for s in old.steps}
    new_steps = {s.name: s for s in new.steps}
    for name in old_steps.keys() - new_steps.keys():
        lines.append(f"- step {name} ({old_steps[name].service})")
    for name in new_steps:
        if name not in old_steps:
            lines.append(f"+ step {name} ({new_steps[name].service})")
            continue
        for field in fields(StepDefinition):
            before = _show(getattr(old_steps[name], field.name))
            after = _show(getattr(new_steps[name], field.name))
            if before != after:
                lines.append(f"~ step {name}: {field.name}: {before} -> {after}")
    if [s.name for s in old.steps if s.name in new_steps] != [
        s.name for s in new.steps if s.name in old_steps
    ]:
        lines.append(f"~ step order: {_names(old.steps)} -> {_names(new.steps)}")
    before_joins, after_joins = {_show(j) for j in old.joins}, {_show(j) for j in new.joins}
    lines += [f"- join {j}" for j in sorted(before_joins - after_joins)]
    lines += [f"+ join {j}" for j in sorted(after_joins - before_joins)]
    return lines


def _names(steps: Iterable[StepDefinition]) -> str:
    return ", ".join(s.name for s in steps)


def _show(value: Any) -> str:
    if isinstance(value, type) and hasattr(value, "message_type"):
        return str(value.message_type)
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    if isinstance(value, Approval):
        return (
            f"approval by {' > '.join(value.assignees)}, SLA {value.sla}, deadline {value.deadline}"
        )
    if isinstance(value, Join):
        return f"{_show(value.event)} after {', '.join(value.after)}"
    return str(value)
