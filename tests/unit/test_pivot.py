"""Pivot steps and forward recovery: a step that cannot be undone, and the steps after it.

The shop saga: ``hold`` (undone by ``Release``), ``send`` (the pivot: a sent parcel
stays sent), ``log`` (after the pivot: retried until it completes). And the order
saga, whose last step (``notify``) is its pivot.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

import pytest

from contracts.inventory import InventoryReleased, InventoryReserved, ReleaseInventory
from contracts.notification import NOTIFY, CustomerNotified, NotificationFailed
from contracts.order_saga import ORDER_SAGA
from contracts.orders import OrderCancelled, OrderPlaced
from contracts.payment import PaymentCharged, PaymentFailed, PaymentRefunded, RefundPayment
from contracts.shipping import SHIP, CancelShipment, OrderShipped, ShipmentCancelled
from saga import (
    CancelRefused,
    CancelRequested,
    Command,
    Event,
    SagaDefinition,
    Service,
    Step,
    StepContext,
    StepContract,
    StepFailed,
)
from saga.definition.saga import DefinitionError
from saga.testing import SagaScenario


class Begun(Event):
    message_type: ClassVar[str] = "shop.Begun"
    order_id: str


class Held(Event):
    message_type: ClassVar[str] = "stock.Held"
    order_id: str


class HoldFailed(StepFailed):
    message_type: ClassVar[str] = "stock.HoldFailed"


class Release(Command):
    message_type: ClassVar[str] = "stock.Release"
    order_id: str


class Released(Event):
    message_type: ClassVar[str] = "stock.Released"
    order_id: str


class Sent(Event):
    message_type: ClassVar[str] = "post.Sent"
    order_id: str


class SendFailed(StepFailed):
    message_type: ClassVar[str] = "post.SendFailed"


class Logged(Event):
    message_type: ClassVar[str] = "ledger.Logged"
    order_id: str


class LogFailed(StepFailed):
    message_type: ClassVar[str] = "ledger.LogFailed"


HOLD = StepContract(
    trigger=Begun, completion=Held, failure=HoldFailed, compensation=Release, compensated=Released
)
SEND = StepContract(completion=Sent, failure=SendFailed)
LOG = StepContract(completion=Logged, failure=LogFailed)
TIMEOUT = timedelta(seconds=10)
SHOP = SagaDefinition(
    "shop",
    starts_with=Begun,
    deadline=timedelta(minutes=1),
    steps=[
        Step("hold", HOLD, reply_timeout=TIMEOUT),
        Step("send", SEND, reply_timeout=TIMEOUT),
        Step("log", LOG, reply_timeout=TIMEOUT),
    ],
).validate()

BEGUN = Begun(order_id="o-1")
HELD = Held(order_id="o-1")
SENT = Sent(order_id="o-1")
LOGGED = Logged(order_id="o-1")


def shop(*facts: Event) -> SagaScenario:
    scenario = SagaScenario(SHOP, saga_id="o-1")
    for fact in (BEGUN, *facts):
        scenario.receive(fact)
    return scenario


def test_the_first_step_that_cannot_be_undone_is_the_pivot_and_decides_each_timeout_rule() -> None:
    assert SHOP.pivot is not None and SHOP.pivot.name == "send"
    rules = {s.name: SHOP.timeout_rule(s) for s in SHOP.steps}
    assert rules == {"hold": "compensate", "send": "park", "log": "retry"}
    assert [s.name for s in SHOP.steps if s.started_by_coordinator] == ["send", "log"]
    assert "pivot" in SHOP.describe()


def test_the_coordinator_starts_the_pivot_itself_once_the_saga_still_runs() -> None:
    scenario = shop(HELD)
    [start] = scenario.expect_commands(Held)
    assert (start.purpose, start.service, start.step, start.attempt) == ("start", "post", "send", 1)
    scenario.receive(SENT)
    scenario.expect_commands(Sent)  # log cannot be undone either: started the same way
    scenario.receive(LOGGED)
    assert scenario.status == "completed"


def test_a_step_that_cannot_be_undone_never_starts_for_a_saga_that_compensates() -> None:
    """Payment down longer than its timeout: the stale chain goes on without the pivot."""
    scenario = SagaScenario(ORDER_SAGA, saga_id="o-1")
    scenario.receive(OrderPlaced(order_id="o-1", customer_id="c", amount_cents=900))
    scenario.receive(InventoryReserved(order_id="o-1", sku="s", quantity=1, amount_cents=900))
    scenario.fire("step-timeout:charge")
    scenario.expect_commands(RefundPayment)
    # Payment comes back: it charges, shipping reacts to the charge, and ships.
    scenario.receive(PaymentCharged(order_id="o-1", amount_cents=900, charge_id="ch-1"))
    scenario.receive(OrderShipped(order_id="o-1", parcel_id="p-1"))
    assert scenario.step("notify") == "pending"
    assert "notify: not started, the saga is compensating" in scenario.notes
    # What did run is undone, one at a time: the late charge, the shipment, the stock.
    confirm = {
        RefundPayment.message_type: PaymentRefunded(order_id="o-1", refunded=True),
        CancelShipment.message_type: ShipmentCancelled(order_id="o-1", cancelled=True),
        ReleaseInventory.message_type: InventoryReleased(order_id="o-1", released=True),
    }
    for command in scenario.commands:
        if scenario.status == "compensated":
            break
        scenario.receive(confirm[command.message_type])
    assert scenario.status == "compensated"
    sent = [c.message_type for c in scenario.commands]
    assert OrderShipped.message_type not in sent, "the customer is never told"
    assert CancelShipment.message_type in sent
    assert scenario.step("notify") == "pending"


def test_a_pivot_that_times_out_parks_the_saga_and_undoes_nothing() -> None:
    scenario = shop(HELD)
    scenario.expect_commands(Held)
    scenario.fire("step-timeout:send")
    assert scenario.status == "parked"
    assert scenario.state.reason is not None
    assert "send timed out and cannot be undone: its outcome is unknown" in scenario.state.reason
    scenario.expect_commands()  # hold is not released: the parcel may be on its way
    assert scenario.step("hold") == "completed"


def test_a_parked_pivot_that_answers_late_goes_forward() -> None:
    scenario = shop(HELD)
    scenario.fire("step-timeout:send")
    scenario.receive(SENT)
    assert scenario.status == "running"
    assert scenario.step("send") == "completed"
    scenario.receive(LOGGED)
    assert scenario.status == "completed"


def test_an_operator_retry_starts_a_parked_pivot_again() -> None:
    scenario = shop(HELD)
    scenario.expect_commands(Held)
    scenario.fire("step-timeout:send")
    scenario.retry(by="ops")
    [again] = scenario.expect_commands(Held)
    assert (again.step, again.attempt, again.purpose) == ("send", 2, "start")
    assert scenario.status == "running"
    assert "step-timeout:send" in scenario.timers
    scenario.receive(SENT)
    scenario.receive(LOGGED)
    assert scenario.status == "completed"


def test_the_pivots_definite_failure_compensates_the_steps_before_it() -> None:
    scenario = shop(HELD)
    scenario.receive(SendFailed(error_type="NoCourier", error_message="none today"))
    assert scenario.status == "compensating"
    [undo] = scenario.expect_commands(Held, Release)[1:]
    assert undo.step == "hold"
    scenario.receive(Released(order_id="o-1"))
    assert scenario.status == "compensated"


def test_a_step_after_the_pivot_is_started_again_until_it_completes_never_compensated() -> None:
    scenario = shop(HELD, SENT)
    scenario.expect_commands(Held, Sent)
    scenario.receive(LogFailed(error_type="LedgerDown", error_message="503"))
    assert scenario.status == "running"
    assert "step-retry:log" in scenario.timers
    scenario.fire("step-retry:log")
    [again] = scenario.expect_commands(Sent)
    assert (again.step, again.service, again.attempt) == ("log", "ledger", 2)
    scenario.fire("step-timeout:log")  # no answer this time: started again too
    scenario.fire("step-retry:log")
    scenario.expect_commands(Sent)
    scenario.receive(LOGGED)
    assert scenario.status == "completed"
    assert not any(c.purpose == "compensate" for c in scenario.commands)


def test_a_step_after_the_pivot_parks_the_saga_when_its_attempts_run_out() -> None:
    scenario = shop(HELD, SENT)
    for _ in range(20):
        scenario.receive(LogFailed(error_type="LedgerDown", error_message="503"))
        if scenario.status == "parked":
            break
        scenario.fire("step-retry:log")
    assert scenario.status == "parked"
    assert scenario.state.reason is not None and "attempts exhausted" in scenario.state.reason
    assert scenario.step("log") == "failed"
    assert not any(c.purpose == "compensate" for c in scenario.commands)
    scenario.retry(by="ops")  # an operator starts it again: a fresh round of attempts
    assert scenario.status == "running"
    scenario.receive(LOGGED)
    assert scenario.status == "completed"


def test_the_deadline_after_the_pivot_started_undoes_nothing() -> None:
    scenario = shop(HELD)
    scenario.fire("deadline")
    assert scenario.status == "running"
    scenario.expect_commands(Held)
    scenario.receive(SENT)
    scenario.receive(LOGGED)
    assert scenario.status == "completed"


def test_an_irreversible_step_completing_after_compensation_began_parks_with_the_reason() -> None:
    """The pivot's first attempt fails while a second one is on its way; that one sends."""
    retried = SagaDefinition(
        "shop",
        starts_with=Begun,
        steps=[
            Step("hold", HOLD, reply_timeout=TIMEOUT),
            Step("send", SEND, reply_timeout=TIMEOUT, on_timeout="retry"),
        ],
    ).validate()
    scenario = SagaScenario(retried, saga_id="o-1")
    scenario.receive(BEGUN)
    scenario.receive(HELD)
    scenario.fire("step-timeout:send")
    scenario.fire("step-retry:send")
    scenario.expect_commands(Held, Held)  # started, and started again
    scenario.receive(SendFailed(error_type="NoCourier", error_message="first attempt"))
    assert scenario.status == "compensating"
    assert "step-retry:send" not in scenario.timers
    scenario.receive(SENT)  # the second attempt sent the parcel
    scenario.receive(Released(order_id="o-1"))
    assert scenario.status == "parked", "never 'compensated' with an effect that stays"
    assert scenario.state.reason is not None
    assert "send cannot be undone and completed (or may have) after compensation began" in (
        scenario.state.reason
    )
    assert scenario.state.steps["send"].completed_late
    assert scenario.timers == {} or set(scenario.timers) <= {"deadline"}


