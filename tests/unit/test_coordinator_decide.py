"""The coordinator's pure decision function, with plain objects: no broker, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.order_saga import ORDER_SAGA
from saga.coordinator.decide import Decision, Incoming, IncomingKind, decide
from saga.coordinator.state import SagaState

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
ORDER = {"order_id": "o-1", "customer_id": "c", "amount_cents": 900, "currency": "EUR"}
RESERVED = {"order_id": "o-1", "sku": "s", "quantity": 1, "amount_cents": 900}
CHARGED = {"order_id": "o-1", "amount_cents": 900, "charge_id": "ch-1"}
SHIPPED = {"order_id": "o-1", "parcel_id": "p-1"}
NOTIFIED = {"order_id": "o-1", "parcel_id": "p-1", "channel": "email", "notification_id": "n"}
STEP_OF: dict[str, tuple[str, dict[str, Any]]] = {
    "reserve": ("inventory", RESERVED),
    "charge": ("payment", CHARGED),
    "ship": ("shipping", SHIPPED),
    "notify": ("notification", NOTIFIED),
}


class Saga:
    """Feeds facts to ``decide`` and keeps the state, like the shell would."""

    def __init__(self) -> None:
        self.state: SagaState | None = None
        self.commands: list[str] = []
        self.timers: dict[str, datetime] = {}
        self.n = 0
        self.now = T0

    def feed(self, kind: IncomingKind, type_: str, **extra: Any) -> Decision:
        self.n += 1
        self.now += timedelta(seconds=1)
        incoming = Incoming(
            kind=kind,
            message_id=f"m-{self.n}",
            type=type_,
            saga_id="o-1",
            saga_type="order",
            at=self.now,
            **extra,
        )
        decision = decide(self.state, incoming, ORDER_SAGA, self.now)
        self.state = decision.state
        self.commands += [
            f"{c.message_type}({c.payload.get('order_id')})" for c in decision.commands
        ]
        for name in decision.cancel_timers:
            self.timers.pop(name, None)
        for timer in decision.set_timers:
            self.timers[timer.name] = timer.due
        return decision

    def event(self, type_: str, payload: dict[str, Any], service: str | None = None) -> Decision:
        return self.feed("event", type_, payload=payload, service=service)

    def fire(self, timer: str) -> Decision:
        return self.feed("timer", timer)

    def step(self, name: str) -> str:
        assert self.state is not None
        return self.state.steps[name].status

    def error(self, name: str) -> str | None:
        assert self.state is not None
        return self.state.steps[name].error

    @property
    def status(self) -> str:
        assert self.state is not None
        return self.state.status


def run_until(saga: Saga, steps: list[str]) -> None:
    saga.event("orders.OrderPlaced", ORDER)
    completions = {
        "reserve": "inventory.InventoryReserved",
        "charge": "payment.PaymentCharged",
        "ship": "shipping.OrderShipped",
        "notify": "notification.CustomerNotified",
    }
    for name in steps:
        saga.event(completions[name], STEP_OF[name][1], STEP_OF[name][0])


def test_happy_path_completes_the_saga_and_cancels_its_timers() -> None:
    saga = Saga()
    run_until(saga, ["reserve", "charge", "ship", "notify"])
    assert saga.status == "completed"
    assert [saga.step(s) for s in ("reserve", "charge", "ship", "notify")] == ["completed"] * 4
    assert saga.commands == []
    assert saga.timers == {}, "no step timeout or deadline left behind"


FAILURES = {
    "reserve": ("inventory.InventoryReservationFailed", []),
    "charge": ("payment.PaymentFailed", ["inventory.ReleaseInventory(o-1)"]),
    "ship": (
        "shipping.ShippingFailed",
        ["payment.RefundPayment(o-1)", "inventory.ReleaseInventory(o-1)"],
    ),
}


@pytest.mark.parametrize("failing", ["reserve", "charge", "ship"])
def test_a_failure_at_each_step_compensates_exactly_the_completed_steps_in_reverse(
    failing: str,
) -> None:
    saga = Saga()
    order = ["reserve", "charge", "ship"]
    run_until(saga, order[: order.index(failing)])
    failure, expected = FAILURES[failing]
    saga.event(failure, {"error_type": "Nope", "error_message": "no", "attempts": 1})
    confirmations = {
        "inventory.ReleaseInventory(o-1)": (
            "inventory.InventoryReleased",
            {"order_id": "o-1", "released": True},
        ),
        "payment.RefundPayment(o-1)": (
            "payment.PaymentRefunded",
            {"order_id": "o-1", "refunded": True},
        ),
    }
    sent = 0
    while sent < len(saga.commands):  # confirm each compensation as it is sent
        saga.event(*confirmations[saga.commands[sent]])
        sent += 1
    assert saga.commands == expected
    assert saga.status == "compensated"
    assert saga.step(failing) == "failed"
    assert saga.timers == {}


def test_one_compensation_at_a_time_latest_completion_first() -> None:
    saga = Saga()
    run_until(saga, ["reserve", "charge"])
    saga.event("shipping.ShippingFailed", {"error_type": "NoCarrier"})
    assert saga.commands == ["payment.RefundPayment(o-1)"], "release waits for the refund"
    saga.event("payment.PaymentRefunded", {"order_id": "o-1", "refunded": True})
    assert saga.commands[-1] == "inventory.ReleaseInventory(o-1)"


def test_a_step_that_never_answers_times_out_and_is_compensated_with_its_start_data() -> None:
    saga = Saga()
    run_until(saga, ["reserve"])
    assert "step-timeout:charge" in saga.timers
    saga.fire("step-timeout:charge")
    assert saga.step("charge") == "compensating"
    assert saga.error("charge") == "timed out: outcome unknown"
    # Unknown outcome: the charge is undone first (idempotently), then the reservation.
    assert saga.commands == ["payment.RefundPayment(o-1)"]
    saga.event("payment.PaymentRefunded", {"order_id": "o-1", "refunded": False})
    saga.event("inventory.InventoryReleased", {"order_id": "o-1", "released": True})
    assert saga.commands == ["payment.RefundPayment(o-1)", "inventory.ReleaseInventory(o-1)"]
    assert saga.status == "compensated"


def test_a_completion_after_compensation_began_is_compensated_too() -> None:
    saga = Saga()
    run_until(saga, ["reserve"])
    saga.fire("step-timeout:charge")
    saga.event("payment.PaymentRefunded", {"order_id": "o-1", "refunded": False})
    saga.event("inventory.InventoryReleased", {"order_id": "o-1", "released": True})
    assert saga.status == "compensated"
    saga.event("payment.PaymentCharged", CHARGED, "payment")  # the charge happened after all
    assert saga.status == "compensating"
    assert saga.commands[-1] == "payment.RefundPayment(o-1)"
    saga.event("payment.PaymentRefunded", {"order_id": "o-1", "refunded": True})
    assert saga.status == "compensated"


def test_a_compensation_that_keeps_failing_is_retried_with_backoff_then_parked() -> None:
    saga = Saga()
    run_until(saga, ["reserve"])
    saga.event("payment.PaymentFailed", {"error_type": "Declined"})
    tries = ORDER_SAGA.step("reserve").compensation_retry.maximum_attempts
    assert tries is not None and tries > 1
    for attempt in range(1, tries):
        decision = saga.event(
            "saga.CompensationFailed",
            {
                "command_type": "inventory.ReleaseInventory",
                "error_type": "ConnectionError",
                "attempts": 20,
            },
            "inventory",
        )
        assert any(t.name == "compensation-retry:reserve" for t in decision.set_timers)
        saga.fire("compensation-retry:reserve")
        assert len(saga.commands) == attempt + 1
    saga.event(
        "saga.CompensationFailed",
        {
            "command_type": "inventory.ReleaseInventory",
            "error_type": "ConnectionError",
            "attempts": 20,
        },
        "inventory",
    )
    assert saga.status == "parked"
    assert saga.step("reserve") == "compensation_failed"
    # The operator fixes the cause and retries: the compensation goes out again.
    saga.feed("operator", "retry", actor="alice", reason="stock service fixed")
    assert saga.status == "compensating"
    assert len(saga.commands) == tries + 1
    saga.event("inventory.InventoryReleased", {"order_id": "o-1", "released": True})
    assert saga.status == "compensated"


def test_operator_can_skip_a_stuck_compensation_or_resolve_the_saga() -> None:
    saga = Saga()
    run_until(saga, ["reserve", "charge"])
    saga.event("shipping.ShippingFailed", {"error_type": "NoCarrier"})
    saga.feed("operator", "skip:charge", actor="bob", reason="refunded by hand")
    assert saga.step("charge") == "skipped"
    assert saga.commands[-1] == "inventory.ReleaseInventory(o-1)"
    saga.feed("operator", "resolve", actor="bob", reason="closed with the customer")
    assert saga.status == "resolved"
    assert (
        saga.state is not None and saga.state.reason == "resolved by bob (closed with the customer)"
    )


def test_an_event_before_the_start_event_opens_the_saga() -> None:
    saga = Saga()
    saga.event("inventory.InventoryReserved", RESERVED, "inventory")
    assert saga.status == "running"
    assert saga.step("reserve") == "completed"
    assert saga.step("charge") == "running"
    decision = saga.event("orders.OrderPlaced", ORDER)
    assert saga.step("reserve") == "completed"
    assert not decision.commands


def test_events_and_timers_for_a_finished_saga_change_nothing() -> None:
    saga = Saga()
    run_until(saga, ["reserve", "charge", "ship"])
    before = saga.state
    assert not saga.event("payment.PaymentFailed", {"error_type": "Late"}).applied
    assert not saga.fire("step-timeout:charge").applied
    assert saga.state == before


def test_deadline_compensates_a_saga_that_takes_too_long() -> None:
    saga = Saga()
    run_until(saga, ["reserve"])
    assert saga.timers["deadline"] == T0 + timedelta(seconds=1) + timedelta(minutes=10)
    saga.fire("deadline")
    assert saga.status == "compensating"
    assert saga.error("charge") == "timed out: outcome unknown"
    assert saga.commands == ["payment.RefundPayment(o-1)"]


def test_generic_step_failure_is_attributed_by_its_service() -> None:
    saga = Saga()
    run_until(saga, ["reserve"])
    saga.event("saga.StepFailed", {"error_type": "KeyError", "error_message": "x"}, "payment")
    assert saga.step("charge") == "failed"
    assert saga.commands == ["inventory.ReleaseInventory(o-1)"]


def test_events_read_in_reverse_still_compensate_in_causal_order() -> None:
    # One saga's events travel on different topics: the coordinator may read the
    # shipping failure before the payment (and even the order) it came after.
    saga = Saga()
    saga.event(
        "shipping.ShippingFailed", {"order_id": "o-1", "error_type": "NoCarrier"}, "shipping"
    )
    assert saga.commands == ["payment.RefundPayment(o-1)"], "the later step is undone first"
    saga.event("payment.PaymentCharged", CHARGED, "payment")  # arrives late: nothing new
    saga.event("inventory.InventoryReserved", RESERVED, "inventory")
    saga.event("orders.OrderPlaced", ORDER)
    assert saga.commands == ["payment.RefundPayment(o-1)"]
    saga.event("payment.PaymentRefunded", {"order_id": "o-1", "refunded": True})
    assert saga.commands == ["payment.RefundPayment(o-1)", "inventory.ReleaseInventory(o-1)"]
    saga.event("inventory.InventoryReleased", {"order_id": "o-1", "released": True})
    assert saga.status == "compensated"


def test_an_undo_waits_for_data_still_in_flight_then_parks_if_it_never_comes() -> None:
    saga = Saga()
    saga.event("shipping.ShippingFailed", {"error_type": "NoCarrier"}, "shipping")
    assert saga.commands == [], "no order id yet: RefundPayment cannot be built"
    assert saga.status == "compensating"
    saga.event("payment.PaymentCharged", CHARGED, "payment")
    assert saga.commands == ["payment.RefundPayment(o-1)"], "sent as soon as the data came"

    never = Saga()
    never.event("shipping.ShippingFailed", {"error_type": "NoCarrier"}, "shipping")
    never.fire("compensation-retry:charge")
    assert never.status == "parked"
    assert never.state is not None
    assert never.state.reason == "cannot build payment.RefundPayment: no value for order_id"


def test_evolve_copies_a_state_with_changes_and_refuses_unknown_fields() -> None:
    from saga.coordinator.state import StepState, evolve

    before = StepState(status="running", attempt=1)
    after = evolve(before, status="completed")
    assert (before.status, after.status, after.attempt) == ("running", "completed", 1)
    with pytest.raises(TypeError, match="no field"):
        evolve(before, colour="blue")
