"""The test kits of ``saga.testing`` themselves: the scenario's clock and expectations, the
in-memory system's routing and timers (services without a store), the pytest plugin."""

from __future__ import annotations

import doctest
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType

import pytest

import saga.messages.codec
import saga.testing.scenario
import saga.testing.system
from contracts.inventory import InventoryReserved, ReleaseInventory
from contracts.order_saga import ORDER_SAGA
from contracts.orders import OrderPlaced
from contracts.payment import PaymentFailed
from saga import CompensationFailed, Service, StepContext, StepFailure
from saga.coordinator.orphans import ORPHAN_HOLD
from saga.settings import Settings
from saga.testing import InMemorySagaSystem, SagaScenario
from tests.trips.messages import (
    POINTS,
    BookHostel,
    CancelFlight,
    CancelHostel,
    CancelHotel,
    ChargeFailed,
    FlightBooked,
    FlightCancelled,
    FlightFailed,
    HostelBooked,
    HostelCancelled,
    HostelFailed,
    HotelBooked,
    HotelCancelled,
    HotelFailed,
    PointsAwarded,
    RefundTraveller,
    TravellerCharged,
    TravellerRefunded,
    TripApproved,
    TripRequested,
)
from tests.trips.sagas import TRIP_V1

pytest_plugins = ["pytester"]

ORDER = OrderPlaced(order_id="o-1", customer_id="c", amount_cents=900)
RESERVED = InventoryReserved(order_id="o-1", sku="s", quantity=1, amount_cents=900)


def declined() -> SagaScenario:
    """Stock reserved, payment declined: the release is sent."""
    scenario = SagaScenario(ORDER_SAGA, saga_id="o-1")
    scenario.receive(ORDER)
    scenario.receive(RESERVED)
    scenario.receive(PaymentFailed(error_type="CardDeclined"))
    return scenario


# --- SagaScenario ------------------------------------------------------------------------