def test_a_step_beside_the_pivot_an_approval_after_it_and_retry_before_it_are_refused() -> None:
    beside = SagaDefinition(
        "fan-out",
        starts_with=Begun,
        steps=[
            Step("hold", HOLD),
            Step("send", StepContract(trigger=Begun, completion=Sent, failure=SendFailed)),
        ],
        ends_with=Sent,
    )
    assert any("step 'hold' runs beside the pivot 'send'" in p for p in beside.problems())
    early = SagaDefinition(
        "shop",
        starts_with=Begun,
        steps=[Step("hold", HOLD, on_timeout="retry"), Step("send", SEND), Step("log", LOG)],
    )
    assert any("on_timeout='retry' is for the pivot" in p for p in early.problems())


def test_the_order_sagas_notification_timing_out_parks_it_with_nothing_undone() -> None:
    scenario = SagaScenario(ORDER_SAGA, saga_id="o-1")
    scenario.receive(OrderPlaced(order_id="o-1", customer_id="c", amount_cents=900))
    scenario.receive(InventoryReserved(order_id="o-1", sku="s", quantity=1, amount_cents=900))
    scenario.receive(PaymentCharged(order_id="o-1", amount_cents=900, charge_id="ch-1"))
    scenario.receive(OrderShipped(order_id="o-1", parcel_id="p-1"))
    scenario.expect_commands(OrderShipped)
    scenario.fire("step-timeout:notify")
    assert scenario.status == "parked"
    scenario.expect_commands()  # neither refund nor release: the mail may be out
    scenario.receive(CustomerNotified(order_id="o-1", parcel_id="p-1", notification_id="n"))
    assert scenario.status == "completed"
    # And a definite failure of the notification compensates what came before it.
    failing = SagaScenario(ORDER_SAGA, saga_id="o-2")
    failing.receive(OrderPlaced(order_id="o-2", customer_id="c", amount_cents=900))
    failing.receive(InventoryReserved(order_id="o-2", sku="s", quantity=1, amount_cents=900))
    failing.receive(PaymentCharged(order_id="o-2", amount_cents=900, charge_id="ch-2"))
    failing.receive(OrderShipped(order_id="o-2", parcel_id="p-2"))
    failing.receive(NotificationFailed(error_type="Bounced", error_message="no mailbox"))
    failing.expect_commands(OrderShipped, CancelShipment)


