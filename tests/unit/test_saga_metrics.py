"""The saga metrics are counted from what really happened (in-memory metric reader)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from contracts.inventory import InventoryReserved
from contracts.payment import PaymentCharged, PaymentFailed
from saga.coordinator.observe import observe
from saga.coordinator.state import SagaState, StepState
from saga.participant.service import Service, StepContext
from saga.resilience.faults import FaultRule, Faults
from saga.resilience.retry import RetryPolicy
from saga.testing import ServiceTestKit

READER = InMemoryMetricReader()
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def meter_provider() -> None:
    # The instruments are proxies of the global provider: install one that we read.
    metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))


def totals() -> dict[tuple[str, frozenset[tuple[str, Any]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, Any]]], float] = {}
    data = READER.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, frozenset((point.attributes or {}).items()))
                    found[key] = float(getattr(point, "value", getattr(point, "count", 0)))
    return found


def count(name: str, **attributes: Any) -> float:
    return sum(
        v for (n, attrs), v in totals().items() if n == name and set(attributes.items()) <= attrs
    )


def saga(status: str, **steps: StepState) -> SagaState:
    return SagaState("s-1", "order", status, dict(steps), T0)  # type: ignore[arg-type]


def test_state_changes_count_sagas_and_time_steps_and_compensations() -> None:
    before = {k: count(k, **{"saga.type": "order"}) for k in ("saga.started", "saga.compensated")}
    running = StepState("running", started_at=T0)
    started = saga("running", reserve=running)
    observe(None, started)
    done = replace(running, status="completed", finished_at=T0 + timedelta(seconds=2))
    completed = saga("running", reserve=done)
    observe(started, completed)
    compensating = saga("compensating", reserve=replace(done, status="compensating"))
    observe(completed, compensating)
    undone = replace(
        done,
        status="compensated",
        compensation_started_at=T0 + timedelta(seconds=3),
        compensated_at=T0 + timedelta(seconds=4),
    )
    observe(compensating, saga("compensated", reserve=undone))
    observe(saga("compensated", reserve=undone), saga("compensated", reserve=undone))  # no change

    assert count("saga.started", **{"saga.type": "order"}) == before["saga.started"] + 1
    assert count("saga.compensated", **{"saga.type": "order"}) == before["saga.compensated"] + 1
    assert count("saga.step.duration", **{"saga.step": "reserve"}) >= 1
    assert count("saga.compensation.duration", **{"saga.step": "reserve"}) >= 1


def test_a_step_that_cannot_be_undone_completing_late_is_counted_once() -> None:
    before = count("saga.step.completed_late", **{"saga.step": "notify"})
    running = saga("compensating", notify=StepState("running", started_at=T0))
    late = saga("compensating", notify=StepState("completed", started_at=T0, completed_late=True))
    observe(running, late)
    observe(late, replace(late, status="parked"))  # still late: not counted again
    assert count("saga.step.completed_late", **{"saga.step": "notify"}) == before + 1


async def test_retries_are_counted_per_service_and_step() -> None:
    service = Service("payment", retry=RetryPolicy(maximum_attempts=3, jitter=0))
    calls = 0

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("bank unreachable")
        return PaymentCharged(order_id=reserved.order_id, amount_cents=5, charge_id="c")

    before = count("saga.step.retries", service="payment", **{"saga.step": "charge"})
    kit = ServiceTestKit(service)
    reserved = InventoryReserved(order_id="o", sku="s", quantity=1, amount_cents=5)
    assert (await kit.send(reserved, saga_id="o")).kind == "completed"
    after = count("saga.step.retries", service="payment", **{"saga.step": "charge"})
    assert after == before + 2


async def test_an_injected_failure_fails_the_step_without_calling_the_handler() -> None:
    service = Service("payment")
    called = False

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        nonlocal called
        called = True
        return PaymentCharged(order_id=reserved.order_id, amount_cents=5, charge_id="c")

    faults = Faults([FaultRule(step="charge", action="fail", when={"order_id": "bad-*"})])
    kit = ServiceTestKit(service, faults=faults)
    bad = InventoryReserved(order_id="bad-1", sku="s", quantity=1, amount_cents=5)
    outcome = await kit.send(bad, saga_id="bad-1")
    assert outcome.kind == "failed" and not called
    [failure] = kit.emitted()
    assert isinstance(failure.payload, PaymentFailed)
    assert failure.payload.error_type == "InjectedFault"
    good = InventoryReserved(order_id="good-1", sku="s", quantity=1, amount_cents=5)
    assert (await kit.send(good, saga_id="good-1")).kind == "completed" and called
