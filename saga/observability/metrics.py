"""The framework's OpenTelemetry metrics, in one place.

Exported over OTLP when ``SAGA_OTLP_METRICS_ENDPOINT`` is set (see
:mod:`saga.observability.telemetry`); without it the instruments are no-ops.

| name | kind | unit | attributes |
| --- | --- | --- | --- |
| ``saga.started`` | counter | {saga} | saga.type |
| ``saga.completed`` | counter | {saga} | saga.type |
| ``saga.compensated`` | counter | {saga} | saga.type |
| ``saga.parked`` | counter | {saga} | saga.type |
| ``saga.step.completed_late`` | counter | {step} | saga.type, saga.step |
| ``saga.step.duration`` | histogram | s | saga.type, saga.step, saga.outcome |
| ``saga.compensation.duration`` | histogram | s | saga.type, saga.step |
| ``saga.step.retries`` | counter | {retry} | service, saga.step |
| ``saga.dead_letters`` | counter | {record} | messaging.destination.name, error.type |
| ``saga.security.rejected`` | counter | {record} | messaging.destination.name, error.type |
| ``saga.coordinator.orphans`` | counter | {record} | messaging.destination.name |
| ``saga.coordinator.pruned`` | counter | {saga} | saga.status |
| ``saga.partitions.stalled`` | up-down counter | {partition} | consumer group, destination |
"""

from __future__ import annotations

from opentelemetry import metrics

_meter = metrics.get_meter("saga")

sagas_started = _meter.create_counter("saga.started", unit="{saga}", description="Sagas opened")
sagas_completed = _meter.create_counter(
    "saga.completed", unit="{saga}", description="Sagas whose every step completed"
)
sagas_compensated = _meter.create_counter(
    "saga.compensated", unit="{saga}", description="Sagas undone by compensation"
)
sagas_parked = _meter.create_counter(
    "saga.parked", unit="{saga}", description="Sagas parked for an operator"
)
steps_completed_late = _meter.create_counter(
    "saga.step.completed_late",
    unit="{step}",
    description="Steps that cannot be undone and completed after compensation began",
)
step_duration = _meter.create_histogram(
    "saga.step.duration", unit="s", description="From a step's start to its outcome"
)
compensation_duration = _meter.create_histogram(
    "saga.compensation.duration",
    unit="s",
    description="From a compensation command to its confirmation",
)
step_retries = _meter.create_counter(
    "saga.step.retries", unit="{retry}", description="Handler attempts that are retried"
)
dead_letters = _meter.create_counter(
    "saga.dead_letters", unit="{record}", description="Records sent to a dead-letter topic"
)
security_rejected = _meter.create_counter(
    "saga.security.rejected",
    unit="{record}",
    description="Records refused for their signature (unsigned, forged, tampered, replayed)",
)
orphans = _meter.create_counter(
    "saga.coordinator.orphans",
    unit="{record}",
    description="Events of a saga never started, dead-lettered after their hold",
)
sagas_pruned = _meter.create_counter(
    "saga.coordinator.pruned",
    unit="{saga}",
    description="Finished sagas deleted past their retention (saga.coordinator.retention)",
)
partitions_stalled = _meter.create_up_down_counter(
    "saga.partitions.stalled",
    unit="{partition}",
    description="Partitions with records waiting whose position has not moved for"
    " SAGA_STALL_AFTER_MS (see saga.kafka.stalls)",
)
