"""Saga definitions: declarative data the coordinator executes.

>>> from contracts.order_saga import ORDER_SAGA
>>> [step.name for step in ORDER_SAGA.steps]
['reserve', 'charge', 'ship']

A step names its service, the event(s) that start it, the event(s) that
complete or fail it, its compensation command and the event(s) confirming the
compensation, an optional timeout, and the retry policy of its compensation.
A pivot step that cannot be undone is marked ``irreversible``. The saga names
its start event, its terminal event and an optional overall deadline.

Compensation commands are built from data the saga saw: each field of the
command is taken from the step's completion event (or, when the step timed out
with no answer, from the event that started it). :meth:`SagaDefinition.problems`
checks all of this at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from contracts.messages import Command, Event, Message
from contracts.steps import CompensationFailed, StepFailed
from contracts.topics import owner_of
from saga.retry import RetryPolicy

#: Coordinator-level retries of a compensation that reported failure.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=5,
)


class DefinitionError(ValueError):
    """A saga definition is inconsistent; the message lists every problem."""


@dataclass(frozen=True)
class StepDefinition:
    name: str
    service: str
    started_by: tuple[type[Event], ...]
    completed_by: tuple[type[Event], ...]
    failed_by: tuple[type[Event], ...] = ()
    compensation: type[Command] | None = None
    compensated_by: tuple[type[Event], ...] = ()
    timeout: timedelta | None = None
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    irreversible: bool = False

    def fields_for_compensation(self) -> list[str]:
        """Required fields of the compensation command (filled from saga data)."""
        if self.compensation is None:
            return []
        return [n for n, f in self.compensation.model_fields.items() if f.is_required()]


@dataclass(frozen=True)
class SagaDefinition:
    name: str
    starts_with: type[Event]
    steps: tuple[StepDefinition, ...]
    ends_with: type[Event]
    deadline: timedelta | None = None
    description: str = ""
    _by_name: dict[str, StepDefinition] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.steps})

    def step(self, name: str) -> StepDefinition:
        return self._by_name[name]

    @property
    def services(self) -> list[str]:
        return list(dict.fromkeys(s.service for s in self.steps))

    def message_types(self) -> set[str]:
        """Every event type this saga reacts to."""
        types = {self.starts_with.message_type, self.ends_with.message_type}
        for s in self.steps:
            for model in (*s.started_by, *s.completed_by, *s.failed_by, *s.compensated_by):
                types.add(model.message_type)
        return types

    def models(self) -> list[type[Message]]:
        found: dict[str, type[Message]] = {
            self.starts_with.message_type: self.starts_with,
            self.ends_with.message_type: self.ends_with,
        }
        for s in self.steps:
            for model in (*s.started_by, *s.completed_by, *s.failed_by, *s.compensated_by):
                found[model.message_type] = model
            if s.compensation is not None:
                found[s.compensation.message_type] = s.compensation
        found[StepFailed.message_type] = StepFailed
        found[CompensationFailed.message_type] = CompensationFailed
        return list(found.values())

    def problems(self) -> list[str]:
        """Everything wrong with this definition (empty when it is sound)."""
        found: list[str] = []
        names = [s.name for s in self.steps]
        if not self.steps:
            found.append("a saga needs at least one step")
        for name in {n for n in names if names.count(n) > 1}:
            found.append(f"step name {name!r} is used twice")
        produced = {self.starts_with.message_type}
        for s in self.steps:
            produced |= {m.message_type for m in s.completed_by}
        roles: dict[str, str] = {}
        for s in self.steps:
            where = f"step {s.name!r}"
            if not s.started_by:
                found.append(f"{where} has no event that starts it")
            if not s.completed_by:
                found.append(f"{where} has no event that completes it")
            for model in s.started_by:
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
            if s.compensation is None and not s.irreversible:
                found.append(
                    f"{where} can complete but has no compensation and is not marked irreversible"
                )
            if s.compensation is not None:
                if s.irreversible:
                    found.append(f"{where} is irreversible but names a compensation")
                if owner_of(s.compensation.message_type) != s.service:
                    found.append(
                        f"{where}: compensation {s.compensation.message_type!r} is not a "
                        f"command of service {s.service!r}"
                    )
                if not s.compensated_by:
                    found.append(f"{where} has no event that confirms its compensation")
                for name in s.fields_for_compensation():
                    for model in (*s.completed_by, *s.started_by):
                        if name not in model.model_fields:
                            found.append(
                                f"{where}: compensation field {name!r} cannot be filled: "
                                f"{model.message_type!r} has no such field"
                            )
        if self.ends_with.message_type not in {
            m.message_type for s in self.steps for m in s.completed_by
        }:
            found.append(f"terminal event {self.ends_with.message_type!r} completes no step")
        if self.steps and self.starts_with not in self.steps[0].started_by:
            found.append(
                f"the first step {self.steps[0].name!r} is not started by the start event "
                f"{self.starts_with.message_type!r}"
            )
        return found

    def validate(self) -> SagaDefinition:
        """Raise :class:`DefinitionError` listing every problem; return self if sound."""
        problems = self.problems()
        if problems:
            raise DefinitionError(
                f"saga {self.name!r} is not valid:\n" + "\n".join(f"  - {p}" for p in problems)
            )
        return self

    # --- presentation -----------------------------------------------------------

    def describe(self) -> str:
        """The definition as plain text."""

        def names(models: Iterable[type[Message]]) -> str:
            return ", ".join(m.message_type for m in models) or "-"

        lines = [f"saga {self.name}" + (f": {self.description}" if self.description else "")]
        lines.append(f"  starts with  {self.starts_with.message_type}")
        lines.append(f"  ends with    {self.ends_with.message_type}")
        if self.deadline:
            lines.append(f"  deadline     {self.deadline}")
        for number, s in enumerate(self.steps, 1):
            lines.append(f"  {number}. {s.name} ({s.service})")
            lines.append(f"       started by    {names(s.started_by)}")
            lines.append(f"       completed by  {names(s.completed_by)}")
            lines.append(f"       failed by     {names(s.failed_by)}")
            if s.irreversible:
                lines.append("       irreversible  (pivot: never compensated)")
            else:
                assert s.compensation is not None
                lines.append(
                    f"       compensation  {s.compensation.message_type} -> "
                    f"{names(s.compensated_by)} "
                    f"(up to {s.compensation_retry.maximum_attempts or 'unlimited'} tries)"
                )
            if s.timeout:
                lines.append(f"       timeout       {s.timeout}")
        return "\n".join(lines)

    def mermaid(self) -> str:
        """The definition as a Mermaid flowchart: forward path and compensations."""
        lines = ["flowchart LR", f"  start([{self.starts_with.message_type}])"]
        previous = "start"
        for s in self.steps:
            label = f"{s.name}<br/>{s.service}" + ("<br/>irreversible" if s.irreversible else "")
            lines.append(f"  {s.name}[{label}]")
            trigger = ", ".join(m.__name__ for m in s.started_by)
            lines.append(f"  {previous} -->|{trigger}| {s.name}")
            if s.compensation is not None:
                lines.append(f"  undo_{s.name}[/{s.compensation.__name__}/]")
                lines.append(f"  {s.name} -.->|on failure| undo_{s.name}")
            previous = s.name
        lines.append(f"  done([{self.ends_with.message_type}])")
        lines.append(f"  {previous} -->|{self.ends_with.__name__}| done")
        return "\n".join(lines)
