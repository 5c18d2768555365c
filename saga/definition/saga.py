"""Saga definitions: declarative data the coordinator executes, read in the order it runs.

A definition lists its steps in the order they run. Each step binds a
:class:`~saga.definition.contract.StepContract` (its trigger, completion,
failure, compensation command and the event confirming it) and adds what only
the saga decides: how long the coordinator waits for the step's answer
(``reply_timeout``), how its compensation is retried, and what a timeout means
when the step's outcome is unknown (``on_timeout``)::

    SIGNUP = SagaDefinition(
        "signup",
        starts_with=SignupRequested,
        steps=[
            Step("account", CREATE_ACCOUNT, reply_timeout=timedelta(seconds=10)),
            Step("welcome", SEND_WELCOME, irreversible=True),  # a sent mail stays sent
        ],
    )

A step's trigger defaults to the previous step's completion (the first step's
to the start event); the saga ends with the last step's completion unless
``ends_with`` says otherwise. A step that cannot be undone is marked
``irreversible``.

Compensation commands are built from data the saga saw: each field is taken
from the step's completion event or its trigger, so a command can carry the id
the step created (``charge_id``). When the step
timed out there is no completion: ``on_timeout`` says how it is undone then
(``"compensate"``: the compensation built from what the saga has; a command
type: that command instead; ``"park"``: an operator decides). The checks of
:mod:`saga.definition.check` run at start-up and say what is missing in words.

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
* **Versions**: ``version`` tells definitions of the same name apart; a saga
  keeps the version it started with.
* **Cancellation**: ``cancelled_by`` names the event with which whoever started a
  saga cancels it; its completed steps are compensated in reverse order. Once the
  pivot (the first step that cannot be undone) started, a cancel is refused.
* **Compensation order**: completed steps are undone one at a time, latest
  completion first (``compensation="reverse"``, the default: each undo may rely on
  the ones after it being undone already). ``compensation="parallel"`` sends every
  compensation at once and waits for all of them: for undos that do not depend on
  each other, the saga is compensated in one round trip instead of one per step.

Whether services react to each other's events (choreography) or the coordinator
sends each step its trigger (orchestration) is a setting of the whole system,
``SAGA_MODE``, since every service must know it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field, replace
from datetime import timedelta
from typing import Literal

from saga.definition.contract import StepContract
from saga.errors import ConfigurationError
from saga.messages.base import Command, Event, Message
from saga.messages.lifecycle import CancelRefused, CancelRequested
from saga.messages.steps import CompensationFailed, StepFailed
from saga.messages.topics import owner_of
from saga.resilience.retry import RetryPolicy

#: How the coordinator retries a compensation its service reported failed
#: (``saga.CompensationFailed``): the one place compensations are retried. The
#: service attempts each compensation command once; the coordinator sends it
#: again after the delay, durably (a timer row), and parks the saga when
#: attempts run out.
COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=10,
)

SagaMode = Literal["choreography", "orchestration"]

#: How a failed saga's completed steps are undone: one at a time, latest completion
#: first (``"reverse"``), or all at once (``"parallel"``).
CompensationOrder = Literal["reverse", "parallel"]

#: How the coordinator starts again a step that must go forward (the pivot whose
#: ``on_timeout`` is ``"retry"``, a step after the pivot that failed or timed out):
#: the step's trigger sent to its service again after the delay, durably (a timer
#: row); the saga parks for an operator when attempts run out.
FORWARD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=10,
)

#: What a step's timeout means when its outcome is unknown: compensate it with
#: what the saga knows, send this command instead, park the saga for an
#: operator, or start the step again (``"retry"``: for a step that must go forward).
#: ``None``: by the step's place in the saga (see :class:`StepDefinition`).
OnTimeout = Literal["compensate", "park", "retry"] | type[Command]


def required_fields(model: type[Message]) -> list[str]:
    """Fields of ``model`` that a message cannot be built without."""
    return [name for name, info in model.model_fields.items() if info.is_required()]


class DefinitionError(ConfigurationError, ValueError):
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
    """One step of a saga: its contract, and what the saga decides about it.

    ``StepDefinition("charge", CHARGE, reply_timeout=timedelta(seconds=30))`` takes
    the messages from the contract; without a contract they are given one by one
    (``completed_by=(...)``, ...), as for an approval run by the coordinator.
    """

    name: str
    contract: InitVar[StepContract | None] = None
    #: The service that runs it; by default the owner of its completion.
    service: str = ""
    #: Events that start it; or, for an alternative step, the one command that does.
    #: By default the previous step's completion (the start event for the first).
    started_by: tuple[type[Message], ...] = ()
    completed_by: tuple[type[Event], ...] = ()
    failed_by: tuple[type[Event], ...] = ()
    compensation: type[Command] | None = None
    compensated_by: tuple[type[Event], ...] = ()
    #: How long the coordinator waits for the step's answer before it acts (``on_timeout``).
    reply_timeout: timedelta | None = None
    #: When the reply timeout passes with the outcome unknown. By default a step that
    #: can be undone is compensated; the pivot parks the saga (it may have run, and it
    #: cannot be undone); a step after the pivot is started again (``retry``).
    on_timeout: OnTimeout | None = None
    compensation_retry: RetryPolicy = COMPENSATION_RETRY
    #: How a step that must go forward is started again (see ``FORWARD_RETRY``).
    retry: RetryPolicy = FORWARD_RETRY
    #: It cannot be undone (its contract has no compensation). The first such step is
    #: the saga's pivot; its service starts it only on the coordinator's command, sent
    #: once the coordinator has checked that the saga still goes forward.
    irreversible: bool = False
    #: Its failure (or timeout) does not fail the saga.
    optional: bool = False
    #: When it fails, start this step (by its command) before compensating anything.
    alternative: str | None = None
    #: Run by the coordinator as a human task (service ``"saga"``, no compensation).
    approval: Approval | None = None
    #: Set when built from a contract (which its service binds too); not given by hand.
    from_contract: bool = field(default=False, repr=False)

    def __post_init__(self, contract: StepContract | None) -> None:
        if contract is not None:
            object.__setattr__(self, "from_contract", True)
            given = {
                "started_by": (contract.trigger,) if contract.trigger is not None else (),
                "completed_by": (contract.completion,),
                "failed_by": (contract.failure,) if contract.failure is not None else (),
                "compensated_by": (
                    (contract.compensated,) if contract.compensated is not None else ()
                ),
            }
            for name, value in given.items():
                if not getattr(self, name):
                    object.__setattr__(self, name, value)
            if self.irreversible and contract.compensation is not None:
                raise DefinitionError(
                    f"step {self.name!r} is marked irreversible, but its contract has a"
                    f" compensation ({contract.compensation.__name__}), so its service would"
                    " start it from its trigger event: give it a contract without one"
                )
            if self.compensation is None:
                object.__setattr__(self, "compensation", contract.compensation)
            if not contract.reversible and self.approval is None:
                # The contract says it: nothing undoes it (its service knows it too).
                object.__setattr__(self, "irreversible", True)
        if not self.service and self.completed_by:
            object.__setattr__(self, "service", owner_of(self.completed_by[0].message_type))

    @property
    def needs_compensation(self) -> bool:
        return not self.irreversible and self.approval is None

    @property
    def started_by_coordinator(self) -> bool:
        """Its service runs it on the coordinator's command only, in choreography too:
        a step that cannot be undone must not start for a saga that no longer goes
        forward (compensating, cancelled, finished)."""
        return self.irreversible and self.approval is None

    def fields_for_compensation(self) -> list[str]:
        """Required fields of the compensation command (filled from saga data)."""
        if self.compensation is None:
            return []
        return required_fields(self.compensation)


#: The short name a definition is written with: ``Step("charge", CHARGE, ...)``.
Step = StepDefinition


@dataclass(frozen=True)
class SagaDefinition:
    """A saga: its start event, its steps in the order they run, its end."""

    name: str
    starts_with: type[Event]
    steps: Sequence[StepDefinition]
    #: The event that completes the saga; by default the last step's completion.
    ends_with: type[Event] | None = None
    deadline: timedelta | None = None
    description: str = ""
    joins: tuple[Join, ...] = ()
    version: int = 1
    #: The event (a :class:`~saga.messages.lifecycle.CancelRequested`) with which
    #: whoever started a saga asks to cancel it; operators cancel with ``saga cancel``.
    cancelled_by: type[CancelRequested] | None = None
    #: Fields of the start event a saga is found by (its business keys), e.g.
    #: ``("order_id", "customer_id")``: the console and ``saga list --key`` search them.
    search: tuple[str, ...] = ()
    #: ``"reverse"``: completed steps undone one at a time, latest completion first;
    #: ``"parallel"``: every compensation sent at once (undos independent of each other).
    compensation: CompensationOrder = "reverse"
    _by_name: dict[str, StepDefinition] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        steps: list[StepDefinition] = []
        previous: tuple[type[Message], ...] = (self.starts_with,)
        for step in self.steps:
            if not step.started_by:
                step = replace(step, started_by=previous)
            steps.append(step)
            if any(m.kind == "command" for m in step.started_by):
                # An alternative, run instead of the step before it: what follows is
                # started by whichever of the two completed.
                previous = (*previous, *step.completed_by)
            else:
                previous = step.completed_by or previous
        object.__setattr__(self, "steps", tuple(steps))
        if self.ends_with is None and steps and steps[-1].completed_by:
            object.__setattr__(self, "ends_with", steps[-1].completed_by[0])
        object.__setattr__(self, "_by_name", {s.name: s for s in steps})
        object.__setattr__(self, "search", tuple(self.search))
        if self.compensation not in ("reverse", "parallel"):
            raise DefinitionError(
                f"saga {self.name!r}: compensation={self.compensation!r}, not 'reverse' or"
                " 'parallel'"
            )
        unknown = [f for f in self.search if f not in self.starts_with.model_fields]
        if unknown:
            raise DefinitionError(
                f"saga {self.name!r}: search names {', '.join(unknown)}, not fields of"
                f" {self.starts_with.__name__}"
            )

    @property
    def end(self) -> type[Event]:
        """The terminal event (``ends_with``, filled in from the last step)."""
        if self.ends_with is None:
            raise DefinitionError(f"saga {self.name!r} has no step to end with")
        return self.ends_with

    def step(self, name: str) -> StepDefinition:
        return self._by_name[name]

    @property
    def pivot(self) -> StepDefinition | None:
        """The first step that cannot be undone: once it started, the saga only goes
        forward (the steps after it are retried, never compensated; a cancel is refused)."""
        return next((s for s in self.steps if s.started_by_coordinator), None)

    def forward_only(self, step: StepDefinition) -> bool:
        """``step`` is the pivot or comes after it: it is never compensated."""
        pivot = self.pivot
        if pivot is None:
            return False
        names = [s.name for s in self.steps]
        return names.index(step.name) >= names.index(pivot.name)

    def timeout_rule(self, step: StepDefinition) -> OnTimeout:
        """What ``step``'s timeout does: its ``on_timeout``, or by its place in the saga.

        Before the pivot a timeout is compensated; the pivot's outcome is not guessed
        (the saga parks for an operator); after it the saga only goes forward (the
        step is started again)."""
        if step.on_timeout is not None:
            return step.on_timeout
        if self.after_pivot(step):
            return "retry"
        return "park" if step.started_by_coordinator else "compensate"

    def after_pivot(self, step: StepDefinition) -> bool:
        """``step`` comes after the pivot: it is retried until it completes."""
        pivot = self.pivot
        return self.forward_only(step) and pivot is not None and step.name != pivot.name

    @property
    def services(self) -> list[str]:
        return list(dict.fromkeys(s.service for s in self.steps))

    def message_types(self) -> set[str]:
        """Every event type this saga reacts to."""
        types = {self.starts_with.message_type, self.end.message_type}
        for s in self.steps:
            for model in (*s.started_by, *s.completed_by, *s.failed_by, *s.compensated_by):
                types.add(model.message_type)
        types |= {j.event.message_type for j in self.joins}
        if self.cancelled_by is not None:
            types.add(self.cancelled_by.message_type)
        return types

    def models(self) -> list[type[Message]]:
        found: dict[str, type[Message]] = {
            self.starts_with.message_type: self.starts_with,
            self.end.message_type: self.end,
        }
        for s in self.steps:
            for model in (*s.started_by, *s.completed_by, *s.failed_by, *s.compensated_by):
                found[model.message_type] = model
            for command in (s.compensation, s.on_timeout):
                if isinstance(command, type):
                    found[command.message_type] = command
        for join in self.joins:
            found[join.event.message_type] = join.event
        if self.cancelled_by is not None:
            found[self.cancelled_by.message_type] = self.cancelled_by
            found[CancelRefused.message_type] = CancelRefused
        found[StepFailed.message_type] = StepFailed
        found[CompensationFailed.message_type] = CompensationFailed
        return list(found.values())

    def problems(self) -> list[str]:
        """Everything wrong with this definition (empty when it is sound)."""
        from saga.definition.check import problems

        return problems(self)

    def validate(self) -> SagaDefinition:
        """Raise :class:`DefinitionError` listing every problem; return self if sound."""
        found = self.problems()
        if found:
            raise DefinitionError(
                f"saga {self.name!r} is not valid:\n" + "\n".join(f"  - {p}" for p in found)
            )
        return self

    def describe(self) -> str:
        """The definition as plain text."""
        from saga.definition.render import describe

        return describe(self)

    def mermaid(self) -> str:
        """The definition as a Mermaid flowchart: forward path and compensations."""
        from saga.definition.render import mermaid

        return mermaid(self)
