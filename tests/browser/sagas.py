"""Saga definitions for the console's browser tests: the order saga with short timers
(parks quickly when payment is down) and the trip saga with an approval that waits."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from saga.definition.saga import Approval, SagaDefinition
from tests.integration.sagas import definitions as order_definitions
from tests.trips.sagas import TRIP_V1


def definitions() -> list[SagaDefinition]:
    steps = tuple(
        replace(
            s,
            approval=Approval(
                ("manager",), sla=timedelta(minutes=10), deadline=timedelta(minutes=20)
            ),
        )
        if s.approval is not None
        else s
        for s in TRIP_V1.steps
    )
    trip = replace(TRIP_V1, steps=steps, deadline=timedelta(minutes=30), search=("trip_id",))
    return [*order_definitions(), trip]
