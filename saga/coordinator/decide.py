"""The coordinator's decisions: ``decide(state, incoming, definition, now)``.

A pure function. Given the saga's current state (``None`` for a saga not seen
yet), one incoming fact (an event, a fired timer or an operator action) and the
saga definition, it returns the new state, the commands to send and the timers
to set or cancel. No I/O: every rule below is tested with plain objects.

Rules:

* Only the start event opens a saga. Another event of a saga not started yet opens
  nothing: the decision says ``hold`` (the shell keeps the event until the start event
  comes and decides on it right after, or dead-letters it as an orphan).
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

Where each rule lives, by the fact that comes in and what it leads to:

* :mod:`~saga.coordinator.correlate`: an event, and the step it starts, completes or fails;
* :mod:`~saga.coordinator.timers`: a timer firing (kinds and names in
  :mod:`~saga.coordinator.timer_keys`);
* :mod:`~saga.coordinator.operator`: an operator's action;
* :mod:`~saga.coordinator.compensate`: undoing, retrying and parking;
* :mod:`~saga.coordinator.branches`: alternatives, optional steps, joins and completion;
* :mod:`~saga.coordinator.approvals`: approval tasks;
* :mod:`~saga.coordinator.decision`: the data in and out, and the builder they share.
"""

from __future__ import annotations

from datetime import datetime

from saga.coordinator import correlate, operator, timers
from saga.coordinator.decision import (
    Builder,
    CommandToSend,
    Decision,
    EventToPublish,
    Incoming,
    IncomingKind,
    TaskChange,
    TaskChangeKind,
    Timer,
    task_id,
)
from saga.coordinator.state import SagaState, StepState
from saga.coordinator.timer_keys import (
    APPROVAL_DEADLINE,
    APPROVAL_SLA,
    COMPENSATION_RETRY,
    COMPENSATION_TIMEOUT,
    DEADLINE,
    STEP_TIMEOUT,
    TimerKey,
    TimerKind,
)
from saga.definition.saga import SagaDefinition, SagaMode

__all__ = [
    "APPROVAL_DEADLINE",
    "APPROVAL_SLA",
    "COMPENSATION_RETRY",
    "COMPENSATION_TIMEOUT",
    "DEADLINE",
    "STEP_TIMEOUT",
    "CommandToSend",
    "Decision",
    "EventToPublish",
    "Incoming",
    "IncomingKind",
    "TaskChange",
    "TaskChangeKind",
    "Timer",
    "TimerKey",
    "TimerKind",
    "decide",
    "new_saga",
    "task_id",
]


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
        if incoming.type != definition.starts_with.message_type:
            # Only the start event opens a saga. Another event may be read before it
            # (they travel on other topics), or be a stray for a saga nobody started:
            # the shell holds it for its start event, then dead-letters it as an orphan.
            return Decision(
                None,
                notes=[f"{incoming.type} of no saga started yet: held for its start event"],
                applied=False,
                hold=True,
            )
        b = Builder(new_saga(incoming, definition), definition, now, mode)
        b.note("saga started")
        if definition.deadline is not None:
            b.set_timer(TimerKey(DEADLINE), incoming.at + definition.deadline)
    else:
        b = Builder(state, definition, now, mode)
    if incoming.kind == "event":
        correlate.on_event(b, incoming)
    elif incoming.kind == "timer":
        timers.on_timer(b, incoming)
    else:
        operator.on_operator(b, incoming)
    changed = b.state != state or bool(
        b.commands or b.set_timers or b.cancel_timers or b.events or b.tasks
    )
    return b.decision(applied=changed)
