"""The README's tutorial service is the real file, is short, and works."""

from __future__ import annotations

import re
from pathlib import Path

from contracts.payment import PaymentCharged
from contracts.shipping import CancelShipment, OrderShipped, ShipmentCancelled, ShippingFailed
from saga.testing import ServiceTestKit
from services.shipping import service

ROOT = Path(__file__).resolve().parents[2]


def tutorial_code() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Tutorial", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_tutorial_is_the_shipping_service_and_under_30_lines() -> None:
    code = tutorial_code()
    assert code == (ROOT / "services" / "shipping" / "service.py").read_text()
    assert len(code.splitlines()) < 30


async def test_tutorial_service_ships_fails_and_compensates() -> None:
    kit = ServiceTestKit(service)
    charged = PaymentCharged(order_id="o-1", amount_cents=900, charge_id="c")
    assert (await kit.send(charged, saga_id="o-1")).kind == "completed"
    nowhere = PaymentCharged(order_id="nowhere-2", amount_cents=900, charge_id="c")
    assert (await kit.send(nowhere, saga_id="nowhere-2")).kind == "failed"
    assert (await kit.send(CancelShipment(order_id="o-1"), saga_id="o-1")).kind == "completed"
    assert (await kit.send(CancelShipment(order_id="o-1"), saga_id="o-1")).kind == "completed"
    payloads = [e.payload for e in kit.emitted()]
    assert isinstance(payloads[0], OrderShipped)
    assert payloads[1] == ShippingFailed(
        error_type="NoCarrier", error_message="no carrier for this address", attempts=1
    )
    assert payloads[2:] == [
        ShipmentCancelled(order_id="o-1", cancelled=True),
        ShipmentCancelled(order_id="o-1", cancelled=False),
    ]
