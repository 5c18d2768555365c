"""A step's messages are declared once; the saga and the service both bind to that contract."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts.inventory import RESERVE, InventoryReserved
from contracts.order_saga import ORDER_SAGA
from contracts.orders import OrderPlaced
from contracts.payment import CHARGE, PaymentCharged, PaymentFailed, PaymentRefunded, RefundPayment
from contracts.shipping import SHIP, OrderShipped
from saga import ContractMismatch, SagaDefinition, Service, Step, StepContext, StepContract
from tests.payment_undo import VoidOrderCharges


def test_a_definition_takes_each_steps_messages_from_its_contract() -> None:
    charge = ORDER_SAGA.step("charge")
    assert charge.service == "payment", "the owner of its completion"
    assert charge.started_by == (InventoryReserved,)
    assert charge.completed_by == (PaymentCharged,)
    assert charge.failed_by == (PaymentFailed,)
    assert (charge.compensation, charge.compensated_by) == (RefundPayment, (PaymentRefunded,))
    assert ORDER_SAGA.end is ORDER_SAGA.steps[-1].completed_by[0], "ends with the last step"


def test_a_trigger_left_out_is_the_previous_steps_completion() -> None:
    untriggered = StepContract(completion=PaymentCharged, failure=PaymentFailed)
    saga = SagaDefinition(
        "order",
        starts_with=OrderPlaced,
        steps=[Step("reserve", RESERVE), Step("charge", untriggered, irreversible=True)],
    )
    assert saga.step("charge").started_by == (InventoryReserved,)
    assert saga.step("reserve").started_by == (OrderPlaced,)
    assert saga.problems() == []


def test_a_handler_binds_to_its_contract_and_reads_its_trigger() -> None:
    service = Service("payment")

    @service.step(CHARGE, attempt_timeout=timedelta(seconds=1))
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        return PaymentCharged(order_id="o", amount_cents=1, charge_id="c")

    @service.compensation(CHARGE)
    async def refund(command: RefundPayment, ctx: StepContext) -> PaymentRefunded:
        return PaymentRefunded(order_id="o", refunded=True)

    step = service.steps["inventory.InventoryReserved"]
    assert (step.fails_with, step.attempt_timeout) == (PaymentFailed, timedelta(seconds=1))
    assert service.steps["payment.RefundPayment"].compensation
    for model in (InventoryReserved, PaymentCharged, PaymentFailed, RefundPayment, PaymentRefunded):
        assert model.message_type in service.registry, model.__name__


def test_binding_refuses_a_handler_that_does_not_fit_its_contract() -> None:
    with pytest.raises(ContractMismatch, match="belongs to service 'shipping', not 'payment'"):
        Service("payment").step(SHIP)

    service = Service("payment")
    with pytest.raises(ContractMismatch, match="reads OrderPlaced, but its step is started by"):

        @service.step(CHARGE)
        async def wrong_input(order: OrderPlaced, ctx: StepContext) -> PaymentCharged:
            raise NotImplementedError

    with pytest.raises(ContractMismatch, match="returns OrderShipped, but its contract says"):

        @service.step(CHARGE)
        async def wrong_output(reserved: InventoryReserved, ctx: StepContext) -> OrderShipped:
            raise NotImplementedError

    with pytest.raises(ContractMismatch, match="compensation command is RefundPayment"):

        @service.compensation(CHARGE)  # type: ignore[type-var]
        async def wrong_undo(order: OrderPlaced, ctx: StepContext) -> PaymentRefunded:
            raise NotImplementedError


def test_an_irreversible_contract_has_no_compensation_to_bind() -> None:
    from contracts.notification import NOTIFY

    with pytest.raises(ContractMismatch, match="has no compensation in its contract"):
        Service("notification").compensation(NOTIFY)


def test_a_contract_checks_itself() -> None:
    lopsided = StepContract(completion=OrderShipped, compensation=RefundPayment)
    assert lopsided.problems() == [
        "contract of OrderShipped: compensation 'payment.RefundPayment' is not a command of"
        " service 'shipping'",
        "contract of OrderShipped: a compensation command and the event confirming it go"
        " together (give both or neither)",
    ]


def test_the_step_after_an_alternative_is_started_by_either_completion() -> None:
    from tests.trips.messages import (
        BookHostel,
        CancelHostel,
        CancelHotel,
        HostelBooked,
        HostelCancelled,
        HostelFailed,
        HotelBooked,
        HotelCancelled,
        HotelFailed,
        PointsAwarded,
        PointsFailed,
        TripRequested,
    )

    hotel = StepContract(
        trigger=TripRequested,
        completion=HotelBooked,
        failure=HotelFailed,
        compensation=CancelHotel,
        compensated=HotelCancelled,
    )
    hostel = StepContract(
        trigger=BookHostel,
        completion=HostelBooked,
        failure=HostelFailed,
        compensation=CancelHostel,
        compensated=HostelCancelled,
    )
    points = StepContract(completion=PointsAwarded, failure=PointsFailed)
    saga = SagaDefinition(
        "stay",
        starts_with=TripRequested,
        steps=[
            Step("hotel", hotel, alternative="hostel"),
            Step("hostel", hostel),
            Step("points", points, irreversible=True),
        ],
    )
    assert saga.step("points").started_by == (HotelBooked, HostelBooked)
    assert saga.problems() == []


def test_an_on_timeout_that_is_no_choice_is_refused() -> None:
    from dataclasses import replace

    steps = list(ORDER_SAGA.steps)
    steps[1] = replace(steps[1], on_timeout="parked")  # type: ignore[arg-type]
    steps[2] = replace(steps[2], on_timeout=OrderShipped)  # type: ignore[arg-type]
    problems = replace(ORDER_SAGA, steps=tuple(steps)).problems()
    assert problems == [
        "step 'charge': on_timeout is 'parked': give 'compensate', 'park', 'retry' or a"
        " command class of the step's service",
        "step 'ship': on_timeout is <class 'contracts.shipping.OrderShipped'>: give"
        " 'compensate', 'park', 'retry' or a command class of the step's service",
    ]


def test_a_decorated_handler_and_a_base_class_annotation_bind_too() -> None:
    import functools
    from collections.abc import Awaitable, Callable
    from typing import Any

    from saga import Event

    def logged(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await handler(*args, **kwargs)

        return wrapper

    service = Service("payment")

    @service.step(CHARGE)
    @logged
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        return PaymentCharged(order_id="o", amount_cents=1, charge_id="c")

    @service.compensation(CHARGE)
    async def refund(command: RefundPayment, ctx: StepContext) -> Event:
        return PaymentRefunded(order_id="o", refunded=True)

    assert set(service.steps) == {"inventory.InventoryReserved", "payment.RefundPayment"}

    with pytest.raises(ContractMismatch, match="reads OrderPlaced"):

        @service.step(CHARGE)
        @logged
        async def wrapped_wrong(order: OrderPlaced, ctx: StepContext) -> PaymentCharged:
            raise NotImplementedError


def test_the_undo_of_a_timed_out_step_binds_to_the_same_contract() -> None:
    service = Service("payment")

    @service.compensation(CHARGE, command=VoidOrderCharges)
    async def void(command: VoidOrderCharges, ctx: StepContext) -> PaymentRefunded:
        return PaymentRefunded(order_id=command.order_id, refunded=False)

    assert service.steps["payment.VoidOrderCharges"].compensation

    with pytest.raises(ContractMismatch, match="returns OrderShipped, but its contract says"):

        @service.compensation(CHARGE, command=VoidOrderCharges)
        async def wrong(command: VoidOrderCharges, ctx: StepContext) -> OrderShipped:
            raise NotImplementedError
