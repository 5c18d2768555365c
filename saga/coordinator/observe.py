"""Saga metrics from state changes: what one decision did, counted after commit."""

from __future__ import annotations

from saga.coordinator.state import SagaState
from saga.observability import metrics

_FINISHED_STEP = ("completed", "failed", "timed_out")


def observe(before: SagaState | None, after: SagaState | None) -> None:
    """Count sagas started and ended, and time steps and compensations."""
    if after is None:
        return
    saga = {"saga.type": after.saga_type}
    if before is None:
        metrics.sagas_started.add(1, saga)
    if before is None or before.status != after.status:
        counter = {
            "completed": metrics.sagas_completed,
            "compensated": metrics.sagas_compensated,
            "parked": metrics.sagas_parked,
        }.get(after.status)
        if counter is not None:
            counter.add(1, saga)
    for name, step in after.steps.items():
        old = before.steps.get(name) if before is not None else None
        if step.completed_late and not (old is not None and old.completed_late):
            metrics.steps_completed_late.add(1, {**saga, "saga.step": name})
        if old is not None and old.status == step.status:
            continue
        if step.status in _FINISHED_STEP and step.started_at and step.finished_at:
            metrics.step_duration.record(
                (step.finished_at - step.started_at).total_seconds(),
                {**saga, "saga.step": name, "saga.outcome": step.status},
            )
        if step.status == "compensated" and step.compensation_started_at and step.compensated_at:
            metrics.compensation_duration.record(
                (step.compensated_at - step.compensation_started_at).total_seconds(),
                {**saga, "saga.step": name},
            )
