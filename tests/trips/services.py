"""The trip saga's step services; ``python -m tests.trips.services NAME`` runs one.

What a step does is read from the trip id, so a test scripts each saga:
``fail-<step>`` fails that step, ``slow-<step>`` makes it answer after 4 s.
Every booking is a row of ``trip_bookings``; a compensation marks it cancelled.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from saga import run_service
from saga.participant.service import Service, StepContext, StepFailure
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS trip_bookings (
    trip_id text NOT NULL,
    kind text NOT NULL,
    ref text NOT NULL,
    cancelled boolean NOT NULL DEFAULT false,
    PRIMARY KEY (trip_id, kind)
)"""

flights = Service("flights", store="postgres", schema=(SCHEMA,))
hotels = Service("hotels", store="postgres", schema=(SCHEMA,))
billing = Service("billing", store="postgres", schema=(SCHEMA,))
loyalty = Service("loyalty", store="postgres", schema=(SCHEMA,))
SERVICES = {s.name: s for s in (flights, hotels, billing, loyalty)}


async def book(ctx: StepContext, trip_id: str, kind: str) -> str:
    """Do step ``kind`` of ``trip_id`` as its id says: fail, answer slowly, or book."""
    flags = trip_id.split(".")
    if f"slow-{kind}" in flags:
        await asyncio.sleep(4)
    if f"fail-{kind}" in flags:
        raise StepFailure(f"no {kind} for {trip_id}", error_type="Unavailable")
    ref = f"{kind}-{uuid.uuid4().hex[:6]}"
    await ctx.db.execute(
        "INSERT INTO trip_bookings (trip_id, kind, ref) VALUES ($1, $2, $3)", trip_id, kind, ref
    )
    return ref


async def cancel(ctx: StepContext, trip_id: str, kind: str) -> bool:
    status: str = await ctx.db.execute(
        "UPDATE trip_bookings SET cancelled = true WHERE trip_id = $1 AND kind = $2"
        " AND NOT cancelled",
        trip_id,
        kind,
    )
    return status != "UPDATE 0"


@flights.on(TripRequested, step="flight", fails_with=FlightFailed)
async def book_flight(trip: TripRequested, ctx: StepContext) -> FlightBooked:
    return FlightBooked(trip_id=trip.trip_id, flight_ref=await book(ctx, trip.trip_id, "flight"))


@flights.compensate(CancelFlight)
async def cancel_flight(command: CancelFlight, ctx: StepContext) -> FlightCancelled:
    done = await cancel(ctx, command.trip_id, "flight")
    return FlightCancelled(trip_id=command.trip_id, cancelled=done)


@hotels.on(TripRequested, step="hotel", fails_with=HotelFailed)
async def book_hotel(trip: TripRequested, ctx: StepContext) -> HotelBooked:
    return HotelBooked(trip_id=trip.trip_id, hotel_ref=await book(ctx, trip.trip_id, "hotel"))


@hotels.compensate(CancelHotel)
async def cancel_hotel(command: CancelHotel, ctx: StepContext) -> HotelCancelled:
    done = await cancel(ctx, command.trip_id, "hotel")
    return HotelCancelled(trip_id=command.trip_id, cancelled=done)


@hotels.on(BookHostel, step="hostel", fails_with=HostelFailed)
async def book_hostel(command: BookHostel, ctx: StepContext) -> HostelBooked:
    ref = await book(ctx, command.trip_id, "hostel")
    return HostelBooked(trip_id=command.trip_id, hotel_ref=ref)


@hotels.compensate(CancelHostel)
async def cancel_hostel(command: CancelHostel, ctx: StepContext) -> HostelCancelled:
    done = await cancel(ctx, command.trip_id, "hostel")
    return HostelCancelled(trip_id=command.trip_id, cancelled=done)


@billing.on(TripApproved, step="charge", fails_with=ChargeFailed)
async def charge(approved: TripApproved, ctx: StepContext) -> TravellerCharged:
    await book(ctx, approved.trip_id, "charge")
    return TravellerCharged(trip_id=approved.trip_id, amount_cents=approved.amount_cents)


@billing.compensate(RefundTraveller)
async def refund(command: RefundTraveller, ctx: StepContext) -> TravellerRefunded:
    await cancel(ctx, command.trip_id, "charge")
    return TravellerRefunded(trip_id=command.trip_id)


@loyalty.step(POINTS, name="points")
async def award(charged: TravellerCharged, ctx: StepContext) -> PointsAwarded:
    await book(ctx, charged.trip_id, "points")
    return PointsAwarded(trip_id=charged.trip_id, points=charged.amount_cents // 100)


if __name__ == "__main__":
    raise SystemExit(run_service(SERVICES[sys.argv[1]]))
