"""Contracts of the orders service: the event that opens an order saga, and the one that
cancels it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from saga import CancelRequested, Event, Upcaster


def _order_placed_v1_to_v2(v1: dict[str, Any]) -> dict[str, Any]:
    # Version 1 carried ``amount`` in whole units and no currency.
    v2 = {k: v for k, v in v1.items() if k != "amount"}
    v2["amount_cents"] = int(v1["amount"]) * 100
    v2.setdefault("currency", "EUR")
    return v2


class OrderPlaced(Event):
    """A customer placed an order; this starts an order saga (saga id = order id)."""

    message_type: ClassVar[str] = "orders.OrderPlaced"
    schema_version: ClassVar[int] = 2
    upcasters: ClassVar[Mapping[int, Upcaster]] = {1: _order_placed_v1_to_v2}

    order_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    amount_cents: int = Field(gt=0)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    sku: str = Field(default="sku-1", min_length=1)
    quantity: int = Field(default=1, gt=0)
    #: Pay from the customer's bank account: the handle of their bank connection in
    #: the payment service's vault (never the token itself). None: pay by card.
    payment_connection: str | None = Field(default=None, min_length=1, max_length=100)


class OrderCancelled(CancelRequested):
    """The customer cancels their order: its saga is compensated, unless it got so far
    that it only goes forward (the confirmation is on its way)."""

    message_type: ClassVar[str] = "orders.OrderCancelled"

    order_id: str = Field(min_length=1)
