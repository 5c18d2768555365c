"""A decision as plain data: the fact that comes in (:class:`Incoming`), what comes out
(:class:`Decision`), and the :class:`Builder` that the deciding modules add to in turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from saga.coordinator.state import SagaState, StepState, evolve
from saga.coordinator.timer_keys import TimerKey
from saga.definition.saga import SagaDefinition, SagaMode, required_fields
from saga.messages.base import Message

IncomingKind = Literal["event", "timer", "operator"]


@dataclass(frozen=True)
class Incoming:
    """One fact for one saga."""

    kind: IncomingKind
    message_id: str
    #: Event type, timer name (``step-timeout:reserve``, see :class:`TimerKey`), or
    #: operator action.
    type: str
    saga_id: str
    saga_type: str
    at: datetime
    service: str | None = None
    step_hint: str | None = None
    attempt: int = 1
    payload: dict[str, Any] = field(default_factory=dict)
    traceparent: str | None = None
    tracestate: str | None = None
    actor: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class CommandToSend:
    step: str
    message_type: str
    payload: dict[str, Any]
    attempt: int
    #: ``compensate`` undoes the step; ``start`` runs it (orchestration, alternatives).
    purpose: Literal["compensate", "start"] = "compensate"
    #: The service whose commands topic it goes to (default: the type's owner).
    service: str | None = None


@dataclass(frozen=True)
class EventToPublish:
    """An event of the coordinator itself (a join, an approval's outcome, an escalation)."""

    message_type: str
    payload: dict[str, Any]
    step: str | None = None


TaskChangeKind = Literal["opened", "escalated", "approved", "rejected", "cancelled"]


@dataclass(frozen=True)
class TaskChange:
    """What happened to an approval task (kept in ``saga_tasks``, audited in the log)."""

    task_id: str
    step: str
    change: TaskChangeKind
    assignee: str | None
    by: str | None = None
    reason: str | None = None
    sla_due: datetime | None = None
    deadline: datetime | None = None


def task_id(saga_id: str, step: str) -> str:
    return f"{saga_id}/{step}"


@dataclass(frozen=True)
class Timer:
    """A timer to set: ``key`` fires at ``due`` (unless cancelled before)."""

    key: TimerKey
    due: datetime

    @property
    def name(self) -> str:
        """The name it is stored under: ``step-timeout:charge``, ``deadline``."""
        return str(self.key)


@dataclass(frozen=True)
class Decision:
    state: SagaState | None
    commands: list[CommandToSend] = field(default_factory=list)
    set_timers: list[Timer] = field(default_factory=list)
    #: The names of the timers to cancel (``str`` of their :class:`TimerKey`).
    cancel_timers: list[str] = field(default_factory=list)
    #: What happened, for the saga log and the operator.
    notes: list[str] = field(default_factory=list)
    #: False when the fact changed nothing (recorded and counted as ignored).
    applied: bool = True
    events: list[EventToPublish] = field(default_factory=list)
    tasks: list[TaskChange] = field(default_factory=list)
    #: An event of a saga not started yet: no state; keep it for the start event.
    hold: bool = False


class Builder:
    """One decision in the making: the saga's state as it changes, and what to do."""

    def __init__(
        self, state: SagaState, definition: SagaDefinition, now: datetime, mode: SagaMode
    ) -> None:
        self.mode = mode
        self.state = state
        self.definition = definition
        self.now = now
        self.commands: list[CommandToSend] = []
        self.set_timers: list[Timer] = []
        self.cancel_timers: list[str] = []
        self.notes: list[str] = []
        self.events: list[EventToPublish] = []
        self.tasks: list[TaskChange] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def set_timer(self, key: TimerKey, due: datetime) -> None:
        self.set_timers.append(Timer(key, due))

    def cancel(self, *keys: TimerKey) -> None:
        self.cancel_timers.extend(str(key) for key in keys)

    def decision(self, applied: bool = True) -> Decision:
        return Decision(
            self.state,
            self.commands,
            self.set_timers,
            self.cancel_timers,
            self.notes,
            applied,
            self.events,
            self.tasks,
        )

    def data(self) -> dict[str, Any]:
        """What the saga knows: every step's data, latest completion last."""
        merged: dict[str, Any] = {}
        for _, step in sorted(self.state.steps.items(), key=lambda kv: kv[1].order or 0):
            merged.update(step.data)
        return merged

    def step(self, name: str) -> StepState:
        return self.state.steps[name]

    def update(self, name: str, **changes: Any) -> None:
        self.state = self.state.with_step(name, **changes)

    def next_order(self) -> int:
        order = self.state.next_order
        self.state = evolve(self.state, next_order=order + 1)
        return order


def build(model: type[Message], data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The payload of a ``model`` message from saga data, and the required fields that
    data has no value for (the message cannot be built without them yet)."""
    payload = fill(model, data)
    return payload, [name for name in required_fields(model) if name not in payload]


def fill(model: type[Message], data: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``model`` that ``data`` has a value for."""
    return {name: data[name] for name in model.model_fields if name in data}