@pytest.mark.parametrize("rule", ["compensate", ReleaseInventory])
def test_a_step_that_cannot_be_undone_may_not_be_compensated_on_timeout(rule: object) -> None:
    steps = [*ORDER_SAGA.steps[:3], Step("notify", NOTIFY, on_timeout=rule)]  # type: ignore[arg-type]
    problems = SagaDefinition("order", starts_with=OrderPlaced, steps=steps).problems()
    assert any(
        "step 'notify' cannot be undone: when it times out it may have run, so on_timeout"
        " must be 'park' (an operator decides) or 'retry'" in p
        for p in problems
    ), problems


def test_a_step_after_the_pivot_can_be_neither_optional_nor_compensated_on_timeout() -> None:
    steps = [
        Step("hold", HOLD),
        Step("send", SEND),
        Step("log", LOG, optional=True, on_timeout="compensate"),
    ]
    problems = SagaDefinition("shop", starts_with=Begun, steps=steps).problems()
    assert any("comes after the pivot 'send' and is never compensated" in p for p in problems)
    assert any("it can be neither optional nor replaced by an alternative" in p for p in problems)


def test_an_irreversible_step_needs_a_contract_its_service_binds_too() -> None:
    loose = Step(
        "send", started_by=(Held,), completed_by=(Sent,), failed_by=(SendFailed,), irreversible=True
    )
    problems = SagaDefinition(
        "shop", starts_with=Begun, steps=[Step("hold", HOLD), loose]
    ).problems()
    assert any("bind it to a StepContract without a compensation" in p for p in problems)
    with pytest.raises(DefinitionError, match="its contract has a compensation"):
        Step("ship", SHIP, irreversible=True)


