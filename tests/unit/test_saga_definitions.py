"""Saga definitions are checked at start-up, and print as text and Mermaid."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import pytest

from contracts.inventory import InventoryReleased, InventoryReserved, ReleaseInventory
from contracts.order_saga import ORDER_SAGA
from contracts.orders import OrderPlaced
from contracts.payment import PaymentCharged
from saga.definition.saga import DefinitionError
from saga.messages.base import Command
from tests.payment_undo import VoidCharge, VoidOrderCharges


def test_the_shipped_order_saga_is_valid() -> None:
    assert ORDER_SAGA.problems() == []
    assert ORDER_SAGA.validate() is ORDER_SAGA


def with_step(index: int, **changes: object) -> list[str]:
    steps = list(ORDER_SAGA.steps)
    steps[index] = replace(steps[index], **changes)  # type: ignore[arg-type]
    return replace(ORDER_SAGA, steps=tuple(steps)).problems()


def test_an_event_no_one_produces_is_reported() -> None:
    problems = with_step(1, started_by=(InventoryReleased,))
    assert any("started by 'inventory.InventoryReleased', which nothing" in p for p in problems)


def test_a_step_without_compensation_must_be_marked_irreversible() -> None:
    problems = with_step(2, compensation=None, compensated_by=())
    assert "step 'ship' can complete but has no compensation and is not marked irreversible" in (
        problems
    )
    assert with_step(2, compensation=None, compensated_by=(), irreversible=True) == []


def test_events_must_belong_to_the_steps_service_and_commands_to_its_owner() -> None:
    problems = with_step(1, completed_by=(InventoryReserved,), compensation=ReleaseInventory)
    assert any("is not an event of service 'payment'" in p for p in problems)
    assert any("is not a command of service 'payment'" in p for p in problems)


def test_compensation_fields_must_be_fillable_from_saga_data() -> None:
    class ReleaseBin(Command):
        message_type: ClassVar[str] = "inventory.ReleaseBin"
        order_id: str
        bin_code: str  # no event of the step carries it

    problems = with_step(0, compensation=ReleaseBin)
    assert (
        "step 'reserve': ReleaseBin needs 'bin_code', which neither its completion nor its"
        " trigger carries (InventoryReserved, OrderPlaced)"
    ) in problems


def test_a_compensation_may_take_the_id_the_step_created_if_it_says_how_to_undo_a_timeout() -> None:
    problems = with_step(1, compensation=VoidCharge)
    assert problems == [
        "step 'charge': when it times out there is no PaymentCharged, and VoidCharge needs"
        " 'charge_id', which only PaymentCharged carries. Say how to undo it then:"
        " on_timeout='park' (an operator decides), or on_timeout=<a command of 'payment'"
        " built from InventoryReserved>"
    ]
    assert with_step(1, compensation=VoidCharge, on_timeout="park") == []
    assert with_step(1, compensation=VoidCharge, on_timeout=VoidOrderCharges) == []
    assert with_step(1, compensation=VoidCharge, on_timeout=VoidCharge) == [
        "step 'charge': on_timeout VoidCharge needs 'charge_id', which its trigger does not"
        " carry (a timed-out step has no completion)"
    ]


def test_terminal_and_start_events_are_checked() -> None:
    problems = replace(ORDER_SAGA, ends_with=PaymentCharged, starts_with=OrderPlaced).problems()
    assert problems == []
    bad = replace(ORDER_SAGA, ends_with=OrderPlaced).problems()
    assert "terminal event 'orders.OrderPlaced' completes no step" in bad


def test_validate_lists_every_problem_in_one_error() -> None:
    broken = replace(ORDER_SAGA, steps=(*ORDER_SAGA.steps, ORDER_SAGA.steps[0]))
    with pytest.raises(DefinitionError, match="step name 'reserve' is used twice"):
        broken.validate()


def test_text_and_mermaid_show_steps_and_compensations() -> None:
    text = ORDER_SAGA.describe()
    assert "2. charge (payment)" in text
    assert "compensation  payment.RefundPayment -> payment.PaymentRefunded" in text
    diagram = ORDER_SAGA.mermaid()
    assert diagram.startswith("flowchart LR")
    assert "reserve -->|InventoryReserved| charge" in diagram
    assert "charge -.->|on failure| undo_charge" in diagram


def test_branch_approval_and_recovery_declarations_are_checked() -> None:
    from dataclasses import replace

    from saga.definition.saga import Join
    from tests.trips.messages import FlightBooked, PointsAwarded, TripBooked
    from tests.trips.sagas import TRIP_V1

    assert TRIP_V1.problems() == []
    steps = {s.name: s for s in TRIP_V1.steps}
    broken = replace(
        TRIP_V1,
        joins=(Join(FlightBooked, after=("flight",)),),
        steps=(
            steps["flight"],
            replace(steps["hotel"], alternative="nowhere"),
            replace(steps["hostel"], started_by=(FlightBooked,)),
            replace(steps["approve"], service="billing", started_by=(TripBooked,)),
            steps["charge"],
            replace(steps["points"], optional=False),
            replace(steps["points"], name="extra", optional=True, completed_by=(PointsAwarded,)),
        ),
    )
    found = "\n".join(broken.problems())
    assert "a join event is published on saga.events" in found
    assert "must wait for at least two steps" in found
    assert "alternative 'nowhere' is not another step" in found
    assert "an approval step is run by service 'saga'" in found
    assert "'saga.TripBooked', which nothing in this saga produces" in found


def test_a_step_started_only_by_an_optional_one_is_refused() -> None:
    from dataclasses import replace

    from tests.trips.sagas import TRIP_V1

    steps = tuple(replace(s, optional=True) if s.name == "charge" else s for s in TRIP_V1.steps)
    found = replace(TRIP_V1, steps=steps).problems()
    assert found == [
        "step 'points' is started only by optional step 'charge': it would never start "
        "when that one fails"
    ]


def test_the_diff_of_two_versions_names_each_change() -> None:
    from saga.definition.diff import diff
    from tests.trips.sagas import TRIP_V1, TRIP_V2

    assert diff(TRIP_V1, TRIP_V1) == []
    assert diff(TRIP_V1, TRIP_V2) == [
        "~ version: 1 -> 2",
        "~ step approve: approval: approval by manager > director, SLA 0:00:03,"
        " deadline 0:00:20 -> approval by ceo, SLA 0:00:03, deadline 0:00:20",
    ]
