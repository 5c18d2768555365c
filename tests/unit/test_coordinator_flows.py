"""Branches, joins, alternatives, optional steps, approvals and orchestration, decided
fact by fact (the trip saga of ``tests.trips``, and the order saga)."""

from __future__ import annotations

from dataclasses import replace

from contracts.inventory import InventoryReserved, ReleaseInventory
from contracts.order_saga import ORDER_SAGA
from contracts.orders import OrderPlaced
from contracts.payment import PaymentCharged, PaymentFailed
from saga import Approval, Event, SagaDefinition, StepFailed, TaskEscalated, TaskOpened
from saga.testing import SagaScenario
from tests.trips.messages import (
    BookHostel,
    CancelFlight,
    CancelHotel,
    ChargeFailed,
    FlightBooked,
    FlightCancelled,
    FlightFailed,
    HostelBooked,
    HostelFailed,
    HotelBooked,
    HotelCancelled,
    HotelFailed,
    PointsAwarded,
    PointsFailed,
    TravellerCharged,
    TripApproved,
    TripBooked,
    TripRejected,
    TripRequested,
)
from tests.trips.sagas import TRIP_V1

REQUEST = TripRequested(trip_id="t-1", amount_cents=5000)
DONE: dict[str, Event] = {
    "flight": FlightBooked(trip_id="t-1", flight_ref="f"),
    "hotel": HotelBooked(trip_id="t-1", hotel_ref="h"),
    "hostel": HostelBooked(trip_id="t-1", hotel_ref="y"),
    "charge": TravellerCharged(trip_id="t-1", amount_cents=5000),
    "points": PointsAwarded(trip_id="t-1", points=50),
}
FAILED: dict[str, StepFailed] = {
    "flight": FlightFailed(error_type="Unavailable"),
    "hotel": HotelFailed(error_type="Unavailable"),
    "hostel": HostelFailed(error_type="Unavailable"),
    "charge": ChargeFailed(error_type="Unavailable"),
    "points": PointsFailed(error_type="Unavailable"),
}
FLIGHT_CANCELLED = FlightCancelled(trip_id="t-1", cancelled=True)
HOTEL_CANCELLED = HotelCancelled(trip_id="t-1", cancelled=True)


def _approval() -> Approval:
    found = TRIP_V1.step("approve").approval
    assert found is not None
    return found


#: Manager, then director; an SLA of 3 s, a deadline of 20 s.
APPROVAL = _approval()


def trip(definition: SagaDefinition = TRIP_V1) -> SagaScenario:
    return SagaScenario(definition, saga_id="t-1")


def requested() -> SagaScenario:
    scenario = trip()
    scenario.receive(REQUEST)
    return scenario


def booked() -> SagaScenario:
    """Flight and hotel booked: the join started the approval."""
    scenario = requested()
    scenario.receive(DONE["flight"])
    scenario.receive(DONE["hotel"])
    scenario.expect_published(TripBooked, TaskOpened)
    return scenario


def test_both_branches_start_together_and_the_join_waits_for_both() -> None:
    scenario = requested()
    assert (scenario.step("flight"), scenario.step("hotel")) == ("running", "running")
    scenario.receive(DONE["flight"])
    scenario.expect_published()  # the hotel is not booked yet
    scenario.receive(DONE["hotel"])
    [joined, _] = scenario.expect_published(TripBooked, TaskOpened)
    assert joined.payload == {"trip_id": "t-1", "amount_cents": 5000}
    assert scenario.step("approve") == "running", "the join event started the approval"


def test_an_approval_in_time_continues_the_saga_to_completion() -> None:
    scenario = booked()
    [opened] = scenario.expect_tasks("opened")
    assert opened.assignee == "manager"
    assert opened.sla_due == scenario.now + APPROVAL.sla
    assert {"approval-sla:approve", "approval-deadline:approve"} <= set(scenario.timers)
    scenario.approve("approve", by="manager", reason="fine")
    [approved] = scenario.expect_tasks("approved")
    assert (approved.assignee, approved.by) == ("manager", "manager")
    scenario.expect_published(TripApproved)
    assert scenario.step("charge") == "running"
    assert "approval-sla:approve" not in scenario.timers
    scenario.receive(DONE["charge"])
    scenario.receive(DONE["points"])
    assert scenario.status == "completed"


