"""A stand-in for a card processor: idempotent by key, declines large amounts."""

from __future__ import annotations

import os
import uuid


class CardDeclined(Exception):
    """The bank refused the charge: retrying will not help."""


class Bank:
    """Charges are keyed by the caller's idempotency key, so a retried charge is one charge.

    It remembers the latest ``remember`` charges (a retry comes within seconds),
    so that a long-running service does not grow with every order it took.
    """

    def __init__(self, decline_above_cents: int | None = None, *, remember: int = 10_000) -> None:
        limit = os.environ.get("PAYMENT_DECLINE_ABOVE_CENTS")
        self.decline_above_cents = decline_above_cents or (int(limit) if limit else 50_000)
        self.remember = remember
        # key -> (charge id, order, cents, refunded), oldest first
        self._charges: dict[str, tuple[str, str, int, bool]] = {}
        self._by_order: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._charges)

    async def charge(self, idempotency_key: str, order_id: str, amount_cents: int) -> str:
        if amount_cents > self.decline_above_cents:
            raise CardDeclined(f"amount {amount_cents} over the card limit")
        if idempotency_key not in self._charges:
            charge_id = f"ch_{uuid.uuid4().hex[:12]}"
            self._charges[idempotency_key] = (charge_id, order_id, amount_cents, False)
            self._by_order.setdefault(order_id, set()).add(idempotency_key)
            while len(self._charges) > self.remember:
                self._forget(next(iter(self._charges)))
        return self._charges[idempotency_key][0]

    async def refund(self, order_id: str) -> bool:
        """True if a charge for ``order_id`` was refunded now; False if none was due."""
        fresh = False
        for key in self._by_order.get(order_id, ()):
            charge_id, order, cents, refunded = self._charges[key]
            if not refunded:
                self._charges[key] = (charge_id, order, cents, True)
                fresh = True
        return fresh

    def _forget(self, key: str) -> None:
        _, order, _, _ = self._charges.pop(key)
        keys = self._by_order[order]
        keys.discard(key)
        if not keys:
            del self._by_order[order]
