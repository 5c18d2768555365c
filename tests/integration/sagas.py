"""Saga definitions for the coordinator tests: the order saga with short timers."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from contracts.order_saga import ORDER_SAGA
from saga.definition.saga import SagaDefinition
from saga.resilience.retry import RetryPolicy

QUICK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=300), maximum_attempts=3, jitter=0
)


def definitions() -> list[SagaDefinition]:
    steps = tuple(
        replace(step, reply_timeout=timedelta(seconds=3), compensation_retry=QUICK_RETRY)
        for step in ORDER_SAGA.steps
    )
    return [replace(ORDER_SAGA, steps=steps, deadline=timedelta(seconds=120))]


def relaxed() -> list[SagaDefinition]:
    """The order saga with timers long enough to outlast rebalances under load."""
    steps = tuple(replace(step, reply_timeout=timedelta(minutes=5)) for step in ORDER_SAGA.steps)
    return [replace(ORDER_SAGA, steps=steps, deadline=timedelta(minutes=30))]


def relaxed_parallel() -> list[SagaDefinition]:
    """:func:`relaxed`, its undos sent at once (``compensation="parallel"``)."""
    return [replace(definition, compensation="parallel") for definition in relaxed()]


def outage() -> list[SagaDefinition]:
    """Short step timers, the default compensation retry (2 s doubling, 10 attempts):
    a service down for several seconds is outlasted by the retries of its undo."""
    steps = tuple(replace(step, reply_timeout=timedelta(seconds=3)) for step in ORDER_SAGA.steps)
    return [replace(ORDER_SAGA, steps=steps, deadline=timedelta(seconds=120))]
