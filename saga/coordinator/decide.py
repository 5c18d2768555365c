"""The coordinator's decisions: ``decide(state, incoming, definition, now)``.

A pure function. Given the saga's current state (``None`` for a saga not seen
yet), one incoming fact (an event, a fired timer or an operator action) and the
saga definition, it returns the new state, the commands to send and the timers
to set or cancel. No I/O: every rule below is tested with plain objects.

Rules:

* A step starts when an event that starts it arrives (its timeout timer is
  set), completes or fails on its events; the terminal event completes the saga.
* A failure, a step timeout or the saga deadline starts compensation: completed
  steps are undone one at a time in reverse order of completion. A step that
  timed out has an unknown outcome and is compensated too (compensations are
  idempotent). Irreversible steps are never undone.
* A completion arriving after compensation began is compensated as well.
* A compensation that reports failure, or whose confirmation does not arrive in
  the step's timeout, is sent again with backoff per the step's compensation
  retry policy; when attempts run out the saga is parked for an operator.
* Events for finished sagas change nothing (except late completions, which are
  undone); timers firing after the fact do nothing.
* Parallel branches: while compensating, a step still in flight is waited for
  (its completion is undone, its failure or timeout settles it); a join event
  is published once every step it waits for completed.
* A failed step with an ``alternative`` starts that step (by its command) instead
  of compensating (a command short of data waits for the events bringing it, up to
  the alternative's timeout, then the alternative counts as failed, never sent);
  an ``optional`` step's failure or timeout does not fail the saga. A saga whose
  steps are all settled (completed, optional and failed, replaced by an alternative
  that settled, or an unused alternative) completes.
* Approval steps open a task, escalate it on each SLA breach and reject it at
  the deadline; an operator's ``approve:<step>`` or ``reject:<step>`` decides.
* In orchestration mode a started step is sent its trigger on its service's
  commands topic (events of the coordinator itself reach services directly).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from saga.coordinator.state import SagaState, StepState, evolve
from saga.definition.saga import SagaDefinition, SagaMode, StepDefinition, required_fields
from saga.messages.base import Message
from saga.messages.lifecycle import TaskEscalated, TaskOpened
from saga.messages.steps import CompensationFailed, StepFailed
from saga.messages.topics import COORDINATOR_OWNER, owner_of

IncomingKind = Literal["event", "timer", "operator"]

STEP_TIMEOUT = "step-timeout"
COMPENSATION_TIMEOUT = "compensation-timeout"
COMPENSATION_RETRY = "compensation-retry"
DEADLINE = "deadline"
APPROVAL_SLA = "approval-sla"
APPROVAL_DEADLINE = "approval-deadline"


@dataclass(frozen=True)
class Incoming:
    """One fact for one saga."""

    kind: IncomingKind
    message_id: str
    #: Event type, timer name (``step-timeout:reserve``), or operator action.
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
    name: str
    due: datetime


@dataclass(frozen=True)
class Decision:
    state: SagaState | None
    commands: list[CommandToSend] = field(default_factory=list)
    set_timers: list[Timer] = field(default_factory=list)
    cancel_timers: list[str] = field(default_factory=list)
    #: What happened, for the saga log and the operator.
    notes: list[str] = field(default_factory=list)
    #: False when the fact changed nothing (recorded and counted as ignored).
    applied: bool = True
    events: list[EventToPublish] = field(default_factory=list)
    tasks: list[TaskChange] = field(default_factory=list)


class _Builder:
    """Accumulates one decision."""

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


def new_saga(incoming: Incoming, definition: SagaDefinition) -> SagaState:
    return SagaState(
        saga_id=incoming.saga_id,
        saga_type=definition.name,
        status="running",
        steps={s.name: StepState() for s in definition.steps},
        started_at=incoming.at,
        traceparent=incoming.traceparent,
        tracestate=incoming.tracestate,
        definition_version=definition.version,
    )


def decide(
    state: SagaState | None,
    incoming: Incoming,
    definition: SagaDefinition,
    now: datetime,
    *,
    mode: SagaMode = "choreography",
) -> Decision:
    """The decision for ``incoming``; ``state`` is ``None`` for a saga not seen yet.

    ``mode`` is the system's (``SAGA_MODE``): in orchestration the coordinator sends
    each started step its trigger."""
    if state is None:
        if incoming.kind != "event":
            return Decision(None, notes=[f"{incoming.type}: no such saga"], applied=False)
        b = _Builder(new_saga(incoming, definition), definition, now, mode)
        if incoming.type != definition.starts_with.message_type:
            b.note(f"{incoming.type} arrived before the saga's start event: saga opened")
        else:
            b.note("saga started")
        if definition.deadline is not None:
            b.set_timers.append(Timer(DEADLINE, incoming.at + definition.deadline))
    else:
        b = _Builder(state, definition, now, mode)
    if incoming.kind == "event":
        _on_event(b, incoming)
    elif incoming.kind == "timer":
        _on_timer(b, incoming)
    else:
        _on_operator(b, incoming)
    changed = b.state != state or bool(
        b.commands or b.set_timers or b.cancel_timers or b.events or b.tasks
    )
    return b.decision(applied=changed)


# --- events ------------------------------------------------------------------------


def _on_event(b: _Builder, incoming: Incoming) -> None:
    d = b.definition
    kind = incoming.type
    matched = False
    for step in d.steps:
        if kind in _types(step.completed_by):
            matched = True
            _completed(b, step, incoming)
        elif kind in _types(step.failed_by):
            matched = True
            _failed(b, step, incoming)
        elif kind in _types(step.compensated_by):
            matched = True
            _compensated(b, step, incoming)
    for step in d.steps:
        if kind in _types(step.started_by):
            matched = True
            _started(b, step, incoming)
    if kind == StepFailed.message_type:
        failing = _step_of(b, incoming, want=("running", "pending", "timed_out"))
        if failing is not None:
            matched = True
            _failed(b, failing, incoming)
    if kind == CompensationFailed.message_type:
        undoing = _step_of(b, incoming, want=("compensating",))
        if undoing is not None:
            matched = True
            _compensation_failed(b, undoing, incoming)
    if not matched:
        b.note(f"{kind}: not part of saga {d.name!r}; recorded only")
    _maybe_finish(b)


def _started(b: _Builder, step: StepDefinition, incoming: Incoming) -> None:
    current = b.step(step.name)
    if current.inferred or current.status != "pending":
        # Its start event, read late (its own events came first, from another topic):
        # the data its compensation or a join may need.
        b.update(step.name, data={**incoming.payload, **current.data})
        if current.inferred:
            _resume_waiting(b, step)
        _data_arrived(b)
        return
    if b.state.status != "running":
        b.note(f"{step.name}: not started, the saga is {b.state.status}")
        return
    b.update(step.name, status="running", started_at=incoming.at, data=dict(incoming.payload))
    b.note(f"{step.name} started")
    if step.approval is not None:
        _open_task(b, step)
        return
    if step.reply_timeout is not None:
        b.set_timers.append(Timer(f"{STEP_TIMEOUT}:{step.name}", incoming.at + step.reply_timeout))
    if b.mode == "orchestration" and owner_of(incoming.type) != COORDINATOR_OWNER:
        # Central control: the service hears of its step from the coordinator only.
        b.commands.append(
            CommandToSend(
                step.name, incoming.type, dict(incoming.payload), 1, "start", step.service
            )
        )
        b.note(f"sent {incoming.type} to {step.service} to run {step.name}")


def _infer_predecessors(b: _Builder, step: StepDefinition, incoming: Incoming) -> None:
    """An event of a step not yet started proves the steps that start it completed.

    Events of one saga travel on several topics (one per service), so the
    coordinator may read a later step's event before an earlier one's. The
    later step could only have run after its trigger, so that trigger's step
    completed: record it now (flagged as inferred), in causal order, so
    compensation order stays right. Its own event, when it comes, adds data.
    """
    if b.step(step.name).status != "pending":
        return
    triggers = _types(step.started_by)
    for earlier in b.definition.steps:
        if earlier is step or not triggers & _types(earlier.completed_by):
            continue
        if b.step(earlier.name).status in ("pending", "running"):
            _infer_predecessors(b, earlier, incoming)
            current = b.step(earlier.name)
            b.update(
                earlier.name,
                status="completed",
                order=b.next_order(),
                inferred=True,
                started_at=current.started_at or incoming.at,
                finished_at=incoming.at,
                data=current.data or dict(incoming.payload),
            )
            b.note(f"{earlier.name} completed (inferred from {incoming.type}, read first)")
    if b.state.status == "running":
        b.update(step.name, status="running", started_at=incoming.at)


def _completed(b: _Builder, step: StepDefinition, incoming: Incoming) -> None:
    _infer_predecessors(b, step, incoming)
    current = b.step(step.name)
    b.cancel_timers.append(f"{STEP_TIMEOUT}:{step.name}")
    fields = {
        "finished_at": incoming.at,
        "attempt": incoming.attempt,
        "data": {**current.data, **incoming.payload},
        "started_at": current.started_at or incoming.at,
    }
    if current.inferred:
        b.update(step.name, inferred=False, **fields)
        b.note(f"{step.name}: its completion arrived (already known, inferred earlier)")
        _resume_waiting(b, step)
        _data_arrived(b)
    elif current.status in ("pending", "running"):
        b.update(step.name, status="completed", order=b.next_order(), **fields)
        b.note(f"{step.name} completed")
        if b.state.status in ("compensating", "compensated", "parked"):
            b.note(f"{step.name} completed after compensation began: it is undone too")
            _reopen(b)
            _next_compensation(b)
        elif b.state.status == "running" and incoming.type == b.definition.end.message_type:
            _complete(b)
        elif b.state.status == "running":
            _check_joins(b)
            _maybe_complete(b)
    elif current.status == "timed_out":
        # The late answer to a step already being undone: the undo covers it.
        b.update(step.name, **fields)
        b.note(f"{step.name} answered after its timeout; its compensation covers it")
    elif current.status == "compensating":
        b.update(step.name, compensate_again=True, **fields)
        b.note(f"{step.name} completed while its compensation was in flight: undo again after")
    elif current.status == "compensated":
        b.update(step.name, status="completed", order=b.next_order(), **fields)
        b.note(f"{step.name} completed after it was compensated: undo again")
        _reopen(b)
        _next_compensation(b)
    else:
        b.note(f"{step.name}: completion ignored, step is {current.status}")


def _failed(b: _Builder, step: StepDefinition, incoming: Incoming) -> None:
    _infer_predecessors(b, step, incoming)
    current = b.step(step.name)
    if current.status not in ("pending", "running", "timed_out"):
        b.note(f"{step.name}: failure ignored, step is {current.status}")
        return
    error = _error(incoming)
    b.cancel_timers.append(f"{STEP_TIMEOUT}:{step.name}")
    timed_out = current.status == "timed_out"
    b.update(
        step.name,
        status="timed_out" if timed_out else "failed",
        finished_at=incoming.at,
        attempt=incoming.attempt,
        error=error,
        started_at=current.started_at or incoming.at,
    )
    b.note(f"{step.name} failed: {error}")
    _after_failure(b, step, f"step {step.name} failed: {error}", timed_out=timed_out)


def _after_failure(b: _Builder, step: StepDefinition, reason: str, *, timed_out: bool) -> None:
    """A step failed or timed out: its alternative, going on without it, or compensating."""
    if b.state.status != "running":
        return
    if step.alternative is not None and not timed_out:
        _start_alternative(b, step)
    elif step.optional:
        b.note(f"{step.name} is optional: the saga goes on without it")
        _check_joins(b)
        _maybe_complete(b)
    else:
        _begin_compensation(b, reason)


def _compensated(b: _Builder, step: StepDefinition, incoming: Incoming) -> None:
    current = b.step(step.name)
    if current.status not in ("compensating", "compensation_failed"):
        # (A late confirmation of a parked compensation still counts: it succeeded.)
        b.note(f"{step.name}: confirmation ignored, step is {current.status}")
        return
    b.cancel_timers.extend(
        [f"{COMPENSATION_TIMEOUT}:{step.name}", f"{COMPENSATION_RETRY}:{step.name}"]
    )
    if current.compensate_again:
        b.update(step.name, status="completed", compensate_again=False, order=b.next_order())
        b.note(f"{step.name} compensated, and undone once more for its late completion")
    else:
        b.update(step.name, status="compensated", compensated_at=incoming.at)
        b.note(f"{step.name} compensated")
    if b.state.status == "parked":
        b.state = evolve(b.state, status="compensating")
    _next_compensation(b)


def _compensation_failed(b: _Builder, step: StepDefinition, incoming: Incoming) -> None:
    error = _error(incoming)
    b.update(step.name, error=f"compensation failed: {error}")
    b.cancel_timers.append(f"{COMPENSATION_TIMEOUT}:{step.name}")
    _retry_or_park(b, step, f"compensation of {step.name} failed: {error}")


# --- timers ------------------------------------------------------------------------


def _on_timer(b: _Builder, incoming: Incoming) -> None:
    kind, _, name = incoming.type.partition(":")
    if b.state.finished:
        b.note(f"timer {incoming.type} fired after the saga finished: nothing to do")
        return
    if kind == DEADLINE:
        if b.state.status == "running":
            b.note("saga deadline passed")
            for step in b.definition.steps:
                if b.step(step.name).status == "running":
                    _time_out(b, step)
            _begin_compensation(b, "saga deadline passed")
        return
    step = b.definition.step(name)
    current = b.step(step.name)
    if kind in (APPROVAL_SLA, APPROVAL_DEADLINE) and current.status == "running":
        if kind == APPROVAL_SLA:
            _escalate(b, step)
        else:
            _decide_task(b, step, approved=False, by="deadline", reason="deadline passed")
    elif kind == STEP_TIMEOUT and current.status == "running":
        _time_out(b, step)
        if step.on_timeout == "park" and step.needs_compensation:
            why = f"step {step.name} timed out: its outcome is unknown (on_timeout='park')"
            b.state = evolve(b.state, status="parked", reason=why)
            b.note(f"{why}: saga parked for an operator")
        elif b.state.status == "running":
            _after_failure(b, step, f"step {step.name} timed out", timed_out=True)
        else:
            _next_compensation(b)  # a branch in flight settled: compensation goes on
    elif kind == COMPENSATION_TIMEOUT and current.status == "compensating":
        _retry_or_park(b, step, f"no confirmation of {step.name}'s compensation in time")
    elif kind == COMPENSATION_RETRY and current.status == "compensating":
        _send_compensation(b, step)
    else:
        b.note(f"timer {incoming.type}: nothing to do, step is {current.status}")


def _time_out(b: _Builder, step: StepDefinition) -> None:
    if b.step(step.name).waiting_for_data:
        _never_sent(b, step, "the data for its command never arrived")
        return
    b.update(
        step.name,
        status="timed_out",
        finished_at=b.now,
        order=b.next_order(),
        error="timed out: outcome unknown",
    )
    b.note(f"{step.name} timed out (outcome unknown: it will be compensated)")


# --- operator actions ----------------------------------------------------------------


def _on_operator(b: _Builder, incoming: Incoming) -> None:
    who = f"{incoming.actor or 'unknown'}" + (f" ({incoming.reason})" if incoming.reason else "")
    action, _, name = incoming.type.partition(":")
    if action == "retry":
        if b.state.status != "parked":
            b.note(f"retry by {who}: nothing to do, saga is {b.state.status}")
            return
        b.state = evolve(b.state, status="compensating")
        b.note(f"retry by {who}")
        for step in b.definition.steps:
            if b.step(step.name).status == "compensation_failed":
                b.update(step.name, status="completed", compensation_attempts=0)
        _next_compensation(b)
    elif action == "skip":
        step = b.definition.step(name)
        if b.step(name).status not in (
            "compensation_failed",
            "compensating",
            "completed",
            "timed_out",
        ):
            b.note(f"skip {name} by {who}: nothing to do, step is {b.step(name).status}")
            return
        b.update(name, status="skipped", error=f"skipped by {who}")
        b.cancel_timers.extend([f"{COMPENSATION_TIMEOUT}:{name}", f"{COMPENSATION_RETRY}:{name}"])
        b.note(f"{step.name} skipped by {who}")
        if b.state.status == "parked":
            b.state = evolve(b.state, status="compensating")
        if b.state.status == "compensating":
            _next_compensation(b)
    elif action in ("approve", "reject"):
        step = b.definition.step(name)
        if step.approval is None or b.step(name).status != "running":
            b.note(f"{action} {name} by {who}: nothing to do, step is {b.step(name).status}")
            return
        _decide_task(
            b,
            step,
            approved=action == "approve",
            by=incoming.actor or "unknown",
            reason=incoming.reason,
        )
    elif action == "resolve":
        b.state = evolve(b.state, status="resolved", finished_at=b.now, reason=f"resolved by {who}")
        b.cancel_timers.append(DEADLINE)
        for step in b.definition.steps:
            b.cancel_timers.extend(
                [
                    f"{STEP_TIMEOUT}:{step.name}",
                    f"{COMPENSATION_TIMEOUT}:{step.name}",
                    f"{COMPENSATION_RETRY}:{step.name}",
                ]
            )
        b.note(f"resolved by {who}")
    else:
        b.note(f"unknown operator action {incoming.type!r}")


# --- compensation ---------------------------------------------------------------------


def _begin_compensation(b: _Builder, reason: str) -> None:
    b.state = evolve(b.state, status="compensating", reason=reason)
    b.cancel_timers.append(DEADLINE)
    b.note(f"compensating: {reason}")
    for step in b.definition.steps:
        current = b.step(step.name)
        if step.approval is not None and current.status == "running":
            _close_task(b, step, "cancelled", by="coordinator", reason="the saga compensates")
            b.update(step.name, status="failed", finished_at=b.now, error="cancelled")
        elif current.status == "running" and current.waiting_for_data:
            _never_sent(b, step, "the saga compensates")
    _next_compensation(b)


def _reopen(b: _Builder) -> None:
    if b.state.status == "compensated":
        b.state = evolve(b.state, status="compensating", finished_at=None)


def _next_compensation(b: _Builder) -> None:
    """Send the next compensation, or finish: one at a time, latest completion first."""
    if b.state.status not in ("compensating",):
        return
    steps = b.definition.steps
    if any(b.step(s.name).status == "compensating" for s in steps):
        return  # one in flight: wait for its confirmation
    in_flight = [s.name for s in steps if b.step(s.name).status == "running"]
    if in_flight:
        # A parallel branch still running: its outcome decides what to undo.
        b.note(f"waiting for {', '.join(in_flight)} (in flight) before compensating further")
        return
    due = [
        s
        for s in steps
        if b.step(s.name).status in ("completed", "timed_out") and s.needs_compensation
    ]
    if not due:
        b.state = evolve(b.state, status="compensated", finished_at=b.now)
        b.note("saga compensated")
        return
    step = max(due, key=lambda s: b.step(s.name).order or 0)
    b.update(
        step.name, status="compensating", compensation_attempts=0, compensation_started_at=b.now
    )
    _send_compensation(b, step)


def _send_compensation(b: _Builder, step: StepDefinition) -> None:
    assert step.compensation is not None
    current = b.step(step.name)
    attempt = current.compensation_attempts + 1
    command = step.compensation
    payload, missing = _build(command, current.data)
    if missing and current.inferred and not current.waiting_for_data:
        # Its own events are still on their way (another topic): wait for them,
        # with a timer as a safety net.
        b.update(step.name, waiting_for_data=True)
        due = b.now + (step.reply_timeout or timedelta(seconds=30))
        b.set_timers.append(Timer(f"{COMPENSATION_RETRY}:{step.name}", due))
        b.note(f"{step.name}: waiting for its events to build {command.message_type}")
        return
    if missing and isinstance(step.on_timeout, type):
        # No completion seen (it timed out): undo it the way the definition says.
        command = step.on_timeout
        payload, missing = _build(command, current.data)
    if missing:
        why = f"cannot build {command.message_type}: no value for {', '.join(missing)}"
        b.update(step.name, status="compensation_failed", error=why)
        b.state = evolve(b.state, status="parked", reason=why)
        b.note(f"{why}: saga parked for an operator")
        return
    b.update(step.name, compensation_attempts=attempt)
    b.commands.append(CommandToSend(step.name, command.message_type, payload, attempt))
    b.note(f"sent {command.message_type} for {step.name} (attempt {attempt})")
    if step.reply_timeout is not None:
        b.set_timers.append(
            Timer(f"{COMPENSATION_TIMEOUT}:{step.name}", b.now + step.reply_timeout)
        )


def _resume_waiting(b: _Builder, step: StepDefinition) -> None:
    if b.step(step.name).waiting_for_data:
        b.update(step.name, waiting_for_data=False)
        b.cancel_timers.append(f"{COMPENSATION_RETRY}:{step.name}")
        _send_compensation(b, step)


def _retry_or_park(b: _Builder, step: StepDefinition, why: str) -> None:
    current = b.step(step.name)
    policy = step.compensation_retry
    if not policy.gives_up_after(current.compensation_attempts):
        delay: timedelta = policy.delay(current.compensation_attempts, rand=lambda: 0.5)
        b.set_timers.append(Timer(f"{COMPENSATION_RETRY}:{step.name}", b.now + delay))
        b.note(f"{why}; sent again in {delay.total_seconds():g}s")
        return
    b.update(step.name, status="compensation_failed", error=why)
    b.state = evolve(b.state, status="parked", reason=why)
    b.note(f"{why}; attempts exhausted: saga parked for an operator")


# --- completion, joins, alternatives ---------------------------------------------------


def _complete(b: _Builder) -> None:
    b.state = evolve(b.state, status="completed", finished_at=b.now)
    b.cancel_timers.append(DEADLINE)
    b.note("saga completed")


def _settled(b: _Builder, step: StepDefinition) -> bool:
    """Nothing more will happen to ``step`` in a saga that completes."""
    status = b.step(step.name).status
    if status in ("completed", "skipped"):
        return True
    if status in ("failed", "timed_out") and step.optional:
        return True
    if status == "failed" and step.alternative is not None:
        return _settled(b, b.definition.step(step.alternative))
    if status == "pending":
        primaries = [s for s in b.definition.steps if s.alternative == step.name]
        return bool(primaries) and all(b.step(p.name).status != "failed" for p in primaries)
    return False


def _maybe_complete(b: _Builder) -> None:
    if b.state.status == "running" and all(_settled(b, s) for s in b.definition.steps):
        _complete(b)


def _check_joins(b: _Builder) -> None:
    """Publish each join event whose steps all completed (or, if optional, failed)."""
    for join in b.definition.joins:
        kind = join.event.message_type
        if kind in b.state.joined or b.state.status != "running":
            continue
        if not all(_settled(b, b.definition.step(name)) for name in join.after):
            continue
        payload, missing = _build(join.event, b.data())
        if missing:
            # Events with the data are still on their way (the start event, read late
            # from another topic): checked again when they come; the deadline stays.
            b.note(f"{kind} waits for a value of {', '.join(missing)}")
            continue
        b.state = evolve(b.state, joined=(*b.state.joined, kind))
        b.note(f"joined {', '.join(join.after)}: publishing {kind}")
        _publish(b, kind, payload, step=None)


def _start_alternative(b: _Builder, failed: StepDefinition) -> None:
    assert failed.alternative is not None
    step = b.definition.step(failed.alternative)
    if b.step(step.name).status != "pending":
        b.note(f"alternative {step.name} was tried before: compensating")
        _begin_compensation(b, f"step {failed.name} failed and so did its alternative")
        return
    b.update(step.name, status="running", started_at=b.now)
    b.note(f"{failed.name} failed: trying the alternative {step.name}")
    _send_alternative(b, failed, step)


def _send_alternative(b: _Builder, failed: StepDefinition, step: StepDefinition) -> None:
    """Send the alternative its command, or wait for the data the command needs."""
    [command] = step.started_by
    payload, missing = _build(command, {**b.data(), **b.step(failed.name).data})
    waiting = b.step(step.name).waiting_for_data
    timer = f"{STEP_TIMEOUT}:{step.name}"
    if missing:
        if not waiting:
            # The failure was read before the events with that data (the saga's start
            # event, on another topic): sent when they come, with a timer as a safety net.
            b.update(step.name, waiting_for_data=True)
            b.set_timers.append(Timer(timer, b.now + (step.reply_timeout or timedelta(seconds=30))))
            b.note(f"{step.name}: {command.message_type} waits for {', '.join(missing)}")
        return
    b.update(step.name, data=payload, waiting_for_data=False)
    b.commands.append(
        CommandToSend(step.name, command.message_type, payload, 1, "start", step.service)
    )
    if waiting:
        b.note(f"{step.name}: its data arrived, {command.message_type} sent")
    if step.reply_timeout is not None:
        b.set_timers.append(Timer(timer, b.now + step.reply_timeout))
    elif waiting:
        b.cancel_timers.append(timer)


def _never_sent(b: _Builder, step: StepDefinition, why: str) -> None:
    """An alternative whose command is still waiting for data fails unsent: nothing
    to undo, nothing in flight."""
    b.update(
        step.name,
        status="failed",
        finished_at=b.now,
        waiting_for_data=False,
        error=f"not started: {why}",
    )
    b.cancel_timers.append(f"{STEP_TIMEOUT}:{step.name}")
    b.note(f"{step.name} not started: {why}")


def _send_waiting_alternatives(b: _Builder) -> None:
    if b.state.status != "running":
        return
    for failed in b.definition.steps:
        if failed.alternative is None or b.step(failed.name).status != "failed":
            continue
        step = b.definition.step(failed.alternative)
        current = b.step(step.name)
        if current.status == "running" and current.waiting_for_data:
            _send_alternative(b, failed, step)


def _data_arrived(b: _Builder) -> None:
    """Events read late brought data: what waited for it goes on (running sagas only)."""
    _check_joins(b)
    _send_waiting_alternatives(b)


def _publish(b: _Builder, kind: str, payload: dict[str, Any], step: str | None) -> None:
    """Publish a coordinator event, and start the steps it starts (it never comes back)."""
    b.events.append(EventToPublish(kind, payload, step))
    fact = Incoming(
        kind="event",
        message_id=f"{b.state.saga_id}:{kind}",
        type=kind,
        saga_id=b.state.saga_id,
        saga_type=b.state.saga_type,
        at=b.now,
        payload=payload,
    )
    for started in b.definition.steps:
        if kind in _types(started.started_by):
            _started(b, started, fact)
    if kind == b.definition.end.message_type and b.state.status == "running":
        _complete(b)


def _build(model: type[Message], data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The payload of a ``model`` message from saga data, and the required fields that
    data has no value for (the message cannot be built without them yet)."""
    payload = _fill(model.model_fields, data)
    return payload, [name for name in required_fields(model) if name not in payload]