# --- cancellation ------------------------------------------------------------------------

CANCEL = OrderCancelled(order_id="o-1", reason="changed my mind", requested_by="alice")


def placed(*facts: Event) -> SagaScenario:
    scenario = SagaScenario(ORDER_SAGA, saga_id="o-1")
    scenario.receive(OrderPlaced(order_id="o-1", customer_id="c", amount_cents=900))
    for fact in facts:
        scenario.receive(fact)
    return scenario


RESERVED = InventoryReserved(order_id="o-1", sku="s", quantity=1, amount_cents=900)
CHARGED = PaymentCharged(order_id="o-1", amount_cents=900, charge_id="ch-1")
SHIPPED = OrderShipped(order_id="o-1", parcel_id="p-1")


def test_a_cancel_before_the_pivot_compensates_completed_steps_in_reverse() -> None:
    scenario = placed(RESERVED, CHARGED)
    scenario.receive(CANCEL)
    assert scenario.status == "compensating"
    assert scenario.state.reason == "cancelled by alice (changed my mind)"
    scenario.expect_commands()  # shipping is at work: its outcome decides what to undo
    scenario.receive(SHIPPED)  # shipped: undone first; the customer is never notified
    scenario.expect_commands(CancelShipment)
    scenario.receive(ShipmentCancelled(order_id="o-1", cancelled=True))
    scenario.expect_commands(RefundPayment)
    scenario.receive(PaymentRefunded(order_id="o-1", refunded=True))
    scenario.expect_commands(ReleaseInventory)
    scenario.receive(InventoryReleased(order_id="o-1", released=True))
    assert scenario.status == "compensated"
    assert "compensating: cancelled by alice (changed my mind)" in scenario.notes


