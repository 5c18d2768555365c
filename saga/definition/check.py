"""The start-up checks of a saga definition: every problem, in words a user understands.

:func:`problems` lists everything wrong with a definition, or nothing: every
trigger is produced by something, every step that completes can be undone or
is marked irreversible, each compensation command can be built from what the
saga will know, and each step says how it is undone when it times out.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from saga.definition.saga import required_fields
from saga.messages.base import Message
from saga.messages.topics import COORDINATOR_OWNER, owner_of

if TYPE_CHECKING:
    from saga.definition.saga import SagaDefinition, StepDefinition


def problems(d: SagaDefinition) -> list[str]:
    """Everything wrong with ``d`` (empty when it is sound)."""
    found: list[str] = []
    names = [s.name for s in d.steps]
    if not d.steps:
        found.append("a saga needs at least one step")
    for name in {n for n in names if names.count(n) > 1}:
        found.append(f"step name {name!r} is used twice")
    produced = {d.starts_with.message_type}
    for s in d.steps:
        produced |= {m.message_type for m in s.completed_by}
    produced |= {j.event.message_type for j in d.joins}
    alternatives = {s.alternative for s in d.steps if s.alternative}
    found += _recovery_problems(d, names, alternatives)
    found += _pivot_order_problems(d)
    roles: dict[str, str] = {}
    for s in d.steps:
        found += _step_problems(d, s, produced, alternatives, roles)
    starter = owner_of(d.starts_with.message_type)
    if d.cancelled_by is not None and owner_of(d.cancelled_by.message_type) != starter:
        found.append(
            f"cancelled_by {d.cancelled_by.message_type!r} must be an event of the service"
            f" that starts the saga ({starter!r}: named {starter}.<Name>): whoever started"
            " a saga cancels it"
        )
    if d.ends_with is None:
        return found
    if d.ends_with.message_type not in {m.message_type for s in d.steps for m in s.completed_by}:
        found.append(f"terminal event {d.ends_with.message_type!r} completes no step")
    if d.steps and d.starts_with not in d.steps[0].started_by:
        found.append(
            f"the first step {d.steps[0].name!r} is not started by the start event "
            f"{d.starts_with.message_type!r}"
        )
    return found


def _step_problems(
    d: SagaDefinition,
    s: StepDefinition,
    produced: set[str],
    alternatives: set[str],
    roles: dict[str, str],
) -> list[str]:
    where = f"step {s.name!r}"
    found: list[str] = []
    if not s.started_by:
        found.append(f"{where} has no event that starts it")
    if not s.completed_by:
        found.append(f"{where} has no event that completes it")
    for model in s.started_by:
        if model.kind == "command":
            if s.name not in alternatives:
                found.append(
                    f"{where} is started by command {model.message_type!r}: only a "
                    "step named as another's alternative is started by a command"
                )
            continue
        if model.message_type not in produced:
            found.append(
                f"{where} is started by {model.message_type!r}, which nothing in "
                f"this saga produces (neither its start event nor a completion)"
            )
    for model in (*s.completed_by, *s.failed_by, *s.compensated_by):
        if owner_of(model.message_type) != s.service:
            found.append(
                f"{where}: {model.message_type!r} is not an event of service "
                f"{s.service!r} (events are named <service>.<Name>)"
            )
    for role, models in (
        ("completes", s.completed_by),
        ("fails", s.failed_by),
        ("confirms the compensation of", s.compensated_by),
    ):
        for model in models:
            key = model.message_type
            if key in roles:
                found.append(f"{key!r} {role} {where} but also {roles[key]}")
            roles[key] = f"{role} {where}"
    if s.compensation is None and s.needs_compensation:
        found.append(f"{where} can complete but has no compensation and is not marked irreversible")
    if s.compensation is not None:
        found += _compensation_problems(d, s)
    on_timeout = d.timeout_rule(s)
    if not (
        on_timeout in ("compensate", "park", "retry")
        or (
            isinstance(on_timeout, type)
            and issubclass(on_timeout, Message)
            and on_timeout.kind == "command"
        )
    ):
        found.append(
            f"{where}: on_timeout is {on_timeout!r}: give 'compensate', 'park', 'retry' or a"
            " command class of the step's service"
        )
    found += _pivot_problems(d, s)
    return found


def _pivot_order_problems(d: SagaDefinition) -> list[str]:
    """Every step runs before the pivot or after it, never beside it, and is listed so.

    Which steps must go forward is read from the list (the pivot and what follows);
    that holds only when the list follows the causal order around the pivot."""
    pivot = d.pivot
    if pivot is None:
        return []
    parents = _parents(d)
    ancestors: set[str] = set()
    todo = [pivot.name]
    while todo:
        for parent in parents[todo.pop()]:
            if parent not in ancestors:
                ancestors.add(parent)
                todo.append(parent)
    descendants = {
        s.name for s in d.steps if pivot.name in _closure(parents, s.name) and s.name != pivot.name
    }
    names = [s.name for s in d.steps]
    at = names.index(pivot.name)
    found: list[str] = []
    for index, name in enumerate(names):
        if name == pivot.name:
            continue
        if name not in ancestors and name not in descendants:
            found.append(
                f"step {name!r} runs beside the pivot {pivot.name!r} (neither before it nor"
                " after it): once the pivot started the saga only goes forward, so a step"
                " that may still fail or be undone cannot run beside it; start it before"
                " the pivot, or from the pivot's completion"
            )
        elif (name in ancestors) != (index < at):
            where = "before" if name in ancestors else "after"
            found.append(f"step {name!r} runs {where} the pivot {pivot.name!r}: list it {where} it")
    return found


def _parents(d: SagaDefinition) -> dict[str, set[str]]:
    """The steps whose completion (or whose join) starts each step; an alternative's
    parent is the step it replaces, and it is a parent of what that step starts."""
    producers: dict[str, set[str]] = {}
    for s in d.steps:
        for model in s.completed_by:
            producers.setdefault(model.message_type, set()).add(s.name)
    for join in d.joins:
        producers.setdefault(join.event.message_type, set()).update(join.after)
    parents: dict[str, set[str]] = {s.name: set() for s in d.steps}
    for s in d.steps:
        for trigger in s.started_by:
            parents[s.name] |= producers.get(trigger.message_type, set()) - {s.name}
        if s.alternative in parents:
            parents[s.alternative].add(s.name)
    for s in d.steps:  # an alternative goes where the step it replaces goes
        if s.alternative in parents:
            for child, children in parents.items():
                if s.name in children and child != s.alternative:
                    children.add(s.alternative)
    return parents


def _closure(parents: dict[str, set[str]], name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        for parent in parents.get(todo.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _pivot_problems(d: SagaDefinition, s: StepDefinition) -> list[str]:
    """A step that cannot be undone, and the steps after it, only go forward."""
    where = f"step {s.name!r}"
    found: list[str] = []
    if s.irreversible and s.approval is None and not s.from_contract:
        found.append(
            f"{where} cannot be undone, so its service must start it only on the"
            " coordinator's command: bind it to a StepContract without a compensation"
            " (the service binds the same contract with service.step)"
        )
    if not d.forward_only(s):
        if s.on_timeout == "retry":
            found.append(
                f"{where}: on_timeout='retry' is for the pivot and the steps after it (they"
                " only go forward); before the pivot a timeout is compensated or parked"
            )
        return found
    pivot = d.pivot
    assert pivot is not None
    if s.approval is not None:
        found.append(
            f"{where} is an approval after the pivot {pivot.name!r}: a rejection could undo"
            " nothing the pivot did; ask for the approval before the pivot"
        )
    rule = d.timeout_rule(s)
    if rule == "compensate" or isinstance(rule, type):
        what = (
            "cannot be undone"
            if s.name == pivot.name
            else f"comes after the pivot {pivot.name!r} and is never compensated"
        )
        found.append(
            f"{where} {what}: when it times out it may have run, so on_timeout must be"
            " 'park' (an operator decides) or 'retry' (started again until it completes),"
            f" not {rule if isinstance(rule, str) else rule.__name__!r}"
        )
    if s.name != pivot.name and (s.optional or s.alternative):
        found.append(
            f"{where} comes after the pivot {pivot.name!r}: it is retried until it completes,"
            " so it can be neither optional nor replaced by an alternative"
        )
    return found


def _compensation_problems(d: SagaDefinition, s: StepDefinition) -> list[str]:
    assert s.compensation is not None
    where = f"step {s.name!r}"
    command = s.compensation
    found: list[str] = []
    if s.irreversible:
        found.append(f"{where} is irreversible but names a compensation")
    if owner_of(command.message_type) != s.service:
        found.append(
            f"{where}: compensation {command.message_type!r} is not a command of service "
            f"{s.service!r}"
        )
    if not s.compensated_by:
        found.append(f"{where} has no event that confirms its compensation")
    trigger = _fields(s.started_by)
    completion = _fields(s.completed_by)
    only_in_completion: list[str] = []
    for name in s.fields_for_compensation():
        if name in completion and name in trigger:
            continue
        if name in completion:
            only_in_completion.append(name)
            continue
        if name not in trigger:
            carriers = ", ".join(m.__name__ for m in (*s.completed_by, *s.started_by))
            found.append(
                f"{where}: {command.__name__} needs {name!r}, which neither its completion nor"
                f" its trigger carries ({carriers})"
            )
    can_time_out = s.reply_timeout is not None or d.deadline is not None
    if only_in_completion and can_time_out and d.timeout_rule(s) == "compensate":
        names = ", ".join(repr(n) for n in only_in_completion)
        triggers = " or ".join(m.__name__ for m in s.started_by) or "its trigger"
        found.append(
            f"{where}: when it times out there is no {s.completed_by[0].__name__}, and"
            f" {command.__name__} needs {names}, which only {s.completed_by[0].__name__}"
            f" carries. Say how to undo it then: on_timeout='park' (an operator decides),"
            f" or on_timeout=<a command of {s.service!r} built from {triggers}>"
        )
    if isinstance(s.on_timeout, type) and s.on_timeout.kind == "command":
        undo = s.on_timeout
        if owner_of(undo.message_type) != s.service:
            found.append(
                f"{where}: on_timeout {undo.message_type!r} is not a command of service "
                f"{s.service!r}"
            )
        for name in required_fields(undo):
            if name not in trigger:
                found.append(
                    f"{where}: on_timeout {undo.__name__} needs {name!r}, which its trigger"
                    " does not carry (a timed-out step has no completion)"
                )
    return found


def _fields(models: tuple[type[Message], ...]) -> set[str]:
    """The fields every one of ``models`` carries (whichever of them arrives)."""
    sets = [set(m.model_fields) for m in models]
    return set.intersection(*sets) if sets else set()


def _unfillable(where: str, model: type[Message], data_fields: set[str]) -> list[str]:
    """Required fields of ``model`` that no event of the saga carries."""
    return [
        f"{where}: field {name!r} of {model.message_type!r} cannot be filled from saga data"
        for name in required_fields(model)
        if name not in data_fields
    ]


def _recovery_problems(d: SagaDefinition, names: list[str], alternatives: set[str]) -> list[str]:
    """Problems of joins, approvals, alternatives and optional steps."""
    found: list[str] = []
    data_fields = set(d.starts_with.model_fields)
    for s in d.steps:
        for model in (*s.completed_by, *s.started_by):
            if model.kind == "event":
                data_fields |= set(model.model_fields)
    for join in d.joins:
        where = f"join {join.event.message_type!r}"
        if owner_of(join.event.message_type) != COORDINATOR_OWNER:
            found.append(f"{where}: a join event is published on saga.events: name it saga.*")
        for name in join.after:
            if name not in names:
                found.append(f"{where} waits for step {name!r}, which does not exist")
        if len(join.after) < 2:
            found.append(f"{where} must wait for at least two steps")
        if not any(join.event in s.started_by for s in d.steps):
            found.append(f"{where} starts no step")
        found += _unfillable(where, join.event, data_fields)
    for s in d.steps:
        where = f"step {s.name!r}"
        if s.alternative is not None:
            if s.alternative not in names or s.alternative == s.name:
                found.append(f"{where}: alternative {s.alternative!r} is not another step")
            else:
                alternative = d.step(s.alternative)
                commands = [m for m in alternative.started_by if m.kind == "command"]
                if len(commands) != 1 or len(alternative.started_by) != 1:
                    found.append(
                        f"{where}: alternative {s.alternative!r} must be started by one "
                        "command of its service (the coordinator sends it)"
                    )
                for command in commands:
                    found += _unfillable(f"alternative {s.alternative!r}", command, data_fields)
        if s.approval is not None:
            found += _approval_problems(s, data_fields)
        if s.optional:
            for other in d.steps:
                if other.started_by and set(other.started_by) <= set(s.completed_by):
                    found.append(
                        f"step {other.name!r} is started only by optional step {s.name!r}:"
                        " it would never start when that one fails"
                    )
    return found


def _approval_problems(s: StepDefinition, data_fields: set[str]) -> list[str]:
    assert s.approval is not None
    where = f"step {s.name!r}"
    a = s.approval
    found: list[str] = []
    if s.service != COORDINATOR_OWNER:
        found.append(f"{where}: an approval step is run by service 'saga'")
    if not a.assignees:
        found.append(f"{where}: an approval needs at least one assignee")
    if a.sla <= timedelta(0) or a.deadline <= timedelta(0):
        found.append(f"{where}: approval SLA and deadline must be positive")
    if not s.failed_by:
        found.append(f"{where}: an approval needs a rejection event (failed_by)")
    if s.compensation is not None or s.irreversible:
        found.append(f"{where}: an approval has nothing to undo (no compensation)")
    for model in (*s.completed_by[:1], *s.failed_by[:1]):
        found += _unfillable(
            f"{where}: {model.message_type!r}",
            model,
            data_fields | {"task_id", "decided_by", "reason"},
        )
    return found
