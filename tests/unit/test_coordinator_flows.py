"""Branches, joins, alternatives, optional steps, approvals and orchestration, decided
by the pure ``decide`` on plain objects (the trip saga of ``tests.trips``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.order_saga import ORDER_SAGA
from saga.coordinator.decide import Decision, Incoming, IncomingKind, decide
from saga.coordinator.state import SagaState
from saga.definition.saga import SagaDefinition, SagaMode
from tests.trips.sagas import TRIP_V1

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TRIP = {"trip_id": "t-1", "amount_cents": 5000}
DONE = {
    "flight": ("flights.FlightBooked", {"trip_id": "t-1", "flight_ref": "f"}),
    "hotel": ("hotels.HotelBooked", {"trip_id": "t-1", "hotel_ref": "h"}),
    "hostel": ("hotels.HostelBooked", {"trip_id": "t-1", "hotel_ref": "y"}),
    "charge": ("billing.TravellerCharged", {"trip_id": "t-1", "amount_cents": 5000}),
    "points": ("loyalty.PointsAwarded", {"trip_id": "t-1", "points": 50}),
}
FAILED = {
    "flight": "flights.FlightFailed",
    "hotel": "hotels.HotelFailed",
    "hostel": "hotels.HostelFailed",
    "charge": "billing.ChargeFailed",
    "points": "loyalty.PointsFailed",
}
UNDONE = {
    "flight": "flights.FlightCancelled",
    "hotel": "hotels.HotelCancelled",
    "hostel": "hotels.HostelCancelled",
    "charge": "billing.TravellerRefunded",
}


class Flow:
    """Feeds facts to ``decide`` for one saga and keeps what the shell would keep."""

    def __init__(
        self, definition: SagaDefinition = TRIP_V1, mode: SagaMode = "choreography"
    ) -> None:
        self.definition = definition
        self.mode = mode
        self.state: SagaState | None = None
        self.sent: list[str] = []  # "<purpose> <type> -> <service>"
        self.published: list[str] = []
        self.tasks: list[str] = []
        self.timers: dict[str, datetime] = {}
        self.now = T0
        self.n = 0

    def feed(self, kind: IncomingKind, type_: str, **extra: Any) -> Decision:
        self.n += 1
        self.now += timedelta(seconds=1)
        incoming = Incoming(
            kind, f"m-{self.n}", type_, "t-1", self.definition.name, self.now, **extra
        )
        decision = decide(self.state, incoming, self.definition, self.now, mode=self.mode)
        self.state = decision.state
        for c in decision.commands:
            self.sent.append(
                f"{c.purpose} {c.message_type}" + (f" -> {c.service}" if c.service else "")
            )
        self.published += [e.message_type for e in decision.events]
        self.tasks += [
            f"{t.change} {t.assignee}" + (f" by {t.by}" if t.by else "") for t in decision.tasks
        ]
        for name in decision.cancel_timers:
            self.timers.pop(name, None)
        for timer in decision.set_timers:
            self.timers[timer.name] = timer.due
        return decision

    def start(self) -> None:
        self.feed("event", "trips.TripRequested", payload=dict(TRIP))

    def done(self, step: str) -> None:
        type_, payload = DONE[step]
        self.feed("event", type_, payload=payload, service=type_.split(".")[0])

    def fail(self, step: str) -> None:
        type_ = FAILED[step]
        self.feed(
            "event", type_, payload={"error_type": "Unavailable"}, service=type_.split(".")[0]
        )

    def undone(self, step: str) -> None:
        self.feed("event", UNDONE[step], payload={"trip_id": "t-1", "cancelled": True})

    def fire(self, timer: str) -> None:
        assert timer in self.timers, (timer, sorted(self.timers))
        self.feed("timer", timer)

    def operator(self, action: str, actor: str, reason: str | None = None) -> None:
        self.feed("operator", action, actor=actor, reason=reason)

    def step(self, name: str) -> str:
        assert self.state is not None
        return self.state.steps[name].status

    @property
    def status(self) -> str:
        assert self.state is not None
        return self.state.status


def booked() -> Flow:
    flow = Flow()
    flow.start()
    flow.done("flight")
    flow.done("hotel")
    return flow


def test_both_branches_start_together_and_the_join_waits_for_both() -> None:
    flow = Flow()
    flow.start()
    assert (flow.step("flight"), flow.step("hotel")) == ("running", "running")
    flow.done("flight")
    assert flow.published == [], "the hotel is not booked yet"
    flow.done("hotel")
    assert flow.published == ["saga.TripBooked", "saga.TaskOpened"]
    assert flow.step("approve") == "running", "the join event started the approval"


def test_an_approval_in_time_continues_the_saga_to_completion() -> None:
    flow = booked()
    assert flow.tasks == ["opened manager"]
    assert flow.published[-1] == "saga.TaskOpened", "so that someone can tell the manager"
    assert {"approval-sla:approve", "approval-deadline:approve"} <= set(flow.timers)
    flow.operator("approve:approve", actor="manager", reason="fine")
    assert flow.tasks[-1] == "approved manager by manager"
    assert flow.published[-1] == "saga.TripApproved"
    assert flow.step("charge") == "running"
    assert "approval-sla:approve" not in flow.timers
    flow.done("charge")
    flow.done("points")
    assert flow.status == "completed"


def test_an_approval_past_its_sla_is_escalated_then_rejected_at_the_deadline() -> None:
    flow = booked()
    flow.fire("approval-sla:approve")
    assert flow.tasks[-1] == "escalated director by coordinator"
    assert flow.published[-1] == "saga.TaskEscalated"
    assert flow.state is not None and flow.state.steps["approve"].assignee == "director"
    flow.fire("approval-sla:approve")  # nobody after the director: it stays with them
    assert flow.state.steps["approve"].assignee == "director"
    flow.fire("approval-deadline:approve")
    assert flow.tasks[-1] == "rejected director by deadline"
    assert flow.published[-1] == "saga.TripRejected"
    assert flow.status == "compensating"
    assert flow.sent == ["compensate hotels.CancelHotel"], "latest completion first"
    flow.undone("hotel")
    assert flow.sent[-1] == "compensate flights.CancelFlight"
    flow.undone("flight")
    assert flow.status == "compensated"


def test_a_rejection_compensates_and_a_decision_on_a_closed_task_does_nothing() -> None:
    flow = booked()
    flow.operator("reject:approve", actor="manager", reason="too dear")
    assert flow.status == "compensating"
    assert flow.state is not None and "too dear" in (flow.state.reason or "")
    before = flow.state
    flow.operator("approve:approve", actor="director")
    assert flow.state.steps == before.steps, "closed: the late approval changes nothing"


def test_a_failed_branch_compensates_the_completed_one() -> None:
    flow = Flow()
    flow.start()
    flow.done("hotel")
    flow.fail("flight")
    assert flow.status == "compensating"
    assert flow.sent == ["compensate hotels.CancelHotel"]
    flow.undone("hotel")
    assert flow.status == "compensated"


def test_a_branch_in_flight_is_waited_for_and_undone_when_it_completes_late() -> None:
    flow = Flow()
    flow.start()
    flow.fail("flight")
    assert flow.status == "compensating" and flow.sent == [], "the hotel is still in flight"
    flow.done("hotel")  # completes after the failure
    assert flow.sent == ["compensate hotels.CancelHotel"]
    flow.undone("hotel")
    assert flow.status == "compensated"


def test_a_branch_in_flight_that_never_answers_is_undone_at_its_timeout() -> None:
    flow = Flow()
    flow.start()
    flow.fail("flight")
    flow.fire("step-timeout:hotel")
    assert flow.step("hotel") == "compensating"
    assert flow.sent == ["compensate hotels.CancelHotel"], "outcome unknown: undone"


def test_a_failed_step_takes_its_alternative_before_compensating() -> None:
    flow = Flow()
    flow.start()
    flow.done("flight")
    flow.fail("hotel")
    assert flow.status == "running"
    assert flow.sent == ["start hotels.BookHostel -> hotels"]
    assert flow.step("hostel") == "running"
    flow.done("hostel")
    assert flow.published[0] == "saga.TripBooked", "the alternative satisfies the join"
    flow.operator("approve:approve", actor="manager")
    flow.done("charge")
    flow.done("points")
    assert flow.status == "completed"
    assert flow.step("hotel") == "failed" and flow.step("hostel") == "completed"


def test_a_join_short_of_data_waits_for_the_start_event_read_late() -> None:
    flow = Flow()
    # The branches answered before the coordinator read the trip request (another topic).
    flow.done("flight")
    flow.done("hotel")
    assert flow.published == [], "TripBooked needs amount_cents, which only the request has"
    assert flow.status == "running"
    flow.start()
    assert flow.published == ["saga.TripBooked", "saga.TaskOpened"]
    assert flow.step("approve") == "running"


def test_an_alternative_short_of_data_waits_for_the_start_event_read_late() -> None:
    flow = Flow()
    # The hotel's failure was read before the trip request (another topic): BookHostel
    # needs the trip_id only the request carries.
    flow.fail("hotel")
    assert flow.sent == [], "no BookHostel without its trip_id"
    assert flow.step("hostel") == "running" and flow.status == "running"
    assert "step-timeout:hostel" in flow.timers, "a safety net while it waits"
    flow.start()
    assert flow.sent == ["start hotels.BookHostel -> hotels"]
    assert flow.state is not None
    hostel = flow.state.steps["hostel"]
    assert hostel.data == {"trip_id": "t-1"} and not hostel.waiting_for_data
    assert flow.step("flight") == "running"
    flow.done("flight")
    flow.done("hostel")
    assert flow.published[0] == "saga.TripBooked"


def test_an_alternative_whose_data_never_comes_fails_unsent_and_the_saga_compensates() -> None:
    flow = Flow()
    flow.fail("hotel")
    flow.fire("step-timeout:hostel")
    assert flow.step("hostel") == "failed", "never sent: not timed out, nothing to undo"
    assert flow.status == "compensated"
    assert flow.sent == [], "neither BookHostel nor CancelHostel"


def test_an_alternative_waiting_for_data_is_dropped_when_the_saga_compensates() -> None:
    flow = Flow()
    flow.fail("hotel")  # BookHostel waits for the trip request
    flow.fail("flight")
    assert flow.step("hostel") == "failed", "never sent: nothing in flight to wait for"
    assert flow.status == "compensated"
    assert "step-timeout:hostel" not in flow.timers
    assert flow.sent == []


def test_when_the_alternative_fails_too_the_saga_compensates() -> None:
    flow = Flow()
    flow.start()
    flow.done("flight")
    flow.fail("hotel")
    flow.fail("hostel")
    assert flow.status == "compensating"
    assert flow.sent[-1] == "compensate flights.CancelFlight"


def test_an_optional_steps_failure_still_completes_the_saga() -> None:
    flow = booked()
    flow.operator("approve:approve", actor="manager")
    flow.done("charge")
    flow.fail("points")
    assert flow.status == "completed"
    assert flow.step("points") == "failed"
    assert not any(c.startswith("compensate") for c in flow.sent)


def test_an_optional_step_that_times_out_does_not_fail_the_saga_either() -> None:
    flow = booked()
    flow.operator("approve:approve", actor="manager")
    flow.done("charge")
    flow.fire("step-timeout:points")
    assert flow.status == "completed"


def test_a_saga_keeps_the_definition_version_it_started_with() -> None:
    flow = Flow(replace(TRIP_V1, version=7))
    flow.start()
    assert flow.state is not None and flow.state.definition_version == 7


ORDER = {"order_id": "o-1", "customer_id": "c", "amount_cents": 900, "currency": "EUR"}
RESERVED = {"order_id": "o-1", "sku": "s", "quantity": 1, "amount_cents": 900}
CHARGED = {"order_id": "o-1", "amount_cents": 900, "charge_id": "ch-1"}


def test_in_orchestration_mode_the_coordinator_sends_each_step_its_trigger() -> None:
    flow = Flow(ORDER_SAGA, mode="orchestration")
    flow.feed("event", "orders.OrderPlaced", payload=ORDER)
    assert flow.sent == ["start orders.OrderPlaced -> inventory"]
    flow.feed("event", "inventory.InventoryReserved", payload=RESERVED, service="inventory")
    assert flow.sent[-1] == "start inventory.InventoryReserved -> payment"
    flow.feed(
        "event", "payment.PaymentFailed", payload={"error_type": "CardDeclined"}, service="payment"
    )
    assert flow.sent[-1] == "compensate inventory.ReleaseInventory", "nothing more is started"
    assert flow.status == "compensating"


def test_in_choreography_mode_the_coordinator_only_watches() -> None:
    flow = Flow(ORDER_SAGA)
    flow.feed("event", "orders.OrderPlaced", payload=ORDER)
    flow.feed("event", "inventory.InventoryReserved", payload=RESERVED, service="inventory")
    flow.feed("event", "payment.PaymentCharged", payload=CHARGED, service="payment")
    assert flow.sent == []