def test_a_cancel_waits_for_a_step_in_flight_and_the_pivot_never_starts() -> None:
    scenario = placed(RESERVED)  # charge is running
    scenario.receive(CANCEL)
    scenario.expect_commands()  # waiting for the charge's outcome
    scenario.receive(CHARGED)  # it charged after all: undone too
    scenario.expect_commands(RefundPayment)
    scenario.receive(SHIPPED)  # shipping reacted to the charge: undone, never notified
    assert OrderShipped.message_type not in [c.message_type for c in scenario.commands]


def test_a_cancel_after_the_pivot_started_is_refused_with_the_reason_and_announced() -> None:
    scenario = placed(RESERVED, CHARGED, SHIPPED)
    scenario.expect_commands(OrderShipped)  # the pivot started
    scenario.receive(CANCEL)
    assert scenario.status == "running"
    [refused] = scenario.expect_published(CancelRefused)
    assert refused.payload["reason"] == (
        "its pivot notify started (it cannot be undone): the saga only goes forward"
    )
    assert refused.payload["requested_by"] == "alice"
    assert any("cancel by alice (changed my mind) refused" in n for n in scenario.notes)


def test_an_operator_cancels_and_a_finished_saga_refuses_it() -> None:
    scenario = placed(RESERVED)
    decision = scenario.cancel(by="ops", reason="fraud suspected")
    assert decision.applied
    assert scenario.state.reason == "cancelled by ops (fraud suspected)"
    scenario.receive(PaymentFailed(error_type="Declined", error_message="no"))
    scenario.receive(InventoryReleased(order_id="o-1", released=True))
    assert scenario.status == "compensated"
    again = scenario.cancel(by="ops")
    assert not again.applied
    assert "cancel by ops refused: saga is compensated already" in again.notes


def test_cancelled_by_must_be_an_event_of_the_starter() -> None:
    from dataclasses import replace

    class Sneaky(CancelRequested):
        message_type: ClassVar[str] = "payment.Sneaky"

    problems = replace(ORDER_SAGA, cancelled_by=Sneaky).problems()
    assert any(
        "cancelled_by 'payment.Sneaky' must be an event of the service" in p for p in problems
    )


# --- the service side ------------------------------------------------------------------


def test_a_service_reads_the_trigger_of_a_step_it_cannot_undo_from_its_commands_topic() -> None:

    service = Service("notification")

    @service.step(NOTIFY)
    async def notify(shipped: OrderShipped, ctx: StepContext) -> CustomerNotified:
        raise AssertionError("not run here")

    assert service.steps[OrderShipped.message_type].by_coordinator
    assert service.topics == ["notification.commands"], "never shipping.events"

    shipping = Service("shipping")

    @shipping.step(SHIP)
    async def ship(charged: PaymentCharged, ctx: StepContext) -> OrderShipped:
        raise AssertionError("not run here")

    assert not shipping.steps[PaymentCharged.message_type].by_coordinator
    # Its own trigger's topic, and its commands topic (where a retry past a pivot comes).
    assert shipping.topics == ["payment.events", "shipping.commands"]


