"""The coordinator's decisions on the order saga, fact by fact: no broker, no database."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from contracts.inventory import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    ReleaseInventory,
)
from contracts.notification import CustomerNotified
from contracts.order_saga import ORDER_SAGA
from contracts.orders import OrderPlaced
from contracts.payment import PaymentCharged, PaymentFailed, PaymentRefunded, RefundPayment
from contracts.shipping import OrderShipped, ShippingFailed
from saga import Command, CompensationFailed, Event, SagaDefinition, StepFailed
from saga.definition.saga import OnTimeout
from saga.testing import SagaScenario
from tests.payment_undo import VoidCharge, VoidOrderCharges

ORDER = OrderPlaced(order_id="o-1", customer_id="c", amount_cents=900)
RESERVED = InventoryReserved(order_id="o-1", sku="s", quantity=1, amount_cents=900)
CHARGED = PaymentCharged(order_id="o-1", amount_cents=900, charge_id="ch-1")
SHIPPED = OrderShipped(order_id="o-1", parcel_id="p-1")
NOTIFIED = CustomerNotified(order_id="o-1", parcel_id="p-1", notification_id="n")
COMPLETIONS: dict[str, Event] = {
    "reserve": RESERVED,
    "charge": CHARGED,
    "ship": SHIPPED,
    "notify": NOTIFIED,
}
RELEASED = InventoryReleased(order_id="o-1", released=True)
REFUNDED = PaymentRefunded(order_id="o-1", refunded=True)
CONFIRMATIONS: dict[type[Command], Event] = {ReleaseInventory: RELEASED, RefundPayment: REFUNDED}
RELEASE_FAILED = CompensationFailed(
    command_type="inventory.ReleaseInventory", error_type="ConnectionError", attempts=20
)


def order_saga(*completed: str, definition: SagaDefinition = ORDER_SAGA) -> SagaScenario:
    """An order saga that started, and whose ``completed`` steps completed."""
    scenario = SagaScenario(definition, saga_id="o-1")
    scenario.receive(ORDER)
    for step in completed:
        scenario.receive(COMPLETIONS[step])
    return scenario


def test_happy_path_completes_the_saga_and_cancels_its_timers() -> None:
    scenario = order_saga("reserve", "charge", "ship", "notify")
    assert scenario.status == "completed"
    assert [scenario.step(s) for s in ("reserve", "charge", "ship", "notify")] == ["completed"] * 4
    # Notifying cannot be undone: the coordinator starts it once it knows the saga runs.
    scenario.expect_commands(OrderShipped)
    assert scenario.timers == {}, "no step timeout or deadline left behind"


FAILURES: dict[str, tuple[StepFailed, list[type[Command]]]] = {
    "reserve": (InventoryReservationFailed(error_type="Nope", error_message="no"), []),
    "charge": (PaymentFailed(error_type="Nope", error_message="no"), [ReleaseInventory]),
    "ship": (
        ShippingFailed(error_type="Nope", error_message="no"),
        [RefundPayment, ReleaseInventory],
    ),
}


@pytest.mark.parametrize("failing", ["reserve", "charge", "ship"])
def test_a_failure_at_each_step_compensates_exactly_the_completed_steps_in_reverse(
    failing: str,
) -> None:
    order = ["reserve", "charge", "ship"]
    scenario = order_saga(*order[: order.index(failing)])
    failure, undo = FAILURES[failing]
    scenario.receive(failure)
    for command in undo:  # one at a time, each once the previous one is confirmed
        [sent] = scenario.expect_commands(command)
        assert (sent.purpose, sent.payload) == ("compensate", {"order_id": "o-1"})
        scenario.receive(CONFIRMATIONS[command])
    scenario.expect_commands()
    assert scenario.status == "compensated"
    assert scenario.step(failing) == "failed"
    assert scenario.timers == {}


def test_one_compensation_at_a_time_latest_completion_first() -> None:
    scenario = order_saga("reserve", "charge")
    scenario.receive(ShippingFailed(error_type="NoCarrier"))
    scenario.expect_commands(RefundPayment)  # the release waits for the refund
    scenario.receive(REFUNDED)
    scenario.expect_commands(ReleaseInventory)


def test_a_step_that_never_answers_times_out_and_is_compensated_with_its_start_data() -> None:
    scenario = order_saga("reserve")
    assert scenario.timers["step-timeout:charge"] == scenario.now + timedelta(seconds=30)
    scenario.fire("step-timeout:charge")
    assert scenario.step("charge") == "compensating"
    assert scenario.state.steps["charge"].error == "timed out: outcome unknown"
    # Unknown outcome: the charge is undone first (idempotently), then the reservation.
    [refund] = scenario.expect_commands(RefundPayment)
    assert refund.payload == {"order_id": "o-1"}, "built from InventoryReserved"
    scenario.receive(PaymentRefunded(order_id="o-1", refunded=False))
    scenario.expect_commands(ReleaseInventory)
    scenario.receive(RELEASED)
    assert scenario.status == "compensated"


def test_a_timeout_is_a_call_and_advancing_the_clock_fires_what_falls_due() -> None:
    scenario = order_saga("reserve")
    assert scenario.advance(timedelta(seconds=29)) == []
    assert scenario.step("charge") == "running"
    [timed_out] = scenario.advance(timedelta(seconds=1))
    assert "charge timed out (outcome unknown: it will be compensated)" in timed_out.notes
    scenario.expect_commands(RefundPayment)


def test_a_completion_after_compensation_began_is_compensated_too() -> None:
    scenario = order_saga("reserve")
    scenario.fire("step-timeout:charge")
    scenario.receive(PaymentRefunded(order_id="o-1", refunded=False))
    scenario.receive(RELEASED)
    scenario.expect_commands(RefundPayment, ReleaseInventory)
    assert scenario.status == "compensated"
    scenario.receive(CHARGED)  # the charge happened after all
    assert scenario.status == "compensating"
    scenario.expect_commands(RefundPayment)
    scenario.receive(REFUNDED)
    assert scenario.status == "compensated"


def test_a_completion_while_its_compensation_is_in_flight_is_undone_once_more() -> None:
    scenario = order_saga("reserve")
    scenario.fire("step-timeout:charge")
    scenario.expect_commands(RefundPayment)
    scenario.receive(CHARGED)  # read before the refund's confirmation
    assert scenario.state.steps["charge"].compensate_again
    scenario.receive(REFUNDED)
    scenario.expect_commands(RefundPayment)
    scenario.receive(REFUNDED)
    scenario.expect_commands(ReleaseInventory)


def test_a_compensation_that_keeps_failing_is_retried_with_backoff_then_parked() -> None:
    scenario = order_saga("reserve")
    scenario.receive(PaymentFailed(error_type="Declined"))
    [first] = scenario.expect_commands(ReleaseInventory)
    assert first.attempt == 1
    tries = ORDER_SAGA.step("reserve").compensation_retry.maximum_attempts
    assert tries is not None and tries > 1
    delays = []
    for attempt in range(2, tries + 1):
        scenario.receive(RELEASE_FAILED, service="inventory")
        delays.append(scenario.timers["compensation-retry:reserve"] - scenario.now)
        scenario.fire("compensation-retry:reserve")
        [again] = scenario.expect_commands(ReleaseInventory)
        assert again.attempt == attempt
    assert delays[0] == timedelta(seconds=2)
    assert delays == sorted(delays) and delays[-1] > delays[0], "backing off"
    scenario.receive(RELEASE_FAILED, service="inventory")
    assert scenario.status == "parked"
    assert scenario.step("reserve") == "compensation_failed"
    # The operator fixes the cause and retries: the compensation goes out again.
    scenario.retry(by="alice", reason="stock service fixed")
    assert scenario.status == "compensating"
    [fixed] = scenario.expect_commands(ReleaseInventory)
    assert fixed.attempt == 1
    scenario.receive(RELEASED)
    assert scenario.status == "compensated"


def test_a_compensation_not_confirmed_in_time_is_sent_again() -> None:
    scenario = order_saga("reserve")
    scenario.receive(PaymentFailed(error_type="Declined"))
    scenario.expect_commands(ReleaseInventory)
    scenario.fire("compensation-timeout:reserve")
    scenario.fire("compensation-retry:reserve")
    [again] = scenario.expect_commands(ReleaseInventory)
    assert again.attempt == 2


def test_operator_can_skip_a_stuck_compensation_or_resolve_the_saga() -> None:
    scenario = order_saga("reserve", "charge")
    scenario.receive(ShippingFailed(error_type="NoCarrier"))
    scenario.expect_commands(RefundPayment)
    scenario.skip("charge", by="bob", reason="refunded by hand")
    assert scenario.step("charge") == "skipped"
    scenario.expect_commands(ReleaseInventory)
    scenario.resolve(by="bob", reason="closed with the customer")
    assert scenario.status == "resolved"
    assert scenario.state.reason == "resolved by bob (closed with the customer)"


def test_a_finished_saga_is_not_resolved_and_an_unknown_step_is_named() -> None:
    scenario = order_saga("reserve", "charge", "ship", "notify")
    decision = scenario.resolve(by="mallory", reason="rewrite history")
    assert (scenario.status, decision.applied) == ("completed", False)
    assert decision.notes == [
        "resolve by mallory (rewrite history): nothing to do, saga is completed already"
    ]

    parked = order_saga("reserve")
    decision = parked.skip("teleport", by="bob")
    assert (parked.status, decision.applied) == ("running", False)
    assert decision.notes == ["skip teleport by bob: saga order has no step 'teleport'"]
    parked.resolve(by="bob")
    again = parked.resolve(by="bob")
    assert (parked.status, again.applied) == ("resolved", False), "resolved once, not twice"


def test_an_event_before_the_start_event_opens_nothing_and_is_held() -> None:
    scenario = SagaScenario(ORDER_SAGA, saga_id="o-1")
    decision = scenario.receive(RESERVED)
    assert (decision.hold, decision.state, decision.applied) == (True, None, False)
    assert decision.commands == [] and decision.set_timers == [] and decision.events == []
    assert decision.notes == [
        "inventory.InventoryReserved of no saga started yet: held for its start event"
    ]
    with pytest.raises(AssertionError, match="no saga 'o-1' yet"):
        _ = scenario.status
    assert scenario.timers == {}, "no deadline for a saga nobody started"


def test_only_the_start_event_opens_a_saga_timers_and_operators_never_do() -> None:
    for fact in ("step-timeout:charge", "deadline"):
        decision = SagaScenario(ORDER_SAGA, saga_id="o-1").fire(fact, late=True)
        assert (decision.hold, decision.state, decision.applied) == (False, None, False)
    resolved = SagaScenario(ORDER_SAGA, saga_id="o-1").resolve(by="mallory")
    assert (resolved.hold, resolved.state) == (False, None)
    opened = SagaScenario(ORDER_SAGA, saga_id="o-1").receive(ORDER)
    assert (opened.hold, opened.state is not None, opened.notes[0]) == (
        False,
        True,
        "saga started",
    )


def test_an_event_held_before_the_start_event_is_decided_right_after_it() -> None:
    scenario = SagaScenario(ORDER_SAGA, saga_id="o-1")
    scenario.receive(RESERVED)  # read first: its topic was read before the order's
    scenario.receive(ORDER)
    assert scenario.held == []
    assert scenario.status == "running"
    assert (scenario.step("reserve"), scenario.step("charge")) == ("completed", "running")
    assert scenario.notes[1:4] == ["saga started", "reserve started", "reserve completed"]
    scenario.expect_commands()


def test_events_and_timers_after_the_fact_change_nothing() -> None:
    scenario = order_saga("reserve", "charge", "ship")
    before = scenario.state
    assert not scenario.receive(PaymentFailed(error_type="Late")).applied
    assert "step-timeout:charge" not in scenario.timers
    assert not scenario.fire("step-timeout:charge", late=True).applied
    assert scenario.state == before


def test_deadline_compensates_a_saga_that_takes_too_long() -> None:
    scenario = order_saga("reserve")
    assert scenario.timers["deadline"] == scenario.now + timedelta(minutes=10)
    scenario.fire("deadline")
    assert scenario.status == "compensating"
    assert scenario.state.steps["charge"].error == "timed out: outcome unknown"
    scenario.expect_commands(RefundPayment)


def test_generic_step_failure_is_attributed_by_its_service() -> None:
    scenario = order_saga("reserve")
    scenario.receive(StepFailed(error_type="KeyError", error_message="x"), service="payment")
    assert scenario.step("charge") == "failed"
    scenario.expect_commands(ReleaseInventory)


def test_events_read_in_reverse_still_compensate_in_causal_order() -> None:
    # One saga's events travel on different topics: the coordinator may read the
    # shipping failure before the payment it came after, and all of them before the
    # order: held until the order opens the saga, then decided in the order read.
    scenario = SagaScenario(ORDER_SAGA, saga_id="o-1")
    for event in (ShippingFailed(error_type="NoCarrier"), CHARGED, RESERVED):
        assert scenario.receive(event).hold
    scenario.expect_commands()
    scenario.receive(ORDER)
    assert (scenario.step("charge"), scenario.step("reserve")) == ("compensating", "completed")
    scenario.expect_commands(RefundPayment)  # the later step is undone first
    scenario.receive(REFUNDED)
    scenario.expect_commands(ReleaseInventory)
    scenario.receive(RELEASED)
    assert scenario.status == "compensated"


def test_an_undo_waits_for_data_still_in_flight_then_parks_if_it_never_comes() -> None:
    scenario = order_saga()
    scenario.receive(ShippingFailed(error_type="NoCarrier"))  # read before the charge
    assert (scenario.step("charge"), scenario.step("reserve")) == ("compensating", "completed")
    scenario.expect_commands()  # no order id yet: RefundPayment cannot be built
    assert scenario.status == "compensating"
    scenario.receive(CHARGED)
    scenario.expect_commands(RefundPayment)  # sent as soon as the data came

    never = order_saga()
    never.receive(ShippingFailed(error_type="NoCarrier"))
    never.fire("compensation-retry:charge")
    assert never.status == "parked"
    assert never.state.reason == "cannot build payment.RefundPayment: no value for order_id"


# --- on_timeout: how a step whose outcome is unknown is undone -----------------------------


def with_charge(on_timeout: OnTimeout) -> SagaDefinition:
    """The order saga, its charge undone by the charge's id, and by ``on_timeout`` when
    it timed out (no completion, so no id)."""
    steps = list(ORDER_SAGA.steps)
    steps[1] = replace(steps[1], compensation=VoidCharge, on_timeout=on_timeout)
    return replace(ORDER_SAGA, steps=tuple(steps)).validate()


def test_on_timeout_park_leaves_a_timed_out_step_to_an_operator() -> None:
    scenario = order_saga("reserve", definition=with_charge(on_timeout="park"))
    scenario.fire("step-timeout:charge")
    assert scenario.status == "parked"
    assert scenario.step("charge") == "compensation_failed", "its undo waits for an operator"
    assert scenario.state.reason == (
        "step charge timed out: its outcome is unknown (on_timeout='park')"
    )
    scenario.expect_commands()  # nothing is undone until someone looks
    scenario.skip("charge", by="carol", reason="the bank says it never charged")
    scenario.expect_commands(ReleaseInventory)
    scenario.receive(RELEASED)
    assert scenario.status == "compensated"


def test_on_timeout_park_holds_at_the_saga_deadline_too() -> None:
    steps = list(with_charge(on_timeout="park").steps)
    steps[1] = replace(steps[1], reply_timeout=None)  # only the saga's deadline times it out
    definition = replace(ORDER_SAGA, steps=tuple(steps)).validate()
    scenario = order_saga("reserve", definition=definition)
    scenario.fire("deadline")
    assert scenario.status == "parked"
    scenario.expect_commands()
    # The operator found it was charged after all: retry sends its undo (which then
    # cannot be built without the charge's id, so it parks again, saying why).
    scenario.retry(by="carol", reason="charged after all")
    assert scenario.status == "parked"
    assert "no value for charge_id" in (scenario.state.reason or "")


def test_on_timeout_park_still_undoes_a_completed_step_the_usual_way() -> None:
    scenario = order_saga("reserve", "charge", definition=with_charge(on_timeout="park"))
    scenario.receive(ShippingFailed(error_type="NoCarrier"))
    [void] = scenario.expect_commands(VoidCharge)
    assert void.payload == {"charge_id": "ch-1"}


def test_on_timeout_command_undoes_a_timed_out_step_with_what_its_trigger_carried() -> None:
    scenario = order_saga("reserve", definition=with_charge(on_timeout=VoidOrderCharges))
    scenario.fire("step-timeout:charge")
    [void] = scenario.expect_commands(VoidOrderCharges)
    assert (void.purpose, void.payload) == ("compensate", {"order_id": "o-1"})
    scenario.receive(PaymentRefunded(order_id="o-1", refunded=False))
    scenario.expect_commands(ReleaseInventory)


def test_on_timeout_command_is_not_used_once_the_completion_came() -> None:
    scenario = order_saga("reserve", "charge", definition=with_charge(on_timeout=VoidOrderCharges))
    scenario.receive(ShippingFailed(error_type="NoCarrier"))
    [void] = scenario.expect_commands(VoidCharge)
    assert void.payload == {"charge_id": "ch-1"}


def test_evolve_copies_a_state_with_changes_and_refuses_unknown_fields() -> None:
    from saga.coordinator.state import StepState, evolve

    before = StepState(status="running", attempt=1)
    after = evolve(before, status="completed")
    assert (before.status, after.status, after.attempt) == ("running", "completed", 1)
    with pytest.raises(TypeError, match="no field"):
        evolve(before, colour="blue")