def test_an_approval_past_its_sla_is_escalated_then_rejected_at_the_deadline() -> None:
    scenario = booked()
    scenario.expect_tasks("opened")
    scenario.fire("approval-sla:approve")
    [escalated] = scenario.expect_tasks("escalated")
    assert (escalated.assignee, escalated.by) == ("director", "coordinator")
    [told] = scenario.expect_published(TaskEscalated)
    assert (told.payload["from_assignee"], told.payload["to_assignee"]) == ("manager", "director")
    assert scenario.state.steps["approve"].assignee == "director"
    scenario.fire("approval-sla:approve")  # nobody after the director: it stays with them
    scenario.expect_tasks()
    assert scenario.state.steps["approve"].assignee == "director"
    scenario.fire("approval-deadline:approve")
    [rejected] = scenario.expect_tasks("rejected")
    assert (rejected.assignee, rejected.by) == ("director", "deadline")
    scenario.expect_published(TripRejected)
    assert scenario.status == "compensating"
    scenario.expect_commands(CancelHotel)  # latest completion first
    scenario.receive(HOTEL_CANCELLED)
    scenario.expect_commands(CancelFlight)
    scenario.receive(FLIGHT_CANCELLED)
    assert scenario.status == "compensated"


def test_advancing_the_clock_escalates_at_each_sla_and_rejects_at_the_deadline() -> None:
    scenario = booked()
    scenario.expect_tasks("opened")
    scenario.advance(APPROVAL.deadline)
    [escalated, rejected] = scenario.expect_tasks("escalated", "rejected")
    assert (escalated.assignee, rejected.by) == ("director", "deadline")
    assert scenario.status == "compensating"


def test_a_rejection_compensates_and_a_decision_on_a_closed_task_does_nothing() -> None:
    scenario = booked()
    scenario.reject("approve", by="manager", reason="too dear")
    assert scenario.status == "compensating"
    assert "too dear" in (scenario.state.reason or "")
    before = scenario.state
    assert not scenario.approve("approve", by="director").applied
    assert scenario.state.steps == before.steps, "closed: the late approval changes nothing"


def test_a_failed_branch_compensates_the_completed_one() -> None:
    scenario = requested()
    scenario.receive(DONE["hotel"])
    scenario.receive(FAILED["flight"])
    assert scenario.status == "compensating"
    scenario.expect_commands(CancelHotel)
    scenario.receive(HOTEL_CANCELLED)
    assert scenario.status == "compensated"


def test_a_branch_in_flight_is_waited_for_and_undone_when_it_completes_late() -> None:
    scenario = requested()
    scenario.receive(FAILED["flight"])
    assert scenario.status == "compensating"
    scenario.expect_commands()  # the hotel is still in flight
    scenario.receive(DONE["hotel"])  # completes after the failure
    scenario.expect_commands(CancelHotel)
    scenario.receive(HOTEL_CANCELLED)
    assert scenario.status == "compensated"


def test_a_branch_in_flight_that_never_answers_is_undone_at_its_timeout() -> None:
    scenario = requested()
    scenario.receive(FAILED["flight"])
    scenario.fire("step-timeout:hotel")
    assert scenario.step("hotel") == "compensating"
    scenario.expect_commands(CancelHotel)  # outcome unknown: undone


def test_a_failed_step_takes_its_alternative_before_compensating() -> None:
    scenario = requested()
    scenario.receive(DONE["flight"])
    scenario.receive(FAILED["hotel"])
    assert scenario.status == "running"
    [book] = scenario.expect_commands(BookHostel)
    assert (book.purpose, book.service, book.payload) == ("start", "hotels", {"trip_id": "t-1"})
    assert scenario.step("hostel") == "running"
    scenario.receive(DONE["hostel"])
    scenario.expect_published(TripBooked, TaskOpened)  # the alternative satisfies the join
    scenario.approve("approve", by="manager")
    scenario.receive(DONE["charge"])
    scenario.receive(DONE["points"])
    assert scenario.status == "completed"
    assert (scenario.step("hotel"), scenario.step("hostel")) == ("failed", "completed")


def test_branches_answering_before_the_request_is_read_are_joined_right_after_it() -> None:
    scenario = trip()
    # The branches answered before the coordinator read the trip request (another topic):
    # held, since only the request opens the saga, and decided right after it.
    assert scenario.receive(DONE["flight"]).hold
    assert scenario.receive(DONE["hotel"]).hold
    scenario.expect_published()  # no saga yet, no TripBooked
    scenario.receive(REQUEST)
    scenario.expect_published(TripBooked, TaskOpened)  # with the request's amount_cents
    assert scenario.step("approve") == "running"