async def test_a_trigger_taken_from_the_commands_topic_only_is_skipped_on_its_own_topic() -> None:
    from aiokafka import ConsumerRecord

    from saga.kafka.intake import Intake
    from saga.messages.codec import encode
    from saga.messages.envelope import Envelope
    from saga.messages.registry import MessageRegistry

    encoded = encode(
        Envelope(payload=SHIPPED, saga_id="o-1", saga_type="order", source="/services/shipping")
    )
    intake = Intake(
        group_id="notification",
        registry=MessageRegistry([OrderShipped]),
        accepts={OrderShipped.message_type}.__contains__,
        answers_for=["notification.commands"],
        only_from={OrderShipped.message_type: "notification.commands"},
        verifier=None,
        security_topic="saga.security.dlq",
        publisher=None,  # type: ignore[arg-type]  # nothing is dead-lettered here
        stopping=lambda: False,
    )

    def record(topic: str) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord(
            topic, 0, 7, 0, 0, encoded.key, encoded.value, None, 0, 0, list(encoded.headers)
        )

    skipped, _ = await intake.read(record("shipping.events"))
    assert skipped is None
    taken, _ = await intake.read(record("notification.commands"))
    assert taken is not None and taken.type == OrderShipped.message_type


def test_a_retry_after_the_pivot_failed_redoes_the_compensation_never_the_pivot() -> None:
    scenario = shop(HELD)
    scenario.receive(SendFailed(error_type="NoCourier", error_message="none"))
    for _ in range(20):  # the release is never confirmed: the saga parks
        if scenario.status == "parked":
            break
        scenario.fire(next(iter(sorted(scenario.timers, key=scenario.timers.__getitem__))))
    assert scenario.status == "parked"
    scenario.expect_commands(*[c.message_type for c in scenario.commands])
    scenario.retry(by="ops")
    [again] = scenario.expect_commands(Release)
    assert again.purpose == "compensate"
    assert scenario.step("send") == "failed"


def test_skipping_a_parked_pivot_that_later_steps_wait_for_is_refused() -> None:
    scenario = shop(HELD)
    scenario.fire("step-timeout:send")
    decision = scenario.skip("send", by="ops", reason="sent by hand")
    assert not decision.applied
    assert "refused: log start(s) from its completion; retry it" in decision.notes[-1]
    assert scenario.status == "parked"


def test_a_rollback_reads_rows_that_a_later_version_wrote() -> None:
    from saga.coordinator.state import StepState

    row = {**StepState("completed", starts=2).to_json(), "added_later": True}
    assert StepState.from_json(row) == StepState("completed", starts=2)


async def test_the_in_memory_system_runs_a_coordinator_started_step_once() -> None:
    """The post service reads stock.events (for Released) where the pivot's trigger is."""
    from saga.testing import InMemorySagaSystem

    stock, post = Service("stock"), Service("post")
    ran: list[str] = []

    @stock.step(HOLD)
    async def hold(begun: Begun, ctx: StepContext) -> Held:
        return Held(order_id=begun.order_id)

    @post.step(SEND)
    async def send(held: Held, ctx: StepContext) -> Sent:
        ran.append(held.order_id)
        return Sent(order_id=held.order_id)

    @post.on(Released)
    async def noted(released: Released, ctx: StepContext) -> None:
        return None

    assert "stock.events" in post.topics
    definition = SagaDefinition(
        "post", starts_with=Begun, steps=[Step("hold", HOLD), Step("send", SEND)]
    )
    system = InMemorySagaSystem(definition, [stock, post])
    await system.start_saga(BEGUN, saga_id="o-1")
    await system.run_until_quiet()
    assert system.state("o-1").status == "completed"
    assert ran == ["o-1"], "once, from the coordinator's command"
