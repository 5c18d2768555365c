"""Parallel branches, alternatives and optional steps: what a failure leads to, when a
join event is published, and when a saga whose steps all settled is complete.
"""

from __future__ import annotations

from datetime import timedelta

from saga.coordinator import compensate, correlate
from saga.coordinator.decision import Builder, CommandToSend, build
from saga.coordinator.state import evolve
from saga.coordinator.timer_keys import DEADLINE, STEP_TIMEOUT, TimerKey
from saga.definition.saga import StepDefinition


def after_failure(b: Builder, step: StepDefinition, reason: str, *, timed_out: bool) -> None:
    """A step failed or timed out: its alternative, going on without it, or compensating."""
    if b.state.status != "running":
        return
    if step.alternative is not None and not timed_out:
        _start_alternative(b, step)
    elif step.optional:
        b.note(f"{step.name} is optional: the saga goes on without it")
        check_joins(b)
        maybe_complete(b)
    else:
        compensate.begin(b, reason)


def complete(b: Builder) -> None:
    b.state = evolve(b.state, status="completed", finished_at=b.now)
    b.cancel(TimerKey(DEADLINE))
    b.note("saga completed")


def maybe_complete(b: Builder) -> None:
    if b.state.status == "running" and all(_settled(b, s) for s in b.definition.steps):
        complete(b)


def _settled(b: Builder, step: StepDefinition) -> bool:
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


def check_joins(b: Builder) -> None:
    """Publish each join event whose steps all completed (or, if optional, failed)."""
    for join in b.definition.joins:
        kind = join.event.message_type
        if kind in b.state.joined or b.state.status != "running":
            continue
        if not all(_settled(b, b.definition.step(name)) for name in join.after):
            continue
        payload, missing = build(join.event, b.data())
        if missing:
            # Events with the data are still on their way (the start event, read late
            # from another topic): checked again when they come; the deadline stays.
            b.note(f"{kind} waits for a value of {', '.join(missing)}")
            continue
        b.state = evolve(b.state, joined=(*b.state.joined, kind))
        b.note(f"joined {', '.join(join.after)}: publishing {kind}")
        correlate.publish(b, kind, payload, step=None)


def data_arrived(b: Builder) -> None:
    """Events read late brought data: what waited for it goes on (running sagas only)."""
    check_joins(b)
    _send_waiting_alternatives(b)


def _start_alternative(b: Builder, failed: StepDefinition) -> None:
    assert failed.alternative is not None
    step = b.definition.step(failed.alternative)
    if b.step(step.name).status != "pending":
        b.note(f"alternative {step.name} was tried before: compensating")
        compensate.begin(b, f"step {failed.name} failed and so did its alternative")
        return
    b.update(step.name, status="running", started_at=b.now)
    b.note(f"{failed.name} failed: trying the alternative {step.name}")
    _send_alternative(b, failed, step)


def _send_alternative(b: Builder, failed: StepDefinition, step: StepDefinition) -> None:
    """Send the alternative its command, or wait for the data the command needs."""
    [command] = step.started_by
    payload, missing = build(command, {**b.data(), **b.step(failed.name).data})
    waiting = b.step(step.name).waiting_for_data
    timer = TimerKey(STEP_TIMEOUT, step.name)
    if missing:
        if not waiting:
            # The failure was read before the events with that data (the saga's start
            # event, on another topic): sent when they come, with a timer as a safety net.
            b.update(step.name, waiting_for_data=True)
            b.set_timer(timer, b.now + (step.reply_timeout or timedelta(seconds=30)))
            b.note(f"{step.name}: {command.message_type} waits for {', '.join(missing)}")
        return
    b.update(step.name, data=payload, waiting_for_data=False)
    b.commands.append(
        CommandToSend(step.name, command.message_type, payload, 1, "start", step.service)
    )
    if waiting:
        b.note(f"{step.name}: its data arrived, {command.message_type} sent")
    if step.reply_timeout is not None:
        b.set_timer(timer, b.now + step.reply_timeout)
    elif waiting:
        b.cancel(timer)


def never_sent(b: Builder, step: StepDefinition, why: str) -> None:
    """An alternative whose command is still waiting for data fails unsent: nothing
    to undo, nothing in flight."""
    b.update(
        step.name,
        status="failed",
        finished_at=b.now,
        waiting_for_data=False,
        error=f"not started: {why}",
    )
    b.cancel(TimerKey(STEP_TIMEOUT, step.name))
    b.note(f"{step.name} not started: {why}")


def _send_waiting_alternatives(b: Builder) -> None:
    if b.state.status != "running":
        return
    for failed in b.definition.steps:
        if failed.alternative is None or b.step(failed.name).status != "failed":
            continue
        step = b.definition.step(failed.alternative)
        current = b.step(step.name)
        if current.status == "running" and current.waiting_for_data:
            _send_alternative(b, failed, step)