@pytest.mark.parametrize("module", [saga.testing.scenario, saga.testing.system])
def test_the_docstring_examples_run(module: ModuleType) -> None:
    result = doctest.testmod(module, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_the_clock_stands_still_until_a_timer_fires_or_time_advances() -> None:
    start = datetime(2030, 5, 1, 9, 0, tzinfo=UTC)
    scenario = SagaScenario(ORDER_SAGA, saga_id="o-1", start=start)
    scenario.receive(ORDER)
    scenario.receive(RESERVED)
    assert scenario.now == start
    assert scenario.timers == {
        "deadline": start + timedelta(minutes=10),
        "step-timeout:charge": start + timedelta(seconds=30),
    }
    scenario.fire("step-timeout:charge")
    assert scenario.now == start + timedelta(seconds=30), "firing moved the clock to its due time"
    scenario.advance(timedelta(minutes=5))
    assert scenario.now == start + timedelta(minutes=5, seconds=30)


def test_fire_refuses_a_timer_that_is_not_pending_unless_told_it_is_late() -> None:
    scenario = declined()
    with pytest.raises(AssertionError, match=r"'step-timeout:charge' is not pending"):
        scenario.fire("step-timeout:charge")
    assert not scenario.fire("step-timeout:charge", late=True).applied


def test_advance_fires_what_falls_due_in_order_including_timers_the_firings_set() -> None:
    scenario = declined()
    scenario.expect_commands(ReleaseInventory)
    # No confirmation within the reply timeout (10 s): a retry is set 2 s after that.
    fired = scenario.advance(timedelta(seconds=12))
    assert len(fired) == 2
    assert [t.name for t in scenario.timers_set[-2:]] == [
        "compensation-retry:reserve",  # set by the first firing, fired by the same call
        "compensation-timeout:reserve",  # set by the retry
    ]
    [again] = scenario.expect_commands(ReleaseInventory)
    assert again.attempt == 2
    assert scenario.advance(timedelta(0)) == []


def test_time_does_not_go_back() -> None:
    with pytest.raises(ValueError, match="back"):
        declined().advance(timedelta(seconds=-1))


def test_expectations_look_at_what_happened_since_the_previous_check() -> None:
    scenario = declined()
    [release] = scenario.expect_commands("inventory.ReleaseInventory")
    assert release.payload == {"order_id": "o-1"}
    scenario.expect_commands()
    scenario.receive(
        CompensationFailed(command_type=release.message_type, error_type="E", attempts=1),
        service="inventory",
    )
    scenario.fire("compensation-retry:reserve")
    scenario.expect_commands(ReleaseInventory)
    assert [c.attempt for c in scenario.commands] == [1, 2], "everything, for plain asserts"


def test_a_failed_expectation_says_what_happened_and_why() -> None:
    scenario = declined()
    with pytest.raises(AssertionError) as failed:
        scenario.expect_commands("payment.RefundPayment")
    message = str(failed.value)
    assert "expected commands ['payment.RefundPayment'] since the last check" in message
    assert "got ['inventory.ReleaseInventory']" in message
    assert "charge failed: CardDeclined" in message, "the decisions' notes"


def test_a_saga_not_opened_yet_has_no_state() -> None:
    scenario = SagaScenario(ORDER_SAGA)
    with pytest.raises(AssertionError, match="no saga 'saga-1' yet"):
        _ = scenario.status
    assert not scenario.fire("deadline", late=True).applied, "a timer opens no saga"
    assert scenario.notes == ["deadline: no such saga"]


def test_the_shared_failure_events_are_attributed_by_the_service_given() -> None:
    scenario = SagaScenario(ORDER_SAGA, saga_id="o-1")
    scenario.receive(ORDER)
    scenario.receive(RESERVED)
    failure = PaymentFailed(error_type="X")
    scenario.receive(failure, service="payment", step="charge", attempt=3)
    assert scenario.state.steps["charge"].attempt == 3


# --- InMemorySagaSystem, services without a store ----------------------------------------


@dataclass
class Trips:
    """The trip saga's services, in memory: ``fail`` and ``silent`` name steps that fail
    or never answer; what each did is in ``done``."""

    fail: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    done: list[str] = field(default_factory=list)

    def services(self) -> list[Service]:
        flights, hotels = Service("flights"), Service("hotels")
        billing, loyalty = Service("billing"), Service("loyalty")

        def act(step: str) -> bool:
            if step in self.fail:
                raise StepFailure(f"no {step}", error_type="Unavailable")
            self.done.append(step)
            return step not in self.silent

        @flights.on(TripRequested, step="flight", fails_with=FlightFailed)
        async def flight(trip: TripRequested, ctx: StepContext) -> FlightBooked | None:
            return FlightBooked(trip_id=trip.trip_id, flight_ref="f") if act("flight") else None

        @flights.compensate(CancelFlight)
        async def cancel_flight(command: CancelFlight, ctx: StepContext) -> FlightCancelled:
            self.done.append("cancel flight")
            return FlightCancelled(trip_id=command.trip_id, cancelled=True)

        @hotels.on(TripRequested, step="hotel", fails_with=HotelFailed)
        async def hotel(trip: TripRequested, ctx: StepContext) -> HotelBooked | None:
            return HotelBooked(trip_id=trip.trip_id, hotel_ref="h") if act("hotel") else None

        @hotels.compensate(CancelHotel)
        async def cancel_hotel(command: CancelHotel, ctx: StepContext) -> HotelCancelled:
            self.done.append("cancel hotel")
            return HotelCancelled(trip_id=command.trip_id, cancelled=True)

        @hotels.on(BookHostel, step="hostel", fails_with=HostelFailed)
        async def hostel(command: BookHostel, ctx: StepContext) -> HostelBooked | None:
            return HostelBooked(trip_id=command.trip_id, hotel_ref="y") if act("hostel") else None

        @hotels.compensate(CancelHostel)
        async def cancel_hostel(command: CancelHostel, ctx: StepContext) -> HostelCancelled:
            self.done.append("cancel hostel")
            return HostelCancelled(trip_id=command.trip_id, cancelled=True)

        @billing.on(TripApproved, step="charge", fails_with=ChargeFailed)
        async def charge(approved: TripApproved, ctx: StepContext) -> TravellerCharged | None:
            if not act("charge"):
                return None
            return TravellerCharged(trip_id=approved.trip_id, amount_cents=approved.amount_cents)

        @billing.compensate(RefundTraveller)
        async def refund(command: RefundTraveller, ctx: StepContext) -> TravellerRefunded:
            self.done.append("refund")
            return TravellerRefunded(trip_id=command.trip_id)

        @loyalty.step(POINTS, name="points")
        async def points(charged: TravellerCharged, ctx: StepContext) -> PointsAwarded | None:
            return PointsAwarded(trip_id=charged.trip_id, points=5) if act("points") else None

        return [flights, hotels, billing, loyalty]


async def test_a_saga_runs_through_the_services_own_handlers_to_its_end() -> None:
    trips = Trips(fail={"hotel"})
    system = InMemorySagaSystem(TRIP_V1, trips.services())
    await system.start_saga(TripRequested(trip_id="t-1", amount_cents=700), saga_id="t-1")
    delivered = await system.run_until_quiet()
    assert delivered == len(system.messages())
    assert system.state("t-1").steps["approve"].status == "running"
    await system.operate("t-1", "approve:approve", actor="manager")
    await system.run_until_quiet()
    assert system.state("t-1").status == "completed"
    assert sorted(trips.done) == ["charge", "flight", "hostel", "points"]
    assert [e.type for e in system.messages("t-1")][-3:] == [
        "billing.TravellerCharged",
        "loyalty.PointsAwarded",
        "saga.SagaFinished",
    ]
    [charged] = [e for e in system.kit("billing").emitted()]
    assert charged.payload == TravellerCharged(trip_id="t-1", amount_cents=700)


async def test_a_step_that_never_answers_is_undone_when_the_clock_passes_its_timeout() -> None:
    trips = Trips(silent={"hotel"})
    system = InMemorySagaSystem(TRIP_V1, trips.services())
    await system.start_saga(TripRequested(trip_id="t-1"), saga_id="t-1")
    await system.run_until_quiet()
    assert set(system.timers("t-1")) == {"deadline", "step-timeout:hotel"}
    assert await system.advance(timedelta(seconds=14)) == 0
    assert system.state("t-1").status == "running"
    assert await system.advance(timedelta(seconds=1)) == 1
    assert system.state("t-1").status == "compensated"
    # Latest first: the hotel (its outcome unknown: undone too), then the flight.
    assert trips.done[-2:] == ["cancel hotel", "cancel flight"]


async def test_in_orchestration_mode_services_hear_of_their_steps_from_the_coordinator() -> None:
    trips = Trips()
    system = InMemorySagaSystem(TRIP_V1, trips.services(), mode="orchestration")
    await system.start_saga(TripRequested(trip_id="t-1"), saga_id="t-1")
    await system.run_until_quiet()
    started = [e for e in system.messages("t-1") if e.source == "/coordinator"]
    assert [(e.type, e.step) for e in started][:2] == [
        ("trips.TripRequested", "flight"),
        ("trips.TripRequested", "hotel"),
    ]
    await system.operate("t-1", "approve:approve", actor="manager")
    await system.run_until_quiet()
    assert system.state("t-1").status == "completed"


async def test_a_redelivered_event_is_decided_once() -> None:
    trips = Trips(silent={"flight", "hotel"})
    system = InMemorySagaSystem(TRIP_V1, trips.services())
    envelope = await system.start_saga(TripRequested(trip_id="t-1"), saga_id="t-1")
    await system.run_until_quiet()
    decided = len(system.decisions)
    system.transport.publish("trips.events", saga.messages.codec.encode(envelope))
    await system.run_until_quiet()
    assert len(system.decisions) == decided


async def test_the_system_names_what_it_cannot_do() -> None:
    system = InMemorySagaSystem(ORDER_SAGA, database_url="postgresql://nowhere/none")
    with pytest.raises(RuntimeError, match="async with"):
        await system.start_saga(ORDER, saga_id="o-1")
    system = InMemorySagaSystem(ORDER_SAGA)
    with pytest.raises(ValueError, match="starts no saga"):
        await system.start_saga(RESERVED, saga_id="o-1")
    with pytest.raises(KeyError, match="no saga 'o-1'"):
        system.state("o-1")


async def test_a_stray_event_opens_no_saga_and_is_an_orphan_after_its_hold() -> None:
    system = InMemorySagaSystem(ORDER_SAGA, orphan_hold=timedelta(seconds=60))
    stray = await system.publish(RESERVED, saga_id="o-1", saga_type="order")
    await system.run_until_quiet()
    with pytest.raises(KeyError, match="no saga 'o-1'"):
        system.state("o-1")
    [(_, decision)] = system.decisions
    assert (decision.hold, decision.state, decision.commands) == (True, None, [])
    await system.advance(timedelta(seconds=59))
    assert system.orphans() == [], "still waiting for its start event"
    await system.advance(timedelta(seconds=1))
    assert [e.id for e in system.orphans()] == [stray.id]
    assert system.timers("o-1") == {} and system.messages("o-1") == [stray]
    with pytest.raises(KeyError, match="no saga 'o-1'"):
        system.state("o-1")


async def test_an_event_read_before_its_start_event_is_decided_right_after_it() -> None:
    system = InMemorySagaSystem(ORDER_SAGA)
    await system.publish(RESERVED, saga_id="o-1", saga_type="order")
    await system.run_until_quiet()
    await system.start_saga(ORDER, saga_id="o-1")
    await system.run_until_quiet()
    state = system.state("o-1")
    assert (state.steps["reserve"].status, state.steps["charge"].status) == (
        "completed",
        "running",
    )
    assert [i.type for i, _ in system.decisions] == [
        "inventory.InventoryReserved",  # held
        "orders.OrderPlaced",
        "inventory.InventoryReserved",  # decided right after the order
    ]
    await system.advance(timedelta(minutes=10))
    assert system.orphans() == []


def test_the_in_memory_hold_is_the_coordinators_default() -> None:
    assert timedelta(milliseconds=Settings().orphan_hold_ms) == ORPHAN_HOLD


# --- the pytest plugin ---------------------------------------------------------------------


def test_the_plugin_gives_the_database_url_it_is_told(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        def test_url(saga_database_url, pytestconfig):
            assert pytestconfig.pluginmanager.has_plugin("saga")
            assert saga_database_url == "postgresql://db.example/tests"
        """
    )
    monkeypatch.setenv("SAGA_TEST_DATABASE_URL", "postgresql://other.example/tests")
    given = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--saga-database-url=postgresql://db.example/tests"
    )
    given.assert_outcomes(passed=1)
    monkeypatch.setenv("SAGA_TEST_DATABASE_URL", "postgresql://db.example/tests")
    from_environment = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    from_environment.assert_outcomes(passed=1)
