"""``compensation="parallel"``: every undo sent at once, the saga compensated once all
are confirmed; one that cannot be done parks the saga, and the others do not undo that."""

from __future__ import annotations

from dataclasses import replace

import pytest

from contracts.inventory import ReleaseInventory
from contracts.order_saga import ORDER_SAGA
from contracts.payment import PaymentRefunded, RefundPayment
from contracts.shipping import ShippingFailed
from saga import CompensationFailed, SagaDefinition
from saga.definition.saga import DefinitionError
from tests.unit.test_coordinator_decide import REFUNDED, RELEASE_FAILED, RELEASED, order_saga

PARALLEL = replace(ORDER_SAGA, compensation="parallel")
#: Every undo sent once: its first failure parks the saga.
ONE_ATTEMPT = replace(
    PARALLEL,
    steps=[
        replace(s, compensation_retry=replace(s.compensation_retry, maximum_attempts=1))
        for s in PARALLEL.steps
    ],
)


def test_every_compensation_goes_at_once_and_the_saga_ends_when_all_are_confirmed() -> None:
    scenario = order_saga("reserve", "charge", definition=PARALLEL)
    scenario.receive(ShippingFailed(error_type="NoCarrier"))
    sent = scenario.expect_commands(RefundPayment, ReleaseInventory)
    assert [c.purpose for c in sent] == ["compensate", "compensate"]
    assert scenario.step("charge") == scenario.step("reserve") == "compensating"
    scenario.receive(RELEASED)  # confirmations come in any order
    assert scenario.status == "compensating", "the refund is not confirmed yet"
    scenario.expect_commands()
    scenario.receive(REFUNDED)
    assert scenario.status == "compensated"
    assert scenario.timers == {}


def test_the_default_still_undoes_one_at_a_time() -> None:
    assert ORDER_SAGA.compensation == "reverse"
    scenario = order_saga("reserve", "charge")
    scenario.receive(ShippingFailed(error_type="NoCarrier"))
    scenario.expect_commands(RefundPayment)


def test_an_undo_that_runs_out_of_attempts_parks_the_saga_and_the_others_leave_it_parked() -> None:
    scenario = order_saga("reserve", "charge", definition=ONE_ATTEMPT)
    scenario.receive(ShippingFailed(error_type="NoCarrier"))
    scenario.expect_commands(RefundPayment, ReleaseInventory)
    scenario.receive(RELEASE_FAILED, service="inventory")
    assert scenario.status == "parked"
    assert scenario.step("reserve") == "compensation_failed"
    scenario.receive(REFUNDED)  # the other undo was in flight: it is recorded, no more
    assert scenario.step("charge") == "compensated"
    assert scenario.status == "parked", "the release still needs an operator"
    scenario.retry(by="alice", reason="stock service fixed")
    [again] = scenario.expect_commands(ReleaseInventory)
    assert again.attempt == 1
    scenario.receive(RELEASED)
    assert scenario.status == "compensated"


def test_a_late_confirmation_of_the_parked_undo_itself_still_finishes_the_saga() -> None:
    scenario = order_saga("reserve", "charge", definition=ONE_ATTEMPT)
    scenario.receive(ShippingFailed(error_type="NoCarrier"))
    scenario.receive(PaymentRefunded(order_id="o-1", refunded=True))
    scenario.receive(
        CompensationFailed(
            command_type="inventory.ReleaseInventory", error_type="Down", attempts=1
        ),
        service="inventory",
    )
    assert scenario.status == "parked"
    scenario.receive(RELEASED)  # it worked after all
    assert scenario.status == "compensated"


def test_an_unknown_compensation_order_is_refused() -> None:
    with pytest.raises(DefinitionError, match="compensation='sideways'"):
        SagaDefinition(
            name="x",
            starts_with=ORDER_SAGA.starts_with,
            steps=ORDER_SAGA.steps,
            compensation="sideways",  # type: ignore[arg-type]
        )
