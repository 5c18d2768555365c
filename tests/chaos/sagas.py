"""The order saga for the chaos run: step timers long enough to outlast kills and
rebalances, quick compensation retries, a deadline that ends every saga."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from contracts.order_saga import ORDER_SAGA
from saga.definition.saga import SagaDefinition
from saga.resilience.retry import RetryPolicy

RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=30,
)


def definitions() -> list[SagaDefinition]:
    steps = tuple(
        replace(step, reply_timeout=timedelta(seconds=60), compensation_retry=RETRY)
        for step in ORDER_SAGA.steps
    )
    return [replace(ORDER_SAGA, steps=steps, deadline=timedelta(minutes=20))]
