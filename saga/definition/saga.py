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

Beyond a chain of steps:

* **Parallel branches**: several steps started by the same event run at once
  (fan-out); a :class:`Join` names the steps to wait for and the event the
  coordinator publishes once all of them completed, which starts the next step.
* **Human approval**: a step with an :class:`Approval` is run by the coordinator
  itself: it opens a task for the first assignee, escalates on each SLA breach,
  and rejects at the deadline (the saga compensates).
* **Recovery**: ``alternative`` names a step the coordinator starts (by sending
  its command) when this one fails, before compensating anything; an
  ``optional`` step's failure does not fail the saga.
* **Orchestration**: with ``mode="orchestration"`` the coordinator sends each
  step's trigger to the step's service (its commands topic) instead of the
  service reacting to the events of others; the handlers are the same.
* **Versions**: ``version`` tells definitions of the same name apart; a saga
  keeps the version it started with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from saga.messages.base import Command, Event, Message
from saga.messages.steps import CompensationFailed, StepFailed
from saga.messages.topics import COORDINATOR_OWNER, owner_of
from saga.resilience.retry import RetryPolicy

#: Coordinator-level retries of a compensation that reported failure.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=5,
)


SagaMode = Literal["choreography", "orchestration"]


def required_fields(model: type[Message]) -> list[str]:
    """Fields of ``model`` that a message cannot be built without."""
    return [name for name, info in model.model_fields.items() if info.is_required()]


def _unfillable(where: str, model: type[Message], data_fields: set[str]) -> list[str]:
    """Required fields of ``model`` that no event of the saga carries."""
    return [
        f"{where}: field {name!r} of {model.message_type!r} cannot be filled from saga data"
        for name in required_fields(model)
        if name not in data_fields
    ]


class DefinitionError(ValueError):
    """A saga definition is inconsistent; the message lists every problem."""


@dataclass(frozen=True)
class Approval:
    """A person decides: the coordinator opens a task when the step starts.

    The first of ``assignees`` gets the task; each time ``sla`` passes without a
    decision it is reassigned to the next one and an escalation event is
    published (``saga.TaskEscalated``). At ``deadline`` (from the start) the
    task is rejected and the saga compensates.
    """

    assignees: tuple[str, ...]
    sla: timedelta
    deadline: timedelta


@dataclass(frozen=True)
class Join:
    """``event`` is published (on ``saga.events``) once every step of ``after`` completed.

    Its fields are filled from the data of the saga's completed steps.
    """

    event: type[Event]
    after: tuple[str, ...]


@dataclass(frozen=True)
class StepDefinition:
    name: str
    service: str
    #: Events that start it; or, for an alternative step, the one command that does.
    started_by: tuple[type[Message], ...]
    completed_by: tuple[type[Event], ...]
    failed_by: tuple[type[Event], ...] = ()
    compensation: type[Command] | None = None
    compensated_by: tuple[type[Event], ...] = ()
    timeout: timedelta | None = None
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    irreversible: bool = False
    #: Its failure (or timeout) does not fail the saga.
    optional: bool = False
    #: When it fails, start this step (by its command) before compensating anything.
    alternative: str | None = None
    #: Run by the coordinator as a human task (service ``"saga"``, no compensation).
    approval: Approval | None = None

    @property
    def needs_compensation(self) -> bool:
        return not self.irreversible and self.approval is None

    def fields_for_compensation(self) -> list[str]:
        """Required fields of the compensation command (filled from saga data)."""
        if self.compensation is None:
            return []
        return required_fields(self.compensation)


@dataclass(frozen=True)
class SagaDefinition:
    name: str
    starts_with: type[Event]
    steps: tuple[StepDefinition, ...]
    ends_with: type[Event]
    deadline: timedelta | None = None
    description: str = ""
    joins: tuple[Join, ...] = ()
    version: int = 1
    mode: SagaMode = "choreography"
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
        types |= {j.event.message_type for j in self.joins}
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
        for join in self.joins:
            found[join.event.message_type] = join.event
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
        produced |= {j.event.message_type for j in self.joins}
        alternatives = {s.alternative for s in self.steps if s.alternative}
        found += self._recovery_problems(names, alternatives)
        roles: dict[str, str] = {}
        for s in self.steps:
            where = f"step {s.name!r}"
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

    def _recovery_problems(self, names: list[str], alternatives: set[str]) -> list[str]:
        """Problems of joins, approvals, alternatives and optional steps."""
        found: list[str] = []
        data_fields = set(self.starts_with.model_fields)
        for s in self.steps:
            for model in (*s.completed_by, *s.started_by):
                if model.kind == "event":
                    data_fields |= set(model.model_fields)
        for join in self.joins:
            where = f"join {join.event.message_type!r}"
            if owner_of(join.event.message_type) != COORDINATOR_OWNER:
                found.append(f"{where}: a join event is published on saga.events: name it saga.*")
            for name in join.after:
                if name not in names:
                    found.append(f"{where} waits for step {name!r}, which does not exist")
            if len(join.after) < 2:
                found.append(f"{where} must wait for at least two steps")
            if not any(join.event in s.started_by for s in self.steps):
                found.append(f"{where} starts no step")
            found += _unfillable(where, join.event, data_fields)
        for s in self.steps:
            where = f"step {s.name!r}"
            if s.alternative is not None:
                if s.alternative not in names or s.alternative == s.name:
                    found.append(f"{where}: alternative {s.alternative!r} is not another step")
                else:
                    alternative = self.step(s.alternative)
                    commands = [m for m in alternative.started_by if m.kind == "command"]
                    if len(commands) != 1 or len(alternative.started_by) != 1:
                        found.append(
                            f"{where}: alternative {s.alternative!r} must be started by one "
                            "command of its service (the coordinator sends it)"
                        )
                    for command in commands:
                        found += _unfillable(f"alternative {s.alternative!r}", command, data_fields)
            if s.approval is not None:
                a = s.approval
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
            if s.optional:
                for other in self.steps:
                    if other.started_by and set(other.started_by) <= set(s.completed_by):
                        found.append(
                            f"step {other.name!r} is started only by optional step {s.name!r}:"
                            " it would never start when that one fails"
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
            if s.approval is not None:
                a = s.approval
                lines.append(
                    f"       approval      by {' > '.join(a.assignees)}, SLA {a.sla} each,"
                    f" deadline {a.deadline}"
                )
            elif s.irreversible:
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
            if s.optional:
                lines.append("       optional      (its failure does not fail the saga)")
            if s.alternative:
                lines.append(f"       on failure    try {s.alternative} before compensating")
        for join in self.joins:
            lines.append(f"  join {join.event.message_type} after {', '.join(join.after)}")
        if self.mode != "choreography" or self.version != 1:
            lines.append(f"  mode {self.mode}, version {self.version}")
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
