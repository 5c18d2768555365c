"""Messages of a test saga with parallel branches, an alternative, an approval and an
optional step: book a flight and a hotel at once (a hostel if no hotel), have a manager
approve, charge the traveller, award loyalty points (optional)."""

from __future__ import annotations

from typing import ClassVar

from saga.definition.contract import StepContract
from saga.messages.base import Command, Event
from saga.messages.lifecycle import TaskApproved, TaskRejected
from saga.messages.steps import StepFailed


class TripRequested(Event):
    message_type: ClassVar[str] = "trips.TripRequested"
    trip_id: str
    amount_cents: int = 10_000


class FlightBooked(Event):
    message_type: ClassVar[str] = "flights.FlightBooked"
    trip_id: str
    flight_ref: str


class FlightFailed(StepFailed):
    message_type: ClassVar[str] = "flights.FlightFailed"


class CancelFlight(Command):
    message_type: ClassVar[str] = "flights.CancelFlight"
    trip_id: str


class FlightCancelled(Event):
    message_type: ClassVar[str] = "flights.FlightCancelled"
    trip_id: str
    cancelled: bool


class HotelBooked(Event):
    message_type: ClassVar[str] = "hotels.HotelBooked"
    trip_id: str
    hotel_ref: str


class HotelFailed(StepFailed):
    message_type: ClassVar[str] = "hotels.HotelFailed"


class CancelHotel(Command):
    message_type: ClassVar[str] = "hotels.CancelHotel"
    trip_id: str


class HotelCancelled(Event):
    message_type: ClassVar[str] = "hotels.HotelCancelled"
    trip_id: str
    cancelled: bool


class BookHostel(Command):
    """The alternative when no hotel can be booked: sent by the coordinator."""

    message_type: ClassVar[str] = "hotels.BookHostel"
    trip_id: str


class HostelBooked(Event):
    message_type: ClassVar[str] = "hotels.HostelBooked"
    trip_id: str
    hotel_ref: str


class HostelFailed(StepFailed):
    message_type: ClassVar[str] = "hotels.HostelFailed"


class CancelHostel(Command):
    message_type: ClassVar[str] = "hotels.CancelHostel"
    trip_id: str


class HostelCancelled(Event):
    message_type: ClassVar[str] = "hotels.HostelCancelled"
    trip_id: str
    cancelled: bool


class TripBooked(Event):
    """The join: flight and a bed are booked (published by the coordinator)."""

    message_type: ClassVar[str] = "saga.TripBooked"
    trip_id: str
    amount_cents: int


class TripApproved(TaskApproved):
    message_type: ClassVar[str] = "saga.TripApproved"
    trip_id: str
    amount_cents: int


class TripRejected(TaskRejected):
    message_type: ClassVar[str] = "saga.TripRejected"
    trip_id: str


class TravellerCharged(Event):
    message_type: ClassVar[str] = "billing.TravellerCharged"
    trip_id: str
    amount_cents: int


class ChargeFailed(StepFailed):
    message_type: ClassVar[str] = "billing.ChargeFailed"


class RefundTraveller(Command):
    message_type: ClassVar[str] = "billing.RefundTraveller"
    trip_id: str


class TravellerRefunded(Event):
    message_type: ClassVar[str] = "billing.TravellerRefunded"
    trip_id: str


class PointsAwarded(Event):
    message_type: ClassVar[str] = "loyalty.PointsAwarded"
    trip_id: str
    points: int


class PointsFailed(StepFailed):
    message_type: ClassVar[str] = "loyalty.PointsFailed"


#: Points once awarded stay awarded: the trip's pivot, started on the coordinator's go.
POINTS = StepContract(trigger=TravellerCharged, completion=PointsAwarded, failure=PointsFailed)
