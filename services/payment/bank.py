"""A stand-in for a card processor: idempotent by key, declines large amounts."""

from __future__ import annotations

import os
import uuid


class CardDeclined(Exception):
    """The bank refused the charge: retrying will not help."""


class Bank:
    """Charges are keyed by the caller's idempotency key, so a retried charge is one charge."""

    def __init__(self, decline_above_cents: int | None = None) -> None:
        limit = os.environ.get("PAYMENT_DECLINE_ABOVE_CENTS")
        self.decline_above_cents = decline_above_cents or (int(limit) if limit else 50_000)
        self.charges: dict[str, tuple[str, str, int]] = {}  # key -> (charge id, order, cents)
        self.refunded: set[str] = set()

    async def charge(self, idempotency_key: str, order_id: str, amount_cents: int) -> str:
        if amount_cents > self.decline_above_cents:
            raise CardDeclined(f"amount {amount_cents} over the card limit")
        if idempotency_key not in self.charges:
            self.charges[idempotency_key] = (f"ch_{uuid.uuid4().hex[:12]}", order_id, amount_cents)
        return self.charges[idempotency_key][0]

    async def refund(self, order_id: str) -> bool:
        """True if a charge for ``order_id`` was refunded now; False if none was due."""
        due = {key for key, (_, order, _) in self.charges.items() if order == order_id}
        fresh = due - self.refunded
        self.refunded |= fresh
        return bool(fresh)