def _fill(fields: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    return {name: data[name] for name in fields if name in data}


# --- approvals ---------------------------------------------------------------------------


def _open_task(b: _Builder, step: StepDefinition) -> None:
    assert step.approval is not None
    approval = step.approval
    assignee = approval.assignees[0]
    sla_due, deadline = b.now + approval.sla, b.now + approval.deadline
    b.update(step.name, assignee=assignee, escalations=0)
    b.set_timers += [
        Timer(f"{APPROVAL_SLA}:{step.name}", sla_due),
        Timer(f"{APPROVAL_DEADLINE}:{step.name}", deadline),
    ]
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


def _escalate(b: _Builder, step: StepDefinition) -> None:
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
    b.set_timers.append(Timer(f"{APPROVAL_SLA}:{step.name}", sla_due))
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


def _close_task(
    b: _Builder, step: StepDefinition, change: TaskChangeKind, *, by: str, reason: str | None
) -> None:
    b.cancel_timers += [f"{APPROVAL_SLA}:{step.name}", f"{APPROVAL_DEADLINE}:{step.name}"]
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


def _decide_task(
    b: _Builder, step: StepDefinition, *, approved: bool, by: str, reason: str | None
) -> None:
    _close_task(b, step, "approved" if approved else "rejected", by=by, reason=reason)
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
        _publish(b, model.message_type, _fill(model.model_fields, b.data()), step.name)
        _check_joins(b)
        _maybe_complete(b)
        return
    model = step.failed_by[0]
    why = f"rejected by {by}" + (f": {reason}" if reason else "")
    b.update(step.name, status="failed", finished_at=b.now, error=why)
    b.note(f"{step.name} {why}")
    b.events.append(
        EventToPublish(model.message_type, _fill(model.model_fields, {**b.data(), **decided}))
    )
    _after_failure(b, step, f"approval {step.name} {why}", timed_out=False)


# --- helpers --------------------------------------------------------------------------


def _maybe_finish(b: _Builder) -> None:
    if b.state.status == "compensating":
        _next_compensation(b)


@functools.cache
def _types(models: tuple[type[Any], ...]) -> frozenset[str]:
    return frozenset(m.message_type for m in models)


def _step_of(b: _Builder, incoming: Incoming, want: tuple[str, ...]) -> StepDefinition | None:
    """The step a generic event (StepFailed, CompensationFailed) is about."""
    candidates = [s for s in b.definition.steps if s.service == incoming.service]
    if incoming.step_hint:
        named = [s for s in candidates if s.name == incoming.step_hint]
        if named:
            return named[0]
    active = [s for s in candidates if b.step(s.name).status in want]
    return active[0] if active else (candidates[0] if len(candidates) == 1 else None)


def _error(incoming: Incoming) -> str:
    kind = incoming.payload.get("error_type", incoming.type)
    message = incoming.payload.get("error_message", "")
    return f"{kind}: {message}" if message else str(kind)