def test_an_alternative_for_a_failure_read_before_the_request_is_sent_right_after_it() -> None:
    scenario = trip()
    # The hotel's failure was read before the trip request (another topic): BookHostel
    # needs the trip_id only the request carries.
    assert scenario.receive(FAILED["hotel"]).hold
    scenario.expect_commands()  # no saga yet, no BookHostel
    scenario.receive(REQUEST)
    scenario.expect_commands(BookHostel)
    hostel = scenario.state.steps["hostel"]
    assert hostel.data == {"trip_id": "t-1"} and not hostel.waiting_for_data
    assert (scenario.step("hotel"), scenario.step("hostel")) == ("failed", "running")
    assert "step-timeout:hostel" in scenario.timers
    assert scenario.step("flight") == "running"
    scenario.receive(DONE["flight"])
    scenario.receive(DONE["hostel"])
    scenario.expect_published(TripBooked, TaskOpened)


def test_failures_of_a_trip_never_requested_open_nothing_and_send_nothing() -> None:
    scenario = trip()
    for failure in (FAILED["hotel"], FAILED["flight"]):
        decision = scenario.receive(failure)
        assert (decision.hold, decision.state, decision.commands) == (True, None, [])
    assert scenario.timers == {} and scenario.tasks == []
    scenario.expect_commands()  # neither BookHostel nor a compensation
    scenario.expect_published()
    assert len(scenario.held) == 2, "kept for the request, should it come"


def test_when_the_alternative_fails_too_the_saga_compensates() -> None:
    scenario = requested()
    scenario.receive(DONE["flight"])
    scenario.receive(FAILED["hotel"])
    scenario.receive(FAILED["hostel"])
    assert scenario.status == "compensating"
    scenario.expect_commands(BookHostel, CancelFlight)


def test_an_optional_steps_failure_still_completes_the_saga() -> None:
    scenario = booked()
    scenario.approve("approve", by="manager")
    scenario.receive(DONE["charge"])
    scenario.receive(FAILED["points"])
    assert scenario.status == "completed"
    assert scenario.step("points") == "failed"
    # Points cannot be undone: the coordinator started it; nothing is undone.
    scenario.expect_commands(TravellerCharged)


def test_an_optional_step_that_times_out_does_not_fail_the_saga_either() -> None:
    scenario = booked()
    scenario.approve("approve", by="manager")
    scenario.receive(DONE["charge"])
    scenario.fire("step-timeout:points")
    assert scenario.status == "completed"
    scenario.expect_commands(TravellerCharged)


def test_a_saga_keeps_the_definition_version_it_started_with() -> None:
    scenario = trip(replace(TRIP_V1, version=7))
    scenario.receive(REQUEST)
    assert scenario.state.definition_version == 7


ORDER = OrderPlaced(order_id="o-1", customer_id="c", amount_cents=900)
RESERVED = InventoryReserved(order_id="o-1", sku="s", quantity=1, amount_cents=900)
CHARGED = PaymentCharged(order_id="o-1", amount_cents=900, charge_id="ch-1")


def test_in_orchestration_mode_the_coordinator_sends_each_step_its_trigger() -> None:
    scenario = SagaScenario(ORDER_SAGA, mode="orchestration", saga_id="o-1")
    scenario.receive(ORDER)
    [reserve] = scenario.expect_commands(OrderPlaced)
    assert (reserve.purpose, reserve.service) == ("start", "inventory")
    assert reserve.payload == ORDER.model_dump(mode="json")
    scenario.receive(RESERVED)
    [charge] = scenario.expect_commands(InventoryReserved)
    assert (charge.purpose, charge.service) == ("start", "payment")
    scenario.receive(PaymentFailed(error_type="CardDeclined"))
    [release] = scenario.expect_commands(ReleaseInventory)  # nothing more is started
    assert release.purpose == "compensate"
    assert scenario.status == "compensating"


def test_in_choreography_mode_the_coordinator_only_watches() -> None:
    scenario = SagaScenario(ORDER_SAGA, saga_id="o-1")
    scenario.receive(ORDER)
    scenario.receive(RESERVED)
    scenario.receive(CHARGED)
    scenario.expect_commands()
