"""The README's tutorial service (services/shipping) ships, fails and compensates."""

from __future__ import annotations

import uuid

from contracts.payment import PaymentCharged
from contracts.shipping import CancelShipment, OrderShipped, ShipmentCancelled, ShippingFailed
from saga.testing import ServiceTestKit
from services.shipping import service
from tests.conftest import Infra


async def test_tutorial_service_ships_fails_and_compensates(infra: Infra) -> None:
    order, nowhere = f"o-{uuid.uuid4().hex[:8]}", f"nowhere-{uuid.uuid4().hex[:8]}"
    async with ServiceTestKit(service, database_url=infra.database_url) as kit:
        charged = PaymentCharged(order_id=order, amount_cents=900, charge_id="c")
        assert (await kit.send(charged, saga_id=order)).kind == "completed"
        refused = PaymentCharged(order_id=nowhere, amount_cents=900, charge_id="c")
        assert (await kit.send(refused, saga_id=nowhere)).kind == "failed"
        for _ in range(2):  # undoing twice undoes once
            outcome = await kit.send(CancelShipment(order_id=order), saga_id=order)
            assert outcome.kind == "completed"
        payloads = [e.payload for e in kit.emitted()]
    assert isinstance(payloads[0], OrderShipped)
    assert payloads[1] == ShippingFailed(
        error_type="NoCarrier", error_message="no carrier for this address", attempts=1
    )
    assert payloads[2:] == [
        ShipmentCancelled(order_id=order, cancelled=True),
        ShipmentCancelled(order_id=order, cancelled=False),
    ]
