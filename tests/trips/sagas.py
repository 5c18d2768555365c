"""The trip saga, version 1 and version 2 (a different approver): for the flow tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from saga.definition.saga import Approval, Join, SagaDefinition, StepDefinition
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
    TripBooked,
    TripRejected,
    TripRequested,
)

SECONDS = timedelta(seconds=1)

TRIP_V1 = SagaDefinition(
    name="trip",
    description="flight and hotel at once, a manager approves, charge, loyalty points",
    starts_with=TripRequested,
    ends_with=PointsAwarded,
    deadline=timedelta(minutes=5),
    joins=(Join(TripBooked, after=("flight", "hotel")),),
    steps=(
        StepDefinition(
            name="flight",
            service="flights",
            started_by=(TripRequested,),
            completed_by=(FlightBooked,),
            failed_by=(FlightFailed,),
            compensation=CancelFlight,
            compensated_by=(FlightCancelled,),
            reply_timeout=15 * SECONDS,
        ),
        StepDefinition(
            name="hotel",
            service="hotels",
            started_by=(TripRequested,),
            completed_by=(HotelBooked,),
            failed_by=(HotelFailed,),
            compensation=CancelHotel,
            compensated_by=(HotelCancelled,),
            reply_timeout=15 * SECONDS,
            alternative="hostel",
        ),
        StepDefinition(
            name="hostel",
            service="hotels",
            started_by=(BookHostel,),
            completed_by=(HostelBooked,),
            failed_by=(HostelFailed,),
            compensation=CancelHostel,
            compensated_by=(HostelCancelled,),
            reply_timeout=15 * SECONDS,
        ),
        StepDefinition(
            name="approve",
            service="saga",
            started_by=(TripBooked,),
            completed_by=(TripApproved,),
            failed_by=(TripRejected,),
            approval=Approval(("manager", "director"), sla=3 * SECONDS, deadline=20 * SECONDS),
        ),
        StepDefinition(
            name="charge",
            service="billing",
            started_by=(TripApproved,),
            completed_by=(TravellerCharged,),
            failed_by=(ChargeFailed,),
            compensation=RefundTraveller,
            compensated_by=(TravellerRefunded,),
            reply_timeout=15 * SECONDS,
        ),
        StepDefinition(
            "points",
            POINTS,
            optional=True,
            reply_timeout=15 * SECONDS,
        ),
    ),
)

#: Version 2: trips are approved by the CEO alone.
TRIP_V2 = replace(
    TRIP_V1,
    version=2,
    steps=tuple(
        replace(s, approval=Approval(("ceo",), sla=3 * SECONDS, deadline=20 * SECONDS))
        if s.approval is not None
        else s
        for s in TRIP_V1.steps
    ),
)


def v1() -> list[SagaDefinition]:
    return [TRIP_V1]


def both() -> list[SagaDefinition]:
    return [TRIP_V1, TRIP_V2]
