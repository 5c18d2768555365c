"""The state of one saga, as the coordinator keeps it (JSON in the saga row)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, TypeVar

T = TypeVar("T")

SagaStatus = Literal["running", "completed", "compensating", "compensated", "parked", "resolved"]
StepStatus = Literal[
    "pending",
    "running",
    "completed",
    "failed",
    "timed_out",
    "compensating",
    "compensated",
    "compensation_failed",
    "skipped",
]


def evolve(state: T, **changes: Any) -> T:
    """``dataclasses.replace`` for these frozen states, without its per-call field
    walk (the coordinator's hottest path: several per event)."""
    kind = type(state)
    known = _FIELDS.get(kind)
    if known is None:
        known = _FIELDS[kind] = frozenset(f.name for f in fields(kind))  # type: ignore[arg-type]
    if not changes.keys() <= known:
        raise TypeError(f"{kind.__name__} has no field(s) {sorted(changes.keys() - known)}")
    new = object.__new__(kind)
    new.__dict__.update(state.__dict__)
    new.__dict__.update(changes)
    return new


_FIELDS: dict[type, frozenset[str]] = {}

FINISHED: frozenset[str] = frozenset({"completed", "compensated", "resolved"})
_TIMES = ("started_at", "finished_at", "compensation_started_at", "compensated_at")


@dataclass(frozen=True)
class StepState:
    status: StepStatus = "pending"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = 0
    error: str | None = None
    #: Order in which steps completed (or timed out): compensation runs in reverse.
    order: int | None = None
    #: Payload the compensation command is built from (completion, else start event).
    data: dict[str, Any] = field(default_factory=dict)
    compensation_attempts: int = 0
    #: When its first compensation command was sent.
    compensation_started_at: datetime | None = None
    compensated_at: datetime | None = None
    #: A completion arrived while its compensation was in flight: undo once more.
    compensate_again: bool = False
    #: Completed as inferred from a later step's event, before its own event arrived.
    inferred: bool = False
    #: Its next command (its compensation; an alternative's start) waits for data
    #: still in flight (events read late from another topic).
    waiting_for_data: bool = False
    #: Approval steps: who has the task now, and how often it was escalated.
    assignee: str | None = None
    escalations: int = 0
    #: The type of the event that started it (what starting it again sends).
    trigger: str | None = None
    #: How often the coordinator sent it its trigger (a step it starts, a retry).
    starts: int = 0
    #: It cannot be undone and completed after compensation began: its effect stays.
    completed_late: bool = False

    def to_json(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies every payload (the
        # coordinator's hottest path); the result is serialised at once.
        out = {name: getattr(self, name) for name in _STEP_FIELDS}
        for key in _TIMES:
            out[key] = out[key].isoformat() if out[key] else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepState:
        # Fields a later version added are left out: a rollback still reads its rows.
        data = {key: value for key, value in data.items() if key in _STEP_FIELD_SET}
        for key in _TIMES:
            data[key] = datetime.fromisoformat(data[key]) if data.get(key) else None
        return cls(**data)


@dataclass(frozen=True)
class SagaState:
    saga_id: str
    saga_type: str
    status: SagaStatus
    steps: dict[str, StepState]
    started_at: datetime
    finished_at: datetime | None = None
    #: Why the saga is compensating (the failure, timeout or deadline).
    reason: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    next_order: int = 1
    version: int = 0
    #: The version of the saga's definition it started with, and keeps.
    definition_version: int = 1
    #: Join events already published.
    joined: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def with_step(self, name: str, **changes: Any) -> SagaState:
        steps = dict(self.steps)
        steps[name] = evolve(steps[name], **changes)
        return evolve(self, steps=steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "saga_id": self.saga_id,
            "saga_type": self.saga_type,
            "status": self.status,
            "steps": {name: step.to_json() for name, step in self.steps.items()},
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "reason": self.reason,
            "traceparent": self.traceparent,
            "tracestate": self.tracestate,
            "next_order": self.next_order,
            "definition_version": self.definition_version,
            "joined": list(self.joined),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], version: int) -> SagaState:
        return cls(
            saga_id=data["saga_id"],
            saga_type=data["saga_type"],
            status=data["status"],
            steps={n: StepState.from_json(s) for n, s in data["steps"].items()},
            started_at=datetime.fromisoformat(data["started_at"]),
            finished_at=(
                datetime.fromisoformat(data["finished_at"]) if data.get("finished_at") else None
            ),
            reason=data.get("reason"),
            traceparent=data.get("traceparent"),
            tracestate=data.get("tracestate"),
            next_order=data.get("next_order", 1),
            version=version,
            definition_version=data.get("definition_version", 1),
            joined=tuple(data.get("joined", ())),
        )


_STEP_FIELDS = tuple(f.name for f in fields(StepState))
_STEP_FIELD_SET = frozenset(_STEP_FIELDS)
