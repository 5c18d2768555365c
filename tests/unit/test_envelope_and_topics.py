"""Envelope invariants, causation, and topic naming."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from contracts.inventory import InventoryReserved
from contracts.orders import OrderPlaced
from saga.messages.envelope import Envelope
from saga.messages.topics import commands_topic, dead_letter_topic, events_topic, validate_topic

PLACED = OrderPlaced(order_id="o-1", customer_id="c-1", amount_cents=5)


def test_new_envelope_gets_a_uuid_an_aware_time_and_attempt_one() -> None:
    envelope = Envelope(payload=PLACED, saga_id="o-1", source="/orders")
    assert uuid.UUID(envelope.id).version == 4
    assert envelope.time.tzinfo is not None
    assert envelope.attempt == 1
    assert (envelope.type, envelope.schema_version) == ("orders.OrderPlaced", 2)


@pytest.mark.parametrize(
    "changes",
    [{"saga_id": ""}, {"source": ""}, {"attempt": 0}, {"time": datetime(2026, 1, 1)}],
)
def test_invalid_envelopes_are_refused(changes: dict[str, object]) -> None:
    kwargs: dict[str, object] = {
        "payload": PLACED,
        "saga_id": "o-1",
        "source": "/orders",
        **changes,
    }
    with pytest.raises(ValueError):  # noqa: PT011
        Envelope(**kwargs)  # type: ignore[arg-type,type-var]


def test_caused_message_keeps_saga_and_trace_and_points_at_its_cause() -> None:
    placed = Envelope(
        payload=PLACED,
        saga_id="o-1",
        source="/orders",
        saga_type="order",
        step="place",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    confirmed = placed.caused(
        InventoryReserved(order_id="o-1", sku="s", quantity=1, amount_cents=5),
        source="/services/inventory",
        step="confirm",
    )
    assert confirmed.saga_id == "o-1"
    assert confirmed.saga_type == "order"
    assert confirmed.causation_id == placed.id
    assert confirmed.id != placed.id
    assert confirmed.step == "confirm"
    assert confirmed.traceparent == placed.traceparent
    assert confirmed.attempt == 1


def test_topic_names_are_derived_in_one_place() -> None:
    assert events_topic("inventory") == "inventory.events"
    assert commands_topic("inventory") == "inventory.commands"
    assert dead_letter_topic("inventory.events") == "inventory.events.dlq"
    assert dead_letter_topic("inventory.events.dlq") == "inventory.events.dlq.dlq"


@pytest.mark.parametrize("name", ["", "has space", "x" * 250, "..", "ünïcode"])
def test_illegal_topic_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid topic name"):
        validate_topic(name)
